# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Camera frame -> pixel_values on the device, as the checkpoints' own image processors do.

DPT (also Depth Anything and Prompt Depth Anything), GLPN, ZoeDepth, TIPSv2-DPT and Depth Pro;
plus the low-resolution metric prompt Prompt Depth Anything takes beside the image.
"""

from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from dpt_ros.core.config import ConfigError

# Frame layouts the pipeline accepts (after decoding): channels and element type.
LAYOUTS = {
    'rgb8': (3, torch.uint8), 'bgr8': (3, torch.uint8), 'rgba8': (4, torch.uint8),
    'bgra8': (4, torch.uint8), 'mono8': (1, torch.uint8), 'mono16': (1, torch.int16),
}

# PIL resample codes, as stored in preprocessor_config.json, -> torch interpolate modes.
_RESAMPLE = {0: 'nearest-exact', 2: 'bilinear', 3: 'bicubic'}
_IMAGENET_STANDARD = (0.5, 0.5, 0.5)

# The image processors dpt_ros implements (transformers class name -> kind), and each kind's
# class defaults, used where preprocessor_config.json leaves a value out or null.
# PromptDepthAnythingImageProcessor makes pixel_values as DPTImageProcessor does (same steps and
# defaults); its prompt_depth is prompt_depth() below.
PROCESSORS = {'DPTImageProcessor': 'dpt', 'GLPNImageProcessor': 'glpn',
              'ZoeDepthImageProcessor': 'zoedepth', 'Tipsv2DptImageProcessor': 'tipsv2',
              'DepthProImageProcessor': 'depth_pro', 'PromptDepthAnythingImageProcessor': 'dpt'}
SUPPORTED = ('DPTImageProcessor (DPT, DPT-DINOv2, Depth Anything), GLPNImageProcessor (GLPN), '
             'ZoeDepthImageProcessor (ZoeDepth), Tipsv2DptImageProcessor (TIPSv2-DPT), '
             'DepthProImageProcessor (Depth Pro), PromptDepthAnythingImageProcessor '
             '(Prompt Depth Anything)')
# The processor AutoImageProcessor picks for a model type when the json names none.
_MODEL_PROCESSOR = {'dpt': 'DPTImageProcessor', 'depth_anything': 'DPTImageProcessor',
                    'glpn': 'GLPNImageProcessor', 'zoedepth': 'ZoeDepthImageProcessor',
                    'tipsv2_dpt': 'Tipsv2DptImageProcessor', 'depth_pro': 'DepthProImageProcessor',
                    'prompt_depth_anything': 'PromptDepthAnythingImageProcessor'}
_DEFAULTS: Dict[str, Dict[str, Any]] = {
    'dpt': {'size': {'height': 384, 'width': 384}, 'resample': 3, 'do_resize': True,
            'do_rescale': True, 'do_normalize': True, 'image_mean': _IMAGENET_STANDARD,
            'image_std': _IMAGENET_STANDARD, 'do_pad': False, 'size_divisor': None,
            'keep_aspect_ratio': False, 'ensure_multiple_of': 1},
    'glpn': {'resample': 2, 'do_resize': True, 'do_rescale': True, 'do_normalize': False,
             'image_mean': None, 'image_std': None, 'size_divisor': 32},
    'zoedepth': {'size': {'height': 384, 'width': 512}, 'resample': 2, 'do_resize': True,
                 'do_rescale': True, 'do_normalize': True, 'image_mean': _IMAGENET_STANDARD,
                 'image_std': _IMAGENET_STANDARD, 'do_pad': True, 'keep_aspect_ratio': True,
                 'ensure_multiple_of': 1 / 32},
    # Tipsv2DptImageProcessor: a square 448 resize, rescale to 0..1, no normalisation.
    'tipsv2': {'size': {'height': 448, 'width': 448}, 'resample': 2, 'do_resize': True,
               'do_rescale': True, 'do_normalize': False, 'image_mean': None, 'image_std': None,
               'keep_aspect_ratio': False, 'ensure_multiple_of': 1},
    # DepthProImageProcessor: normalise first, then a float bilinear resize to 1536 x 1536.
    'depth_pro': {'size': {'height': 1536, 'width': 1536}, 'resample': 2, 'do_resize': True,
                  'do_rescale': True, 'do_normalize': True, 'image_mean': _IMAGENET_STANDARD,
                  'image_std': _IMAGENET_STANDARD},
}


class UnsupportedProcessor(ConfigError):
    """The checkpoint's image processor is not one dpt_ros implements."""


