# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Which checkpoint for which robot: one table (license, output, scene, size) and a CPU timer.

The table drives the README's "Which checkpoint" section (test_checkpoints.py checks they
agree). `dpt_checkpoints --bench` builds each architecture from its published config shape with
random weights (dpt_ros.tools.sample presets; no download) and times one forward on this machine.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
import json
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from dpt_ros.core.config import DEFAULT_DEPTH_MODEL

# Where the published GPU figures come from (footnote number -> source).
SOURCES = {
    1: 'Depth Anything README (github.com/LiheYoung/Depth-Anything, "Pre-trained models"): '
       'forward pass only, ViT-S/B/L/14 + DPT head, the architecture V2 keeps.',
    2: 'MiDaS README (github.com/isl-org/MiDaS, v3.1 table): frames per second at the '
       'training resolution (384) on an RTX 3090, the same networks as the Intel/dpt-* ports.',
    3: 'Depth Pro model card and paper (arXiv 2410.02073): "a 2.25-megapixel depth map in 0.3 '
       'seconds on a standard GPU".',
    4: 'Model cards of google/tipsv2-{b14,l14,so400m14,g14}-dpt (license: apache-2.0): depth '
       'and normals heads trained on NYU Depth V2, segmentation on ADE20K (150 classes), on a '
       'frozen TIPSv2 backbone of 86 M / 303 M / 412 M / 1.1 B parameters.',
    5: 'Model cards of depth-anything/prompt-depth-anything-*-hf (license: apache-2.0) and '
       'github.com/DepthAnything/PromptDA (Apache-2.0 code; "Prompt-Depth-Anything-Large ... '
       'used to benchmark in our paper"). The Large model prompts Depth Anything V2 Large, '
       'whose authors license those weights CC-BY-NC-4.0; until they say otherwise this table '
       'treats it as non-commercial.',
}


@dataclass(frozen=True)
class Checkpoint:
    """One published depth checkpoint, as a robot builder chooses it."""

    hub_id: str
    family: str              # transformers model_type the node loads it as
    architecture: str
    license: str
    commercial: bool         # the license allows use on a commercial robot
    output: str              # 'metric' (metres) or 'relative' (unitless inverse depth)
    scene: str
    params_m: float          # millions, counted from the architecture (test_checkpoints.py)
    input_size: str          # network input from its preprocessor_config.json
    depth_mode: str          # the depth.mode to run it with
    preset: str              # dpt_ros.tools.sample preset with these shapes (random weights)
    max_depth: Optional[int] = None  # metric Depth Anything: config.max_depth in metres
    gpu: str = ''            # published GPU figure, with a SOURCES footnote
    mode_note: str = ''      # how its metres come, where `depth.mode` alone does not say

    @property
    def supported(self) -> bool:
        """True when dpt_ros implements this family's image processor (else it is refused)."""
        from dpt_ros.core.preprocess import processor_kind, UnsupportedProcessor
        try:
            processor_kind({}, self.family)
        except UnsupportedProcessor:
            return False
        return True

    def config_overrides(self) -> Dict[str, Any]:
        """Config fields that turn the preset's architecture into this checkpoint's type."""
        if self.family != 'depth_anything':
            return {}
        out: Dict[str, Any] = {'depth_estimation_type': self.output}
        if self.max_depth is not None:  # relative heads keep the config's own (None breaks them)
            out['max_depth'] = self.max_depth
        return out


_DA2 = 'DINOv2 ViT-{}/14 + DPT head'
_TIPS = 'TIPSv2 ViT-{}/14 + 3 DPT heads (depth, normals, ADE20K labels) [4]'
_TIPS_SCENE = 'indoor (NYU Depth V2), up to 10 m'
_TIPS_INPUT = '448 x 448'
_PDA = 'DINOv2 ViT-{}/14 + DPT head with prompt fusion [5]'
_PDA_INPUT = '756 x 756, keep aspect, x14; prompt any size'
_PDA_SCENE = 'indoor (ARKitScenes, ScanNet++ lidar)'
_PDA_MODE = '`auto` with `anchors.source` as its prompt; no metres without anchors'
_DA_INPUT = '518 x 518, keep aspect, x14'
_DA_METRIC = 'Apache-2.0'
_NC = 'CC-BY-NC-4.0'
_RELATIVE_MODE = 'relative_inverse'

