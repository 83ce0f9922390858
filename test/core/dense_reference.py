# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""transformers' own processors, models and post-processing, run in a process of its own.

Tipsv2DptImageProcessor, DepthProImageProcessor and PromptDepthAnythingImageProcessor exist
only with transformers' torchvision backend, and torchvision is no dependency of dpt_ros:
test_dense_parity.py runs this file with a scratch torchvision on PYTHONPATH, so nothing of
it reaches the test process. Usage: python dense_reference.py CHECKPOINT IN.npz OUT.npz.
IN holds images (rgb_0, rgb_1, ...: (H, W, 3) uint8) and, per family, fx_i (focal lengths
in pixels, Depth Pro) or prompt_i ((h, w) uint16 millimetres, Prompt Depth Anything).
"""

import json
import math
from pathlib import Path
import sys

import numpy as np
import torch
import transformers


def main(ckpt: str, src: str, dst: str) -> None:
    config = json.loads((Path(ckpt) / 'config.json').read_text())
    kind = config['model_type']
    arch = config['architectures'][0]
    proc = transformers.AutoImageProcessor.from_pretrained(ckpt)
    model = getattr(transformers, arch).from_pretrained(ckpt, use_safetensors=True).eval()
    data = np.load(src)
    out = {'processor': np.array(type(proc).__name__)}
    i = 0
    while f'rgb_{i}' in data:
        rgb = data[f'rgb_{i}']
        size = [tuple(rgb.shape[:2])]
        extra = {}
        if kind == 'prompt_depth_anything':
            extra['prompt_depth'] = data[f'prompt_{i}']
        inputs = proc(images=rgb, return_tensors='pt', **extra)
        out[f'pixel_values_{i}'] = inputs['pixel_values'].numpy()
        if 'prompt_depth' in inputs:
            out[f'prompt_depth_{i}'] = inputs['prompt_depth'].numpy()
        with torch.no_grad():
            res = model(**inputs)
        if kind == 'tipsv2_dpt':
            out[f'depth_{i}'] = proc.post_process_depth_estimation(
                res, target_sizes=size)[0]['predicted_depth'].numpy()
            out[f'normals_{i}'] = proc.post_process_normal_estimation(
                res, target_sizes=size)[0]['normals'].numpy()
            out[f'labels_{i}'] = proc.post_process_semantic_segmentation(
                res, target_sizes=size)[0].numpy()
        elif kind == 'depth_pro':
            out[f'fov_{i}'] = res.field_of_view.numpy()
            post = proc.post_process_depth_estimation(res, target_sizes=size)[0]
            out[f'depth_fov_{i}'] = post['predicted_depth'].numpy()
            # The same focal length as the caller's: the field of view it implies at this width.
            fx = float(data[f'fx_{i}'])
            res.field_of_view = torch.tensor(
                [math.degrees(2.0 * math.atan(0.5 * rgb.shape[1] / fx))])
            post = proc.post_process_depth_estimation(res, target_sizes=size)[0]
            out[f'depth_fx_{i}'] = post['predicted_depth'].numpy()
            out[f'focal_fx_{i}'] = np.array(float(post['focal_length']))
        else:
            out[f'depth_{i}'] = proc.post_process_depth_estimation(
                res, target_sizes=size)[0]['predicted_depth'].numpy()
        i += 1
    np.savez(dst, **out)


if __name__ == '__main__':
    main(*sys.argv[1:4])