def processor_kind(d: Dict[str, Any], model_type: str = '') -> str:
    """Which implemented processor a preprocessor_config.json asks for; ConfigError if none.

    Follows AutoImageProcessor: image_processor_type, else feature_extractor_type (old
    checkpoints), else the model type's default; the Fast / Pil variants are the same maths.
    """
    name = str(d.get('image_processor_type') or d.get('feature_extractor_type') or '')
    name = name.replace('FeatureExtractor', 'ImageProcessor')
    for suffix in ('Fast', 'Pil'):
        if name.endswith(suffix):
            name = name[:-len(suffix)]
    name = name or _MODEL_PROCESSOR.get(model_type, '')
    if name not in PROCESSORS:
        what = f"image processor '{name}'" if name else f"model type '{model_type}'"
        raise UnsupportedProcessor(f'{what} is not supported; dpt_ros implements {SUPPORTED}.')
    return PROCESSORS[name]


@dataclass(frozen=True)
class Placement:
    """Where the camera frame sits in the network input, for undoing padding afterwards.

    The model output covers the padded input; resampled to ref (height, width), the frame is
    the box (top, left, height, width) of it.
    """

    net: Tuple[int, int]
    ref: Tuple[int, int]
    box: Tuple[int, int, int, int]

    @property
    def padded(self) -> bool:
        """True when the box is not the whole reference grid."""
        return self.box != (0, 0) + tuple(self.ref)

    def mirrored(self) -> 'Placement':
        """Where the frame sits in the left-right mirrored network input (the flip pass).

        Centred padding puts the odd column on the right; mirrored, it is on the left.
        """
        t, left, h, w = self.box
        return Placement(self.net, self.ref, (t, self.ref[1] - w - left, h, w))