CHECKPOINTS: Tuple[Checkpoint, ...] = (
    Checkpoint('depth-anything/Depth-Anything-V2-Metric-Indoor-Small-hf', 'depth_anything',
               _DA2.format('S'), _DA_METRIC, True, 'metric', 'indoor, up to 20 m', 24.8,
               _DA_INPUT, 'auto', 'da2-small', 20, 'V100 12 ms, A100 8 ms [1]'),
    Checkpoint('depth-anything/Depth-Anything-V2-Metric-Outdoor-Small-hf', 'depth_anything',
               _DA2.format('S'), _DA_METRIC, True, 'metric', 'outdoor, up to 80 m', 24.8,
               _DA_INPUT, 'auto', 'da2-small', 80, 'V100 12 ms, A100 8 ms [1]'),
    Checkpoint('depth-anything/Depth-Anything-V2-Metric-Indoor-Base-hf', 'depth_anything',
               _DA2.format('B'), _NC, False, 'metric', 'indoor, up to 20 m', 97.5,
               _DA_INPUT, 'auto', 'da2-base', 20, 'V100 13 ms, A100 9 ms [1]'),
    Checkpoint('depth-anything/Depth-Anything-V2-Metric-Indoor-Large-hf', 'depth_anything',
               _DA2.format('L'), _NC, False, 'metric', 'indoor, up to 20 m', 335.3,
               _DA_INPUT, 'auto', 'da2-large', 20, 'V100 20 ms, A100 13 ms [1]'),
    Checkpoint('depth-anything/Depth-Anything-V2-Metric-Outdoor-Large-hf', 'depth_anything',
               _DA2.format('L'), _NC, False, 'metric', 'outdoor, up to 80 m', 335.3,
               _DA_INPUT, 'auto', 'da2-large', 80, 'V100 20 ms, A100 13 ms [1]'),
    Checkpoint('depth-anything/Depth-Anything-V2-Small-hf', 'depth_anything', _DA2.format('S'),
               'Apache-2.0', True, 'relative', 'any', 24.8, _DA_INPUT, _RELATIVE_MODE,
               'da2-small', None, 'V100 12 ms, A100 8 ms [1]'),
    Checkpoint('LiheYoung/depth-anything-small-hf', 'depth_anything',
               _DA2.format('S') + ' (V1)', 'Apache-2.0', True, 'relative', 'any', 24.8,
               _DA_INPUT, _RELATIVE_MODE, 'da1-small', None, 'V100 12 ms, A100 8 ms [1]'),
    Checkpoint('Intel/dpt-hybrid-midas', 'dpt', 'ViT-Hybrid (ResNet-50 + ViT-B/16) + DPT',
               'Apache-2.0', True, 'relative', 'any', 122.4, '384 x 384', _RELATIVE_MODE,
               'hybrid-depth', None, 'RTX 3090 50 frames/s [2]'),
    Checkpoint('Intel/dpt-large', 'dpt', 'ViT-L/16 + DPT', 'Apache-2.0', True, 'relative', 'any',
               343.0, '384 x 384', _RELATIVE_MODE, 'large-depth', None,
               'RTX 3090 61 frames/s [2]'),
    Checkpoint('Intel/zoedepth-nyu-kitti', 'zoedepth', 'BEiT-L/16 + DPT + metric bins', 'MIT',
               True, 'metric', 'indoor (NYU head, 10 m) and outdoor (KITTI head, 80 m)', 345.1,
               '384 x 512, keep aspect, x32', 'auto', 'zoedepth-nk'),
    Checkpoint('apple/DepthPro-hf', 'depth_pro', '3 x DINOv2 ViT-L/16 + DPT-style decoder',
               'apple-amlr (research only)', False, 'metric', 'any', 952.0, '1536 x 1536',
               'auto', 'depth-pro', None, '0.3 s per 2.25 MP map [3]',
               '`auto`: metres from camera_info fx, else its predicted field of view'),
    Checkpoint('google/tipsv2-b14-dpt', 'tipsv2_dpt', _TIPS.format('B'), 'Apache-2.0', True,
               'metric', _TIPS_SCENE, 158.0, _TIPS_INPUT, 'auto', 'tipsv2-b14'),
    Checkpoint('google/tipsv2-l14-dpt', 'tipsv2_dpt', _TIPS.format('L'), 'Apache-2.0', True,
               'metric', _TIPS_SCENE, 405.7, _TIPS_INPUT, 'auto', 'tipsv2-l14'),
    Checkpoint('google/tipsv2-so400m14-dpt', 'tipsv2_dpt', _TIPS.format('SO400m'),
               'Apache-2.0', True, 'metric', _TIPS_SCENE, 532.9, _TIPS_INPUT, 'auto',
               'tipsv2-so400m14'),
    Checkpoint('google/tipsv2-g14-dpt', 'tipsv2_dpt', _TIPS.format('g'), 'Apache-2.0', True,
               'metric', _TIPS_SCENE, 1320.5, _TIPS_INPUT, 'auto', 'tipsv2-g14'),
    Checkpoint('depth-anything/prompt-depth-anything-vits-hf', 'prompt_depth_anything',
               _PDA.format('S'), 'Apache-2.0', True, 'metric', _PDA_SCENE, 25.1, _PDA_INPUT,
               'auto', 'pda-vits', mode_note=_PDA_MODE),
    Checkpoint('depth-anything/prompt-depth-anything-vits-transparent-hf',
               'prompt_depth_anything', _PDA.format('S') + ', fine-tuned on transparent objects',
               'Apache-2.0', True, 'metric', _PDA_SCENE, 25.1, _PDA_INPUT, 'auto', 'pda-vits',
               mode_note=_PDA_MODE),
    Checkpoint('depth-anything/prompt-depth-anything-vitl-hf', 'prompt_depth_anything',
               _PDA.format('L'), 'Apache-2.0 card, CC-BY-NC-4.0 base weights', False, 'metric',
               _PDA_SCENE, 340.0, _PDA_INPUT, 'auto', 'pda-vitl', mode_note=_PDA_MODE),
)


def by_id(hub_id: str) -> Checkpoint:
    """Return the table entry for a hub id; KeyError names the ones we list."""
    for c in CHECKPOINTS:
        if c.hub_id == hub_id:
            return c
    raise KeyError(f"'{hub_id}' is not in dpt_ros.tools.checkpoints; listed: "
                   f"{', '.join(c.hub_id for c in CHECKPOINTS)}")


DEFAULT = by_id(DEFAULT_DEPTH_MODEL)

CPU_PLACEHOLDER = 'to measure'
HEADER = ('checkpoint', 'family', 'license', 'output', 'scene', 'params (M)', 'network input',
          '`depth.mode`', 'CPU ms/frame', 'GPU, published')
CPU_COLUMN = HEADER.index('CPU ms/frame')


def table_rows(cpu_ms: Optional[Dict[str, float]] = None) -> List[List[str]]:
    """Return the README table's cells, one row per checkpoint (CPU column from cpu_ms)."""
    rows = []
    for c in CHECKPOINTS:
        license_ = c.license if c.commercial else f'{c.license}, non-commercial'
        ms = (cpu_ms or {}).get(c.preset)
        rows.append([f'`{c.hub_id}`' + (' (default)' if c is DEFAULT else ''),
                     f'{c.family}: {c.architecture}', license_, c.output, c.scene,
                     f'{c.params_m:g}', c.input_size, _mode_text(c),
                     f'{ms:.0f}' if ms is not None else CPU_PLACEHOLDER, c.gpu or '-'])
    return rows


def _mode_text(c: Checkpoint) -> str:
    if not c.supported:
        return 'refused at start-up (not implemented)'
    if c.mode_note:
        return c.mode_note
    if c.output == 'metric':
        return f'`{c.depth_mode}` (metric)'
    return f'`{c.depth_mode}`; metres: `fitted` with sparse anchors (or `affine_inverse`)'


def markdown_table(cpu_ms: Optional[Dict[str, float]] = None) -> str:
    """Render the checkpoint table and its source footnotes as markdown."""
    lines = ['| ' + ' | '.join(HEADER) + ' |', '|' + '---|' * len(HEADER)]
    lines += ['| ' + ' | '.join(r) + ' |' for r in table_rows(cpu_ms)]
    lines += [''] + [f'[{n}] {text}' for n, text in SOURCES.items()]
    return '\n'.join(lines)


# ------------------------------------------------------------------ CPU timing, random weights

def build(c: Checkpoint, camera: Tuple[int, int] = (480, 640)) -> Tuple[Any, Tuple[int, int]]:
    """Build c's architecture with random weights; return it and its input size for camera."""
    import torch
    from transformers.utils import logging as hf_logging

    from dpt_ros.core.models import checkpoint_heads, model_class
    from dpt_ros.core.preprocess import PreprocessSpec, UnsupportedProcessor
    from dpt_ros.tools.sample import preset_config
    hf_logging.set_verbosity_error()
    cfg, proc = preset_config(c.preset)
    for key, value in c.config_overrides().items():
        setattr(cfg, key, value)
    try:
        size = PreprocessSpec.from_processor_dict(proc, model_type=cfg.model_type).output_size(
            *camera)
    except UnsupportedProcessor:  # a family the node refuses: time its fixed input
        size = (proc['size']['height'], proc['size']['width'])
    torch.manual_seed(0)
    # The class dpt_ros loads, with every head one forward gives (TIPSv2-DPT: all three).
    model = model_class(cfg, checkpoint_heads(cfg))(cfg).eval().requires_grad_(False)
    return model, size