@dataclass(frozen=True)
class PreprocessSpec:
    """The image processor settings that decide pixel_values (kind: a PROCESSORS value)."""

    height: int = 384
    width: int = 384
    keep_aspect_ratio: bool = False
    ensure_multiple_of: float = 1
    resample: int = 3
    do_resize: bool = True
    do_rescale: bool = True
    rescale_factor: float = 1.0 / 255.0
    do_normalize: bool = True
    image_mean: Tuple[float, float, float] = _IMAGENET_STANDARD
    image_std: Tuple[float, float, float] = _IMAGENET_STANDARD
    do_pad: bool = False
    size_divisor: Optional[int] = None
    kind: str = 'dpt'

    @classmethod
    def from_processor_dict(cls, d: Dict[str, Any], overrides: Any = None,
                            square_only: bool = False, model_type: str = ''
                            ) -> 'PreprocessSpec':
        """Build from a preprocessor_config.json dict, then apply ModelConfig overrides."""
        kind = processor_kind(d, model_type)
        v = dict(_DEFAULTS[kind])
        v.update({k: x for k, x in d.items() if x is not None})
        height = width = 0
        if kind != 'glpn':
            size = v['size']
            if isinstance(size, int):
                height = width = size
            elif 'height' in size and 'width' in size:
                height, width = int(size['height']), int(size['width'])
            else:
                raise ConfigError(f'preprocessor_config.json size {size} is not supported; '
                                  'set model.input_height and model.input_width.')
        keep = bool(v.get('keep_aspect_ratio', False))
        multiple = v.get('ensure_multiple_of', 1) or 1
        divisor = v.get('size_divisor')
        if overrides is not None:
            if kind == 'depth_pro' and (overrides.input_height or overrides.ensure_multiple_of
                                        or overrides.keep_aspect_ratio != 'checkpoint'):
                raise ConfigError(
                    'model.input_height / input_width / keep_aspect_ratio / ensure_multiple_of do '
                    'not apply to Depth Pro checkpoints (its encoders tile a fixed 1536 x 1536 '
                    'image pyramid); leave them at 0 / checkpoint.')
            if kind == 'glpn' and (overrides.input_height or
                                   overrides.keep_aspect_ratio != 'checkpoint'):
                raise ConfigError(
                    'model.input_height / input_width / keep_aspect_ratio do not apply to GLPN '
                    'checkpoints (the network takes the camera size rounded down to a multiple '
                    'of 32); leave them at 0 / checkpoint.')
            if overrides.input_height:
                height, width = overrides.input_height, overrides.input_width
            if overrides.keep_aspect_ratio != 'checkpoint':
                keep = overrides.keep_aspect_ratio == 'true'
            if overrides.ensure_multiple_of:
                if kind == 'glpn':
                    divisor = overrides.ensure_multiple_of
                else:
                    multiple = overrides.ensure_multiple_of
        if square_only and (keep or height != width):
            raise ConfigError(
                f'this checkpoint (ViT-based DPT) needs a square input, but the settings ask for '
                f'{height} x {width} with keep_aspect_ratio {str(keep).lower()}; use equal '
                'model.input_height / model.input_width and model.keep_aspect_ratio false.')
        resample = int(v['resample'])
        if resample not in _RESAMPLE or (kind in ('zoedepth', 'depth_pro', 'tipsv2')
                                         and resample not in (2, 3)):
            raise ConfigError(f'preprocessor_config.json resample {resample} is not supported '
                              f'for {kind}; use 2 (bilinear) or 3 (bicubic).')
        norm = bool(v['do_normalize'])
        return cls(
            height=height, width=width, keep_aspect_ratio=keep, ensure_multiple_of=multiple,
            resample=resample, do_resize=bool(v['do_resize']), do_rescale=bool(v['do_rescale']),
            rescale_factor=float(v.get('rescale_factor', 1.0 / 255.0)), do_normalize=norm,
            image_mean=_triple(v['image_mean']) if norm else _IMAGENET_STANDARD,
            image_std=_triple(v['image_std']) if norm else _IMAGENET_STANDARD,
            do_pad=bool(v.get('do_pad', False)),
            size_divisor=int(divisor) if divisor else None, kind=kind)

    @property
    def output_resample(self) -> str:
        """The interpolation the processor's depth (and normals) post-processing resizes with."""
        return 'bilinear' if self.kind in ('tipsv2', 'depth_pro') else 'bicubic'

    def resized_size(self, in_h: int, in_w: int) -> Tuple[int, int]:
        """Size after the resize step (DPT / ZoeDepth get_resize_output_image_size)."""
        if not self.do_resize:
            return in_h, in_w
        if self.kind == 'glpn':
            div = self.size_divisor or 32
            return in_h // div * div, in_w // div * div
        sh, sw = self.height / in_h, self.width / in_w
        if self.keep_aspect_ratio:
            # scale as little as possible
            if abs(1 - sw) < abs(1 - sh):
                sh = sw
            else:
                sw = sh
        return (_constrain_to_multiple(sh * in_h, self.ensure_multiple_of),
                _constrain_to_multiple(sw * in_w, self.ensure_multiple_of))

    def zoe_pad(self, in_h: int, in_w: int) -> Tuple[int, int]:
        """Reflect padding (rows, columns) ZoeDepth adds on each side of the camera frame."""
        if self.kind != 'zoedepth' or not self.do_pad:
            return 0, 0
        return int(math.sqrt(in_h / 2) * 3), int(math.sqrt(in_w / 2) * 3)

    def placement(self, in_h: int, in_w: int) -> Placement:
        """Network input size and where the frame lies in the model output's field."""
        if self.kind == 'zoedepth':
            ph, pw = self.zoe_pad(in_h, in_w)
            net = self.resized_size(in_h + 2 * ph, in_w + 2 * pw)
            return Placement(net, (in_h + 2 * ph, in_w + 2 * pw), (ph, pw, in_h, in_w))
        h, w = self.resized_size(in_h, in_w)
        if self.kind == 'dpt' and self.do_pad and self.size_divisor:
            hp = math.ceil(h / self.size_divisor) * self.size_divisor
            wp = math.ceil(w / self.size_divisor) * self.size_divisor
            return Placement((hp, wp), (hp, wp), ((hp - h) // 2, (wp - w) // 2, h, w))
        return Placement((h, w), (h, w), (0, 0, h, w))

    @property
    def input_fixed(self) -> bool:
        """True when the network input size is the same for every camera frame size."""
        padded = self.kind == 'dpt' and self.do_pad and bool(self.size_divisor)
        return (self.kind != 'glpn' and self.do_resize and not self.keep_aspect_ratio
                and not padded)

    def output_size(self, in_h: int, in_w: int) -> Tuple[int, int]:
        """Network input (pixel_values) size for a camera frame of this size."""
        return self.placement(in_h, in_w).net


def _triple(v: Any) -> Tuple[float, float, float]:
    if isinstance(v, (int, float)):
        return (float(v),) * 3
    return tuple(float(x) for x in v)  # type: ignore[return-value]


def _constrain_to_multiple(val: float, multiple: float) -> int:
    x = round(val / multiple) * multiple
    if x < 0:  # the reference's min_val of 0
        x = math.ceil(val / multiple) * multiple
    return int(x)


def to_rgb(frames: torch.Tensor, layout: str) -> torch.Tensor:
    """(B, H, W, C) frames in a LAYOUTS layout -> (B, 3, H, W) float32 RGB in 0..255."""
    if layout not in LAYOUTS:
        raise ValueError(f"unsupported layout '{layout}'; supported: {', '.join(LAYOUTS)}")
    x = frames.permute(0, 3, 1, 2)
    if layout == 'mono16':
        # uint16 travels as int16 (torch has no uint16 arithmetic everywhere): undo the sign.
        x = x.to(torch.int32) & 0xFFFF
        return (x.to(torch.float32) * (255.0 / 65535.0)).expand(-1, 3, -1, -1)
    x = x.to(torch.float32)
    if layout.startswith('mono'):
        return x.expand(-1, 3, -1, -1)
    if layout.startswith('bgr'):
        return x[:, [2, 1, 0]]
    return x[:, :3]


def to_rgb8(frames: torch.Tensor, layout: str) -> Optional[torch.Tensor]:
    """(B, H, W, C) 8-bit frames -> (B, H, W, 3) uint8 RGB without a float copy; else None.

    The same values as to_rgb rounded back to uint8 (a view for rgb8, a channel gather for
    bgr8 / bgra8 and mono8); None for mono16, which only to_rgb scales.
    """
    if layout not in LAYOUTS or LAYOUTS[layout][1] != torch.uint8:
        return None
    if layout.startswith('mono'):
        return frames[..., :1].expand(-1, -1, -1, 3)
    if layout.startswith('bgr'):
        return frames[..., [2, 1, 0]]
    return frames[..., :3]


class Preprocessor:
    """Camera RGB -> pixel_values on the device, step by step as the spec's processor does."""

    def __init__(self, spec: PreprocessSpec, dtype: torch.dtype = torch.float32,
                 channels_last: bool = False) -> None:
        self.spec = spec
        self.dtype = dtype
        self.channels_last = channels_last
        self._affine: Dict[torch.device, Tuple[torch.Tensor, torch.Tensor]] = {}

    def _scale_bias(self, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
        if device not in self._affine:
            s = self.spec
            rescale = s.rescale_factor if s.do_rescale else 1.0
            mean = torch.tensor(s.image_mean if s.do_normalize else (0.0,) * 3)
            std = torch.tensor(s.image_std if s.do_normalize else (1.0,) * 3)
            # (x * rescale - mean) / std  ==  x * scale + bias
            scale = (rescale / std).view(1, 3, 1, 1).to(device)
            bias = (-mean / std).view(1, 3, 1, 1).to(device)
            self._affine[device] = (scale, bias)
        return self._affine[device]

    def resize(self, rgb: torch.Tensor) -> torch.Tensor:
        """Resize (B, 3, H, W) 0..255 float to the network size, rounded like uint8 PIL output."""
        s = self.spec
        h, w = s.resized_size(*rgb.shape[-2:])
        if not s.do_resize or (h, w) == tuple(rgb.shape[-2:]):
            return rgb
        mode = _RESAMPLE[s.resample]
        if mode == 'nearest-exact':
            return F.interpolate(rgb, size=(h, w), mode=mode)
        # PIL resizes 8-bit images in two separable passes, width first, rounding to uint8
        # after each; antialias=True is its filter (bicubic a=-0.5, support scaled when
        # shrinking). Doing the same matches it to within 1 level on <0.1% of pixels.
        out = rgb
        if w != out.shape[-1]:
            out = F.interpolate(out, size=(out.shape[-2], w), mode=mode, align_corners=False,
                                antialias=True).round_().clamp_(0.0, 255.0)
        if h != out.shape[-2]:
            out = F.interpolate(out, size=(h, w), mode=mode, align_corners=False,
                                antialias=True).round_().clamp_(0.0, 255.0)
        return out

    def __call__(self, rgb: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float RGB 0..255 -> pixel_values (B, 3, h, w) in the model dtype."""
        s = self.spec
        if s.kind == 'zoedepth':
            x = self._zoedepth(rgb)
        elif s.kind == 'depth_pro':
            x = self._depth_pro(rgb)
        else:
            x = self.resize(rgb)
            scale, bias = self._scale_bias(x.device)
            x = torch.addcmul(bias, x, scale)
            place = s.placement(*rgb.shape[-2:])
            if place.padded:  # DPT: zeros around the normalised image, centred
                t, left, h, w = place.box
                hp, wp = place.net
                x = F.pad(x, (left, wp - w - left, t, hp - h - t))
        x = x.to(self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _zoedepth(self, rgb: torch.Tensor) -> torch.Tensor:
        """Rescale, reflect-pad, float resize (align_corners=True), normalise: ZoeDepth's order."""
        s = self.spec
        x = rgb * s.rescale_factor if s.do_rescale else rgb
        ph, pw = s.zoe_pad(*rgb.shape[-2:])
        if ph or pw:
            x = F.pad(x, (pw, pw, ph, ph), mode='reflect')
        size = s.placement(*rgb.shape[-2:]).net
        if s.do_resize and size != tuple(x.shape[-2:]):
            x = F.interpolate(x, size=size, mode=_RESAMPLE[s.resample], align_corners=True)
        if s.do_normalize:
            mean = torch.tensor(s.image_mean, device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(s.image_std, device=x.device).view(1, 3, 1, 1)
            x = (x - mean) / std
        return x

    def _depth_pro(self, rgb: torch.Tensor) -> torch.Tensor:
        """Rescale and normalise, then a float bilinear resize without antialiasing."""
        s = self.spec
        scale, bias = self._scale_bias(rgb.device)
        x = torch.addcmul(bias, rgb, scale)
        size = s.placement(*rgb.shape[-2:]).net
        if s.do_resize and size != tuple(x.shape[-2:]):
            x = F.interpolate(x, size=size, mode=_RESAMPLE[s.resample], align_corners=False)
        return x


def prompt_depth(depth: torch.Tensor, scale_to_metres: float = 1.0) -> torch.Tensor:
    """(B, h, w) prompt depths -> (B, 1, h, w) float32 metres, as PromptDepthAnything's does.

    Each map is multiplied by scale_to_metres (the processor's prompt_scale_to_meter: 0.001
    for millimetre images; 1 for metres) in float32. A constant map gets 1e-6 added to its
    first row, so the model's min-max normalisation does not divide by zero: the processor
    writes depth[0, 0] += 1e-6 on a (1, h, w) map, which is that row.
    """
    x = depth.to(torch.float32) * scale_to_metres
    flat = x.reshape(x.shape[0], -1)
    constant = flat.amin(1) == flat.amax(1)
    if bool(constant.any()):
        x = x.clone()
        x[:, 0, :] += constant.to(x.dtype)[:, None] * 1e-6
    return x.unsqueeze(1)


def prompt_as(prompt: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, 1, h, w) float32 prompt (prompt_depth) -> the network's dtype, no map made constant.

    The model divides each map by its range: fp16 and bf16 round prompt_depth's 1e-6 nudge
    (or a wall's millimetres) away, and a constant map gives NaN depth everywhere. Such a map
    gets its first row raised by about one step of the dtype instead, which normalises to
    what the nudge gives in float32 (1 on that row, 0 elsewhere).
    """
    x = prompt.to(dtype)
    if x.dtype == prompt.dtype:
        return x
    flat = x.reshape(x.shape[0], -1)
    constant = flat.amin(1) == flat.amax(1)  # no host sync: the where below keeps the others
    info = torch.finfo(dtype)
    row = x[:, :, 0, :].float()
    up = (row * (1.0 + info.eps) + info.tiny).to(dtype)
    x = x.clone()
    x[:, :, 0, :] = torch.where(constant.view(-1, 1, 1), up, x[:, :, 0, :])
    return x


def network_size(spec: PreprocessSpec, frame_hw: Sequence[int]) -> Tuple[int, int]:
    """Return the pixel_values height and width for frames of this size."""
    return spec.output_size(int(frame_hw[0]), int(frame_hw[1]))