def time_forward(c: Checkpoint, camera: Tuple[int, int] = (480, 640), iters: int = 3,
                 warmup: int = 1, net_input: Optional[Tuple[int, int]] = None) -> Dict[str, Any]:
    """Time c's architecture on the CPU for a camera frame of (h, w); median in ms_p50."""
    import torch

    from dpt_ros.core.models import PROMPTED_MODEL_TYPES
    model, size = build(c, camera)
    h, w = net_input or size
    x = torch.randn(1, 3, h, w)
    extra = {}
    if c.family in PROMPTED_MODEL_TYPES:  # an iPhone lidar's 256 x 192 prompt
        extra['prompt_depth'] = 0.5 + 4.0 * torch.rand(1, 1, 192, 256)
    times = []
    with torch.inference_mode():
        for i in range(warmup + iters):
            t0 = time.perf_counter()
            model(pixel_values=x, **extra)
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1e3)
    return {'preset': c.preset, 'input': [h, w], 'ms': times, 'ms_p50': statistics.median(times),
            'params_m': sum(p.numel() for p in model.parameters()) / 1e6,
            'threads': torch.get_num_threads()}


def bench(ids: Sequence[str], camera: Tuple[int, int], iters: int, warmup: int,
          net_input: Optional[Tuple[int, int]] = None,
          log: Callable[[str], None] = print) -> Dict[str, Dict[str, Any]]:
    """Time each distinct architecture among ids once; results keyed by preset."""
    results: Dict[str, Dict[str, Any]] = {}
    for hub_id in ids:
        c = by_id(hub_id)
        if c.preset in results:
            continue
        try:
            r = time_forward(c, camera, iters, warmup, net_input)
        except (RuntimeError, ValueError, MemoryError) as exc:  # e.g. an input too small
            log(f'{c.preset:14s} failed: {str(exc).splitlines()[0][:200]}  ({hub_id})')
            continue
        results[c.preset] = r
        log(f"{c.preset:14s} {r['params_m']:8.1f} M  input {r['input'][0]}x{r['input'][1]}  "
            f"forward p50 {r['ms_p50']:9.1f} ms  ({hub_id})")
    return results


def _size(text: str) -> Tuple[int, int]:
    w, _, h = text.lower().partition('x')
    return int(h), int(w)


def main(argv: Optional[List[str]] = None) -> int:
    """`dpt_checkpoints`: print the checkpoint table; --bench times each architecture here."""
    ap = argparse.ArgumentParser(
        prog='dpt_checkpoints', description='The depth checkpoints dpt_ros recommends. With '
        '--bench, each architecture is built from its config shape with RANDOM weights (no '
        'download) and one forward is timed on the CPU; prints the README table with the CPU '
        'column filled.')
    ap.add_argument('--bench', action='store_true', help='time a CPU forward per architecture')
    ap.add_argument('--ids', nargs='*', help='hub ids to time (default: all in the table)')
    ap.add_argument('--camera', default='640x480', help='camera frame WxH (default 640x480)')
    ap.add_argument('--input', help='override the network input WxH (a quick smoke run)')
    ap.add_argument('--iters', type=int, default=3, help='timed forwards (default 3)')
    ap.add_argument('--warmup', type=int, default=1, help='untimed forwards first (default 1)')
    ap.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: torch default)')
    ap.add_argument('--json', help='also write the results to this JSON file')
    args = ap.parse_args(argv)
    if not args.bench:
        print(markdown_table())
        return 0
    import platform

    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    ids = args.ids or [c.hub_id for c in CHECKPOINTS]
    try:
        for hub_id in ids:
            by_id(hub_id)
    except KeyError as exc:
        print(f'dpt_checkpoints: error: {exc.args[0]}', file=sys.stderr)
        return 2
    print(f'CPU forward, random weights: {platform.machine()}, {torch.get_num_threads()} torch '
          f'threads, torch {torch.__version__}, fp32, camera {args.camera}', flush=True)
    results = bench(ids, _size(args.camera), args.iters, args.warmup,
                    _size(args.input) if args.input else None,
                    log=lambda m: print(m, flush=True))
    print()
    print(markdown_table({k: v['ms_p50'] for k, v in results.items()}))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'camera': args.camera, 'threads': torch.get_num_threads(),
                       'torch': torch.__version__, 'results': results}, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
