# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Load DPT-family checkpoints (local folder or hub id) onto a device, precision and backend."""

from __future__ import annotations

from dataclasses import dataclass, field
import json
import logging
import os
from pathlib import Path
import socket
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple
from urllib.parse import urlparse

import torch

from dpt_ros.core.config import ConfigError, ModelConfig
from dpt_ros.core.preprocess import PreprocessSpec, UnsupportedProcessor

LOG = logging.getLogger('dpt_ros')

# Architectures whose raw output is already metres (besides configs that say so).
_METRIC_MODEL_TYPES = ('zoedepth', 'glpn', 'tipsv2_dpt', 'prompt_depth_anything')

# Most classes a segmentation checkpoint may have: ids travel as 16-bit pixels (mono16).
MAX_CLASSES = 1 << 16

# What one forward of a network can give, as named in LoadedModel.heads.
HEAD_DEPTH = 'depth'                # (B, h, w): see LoadedModel.depth_units
HEAD_SEGMENTATION = 'segmentation'  # (B, classes, h, w) logits
HEAD_NORMALS = 'normals'            # (B, 3, h, w) raw normals in the head's own axes
HEAD_FOV = 'fov'                    # (B,) horizontal field of view in degrees (Depth Pro)
# The transformers output attribute of each head, first found wins.
_HEAD_ATTRS = {HEAD_DEPTH: ('predicted_depth',),
               HEAD_SEGMENTATION: ('segmentation_logits', 'logits'),
               HEAD_NORMALS: ('normals',), HEAD_FOV: ('field_of_view',)}
# Model types whose one forward gives several heads, and the transformers class that gives
# each set (TIPSv2-DPT: one backbone pass, a neck and decoder per head; a single-head class
# runs one neck only).
_MULTI_HEAD = {
    'tipsv2_dpt': {
        (HEAD_DEPTH,): 'Tipsv2DptForDepthEstimation',
        (HEAD_SEGMENTATION,): 'Tipsv2DptForSemanticSegmentation',
        (HEAD_NORMALS,): 'Tipsv2DptForNormalEstimation',
    },
}
_DENSE_CLASS = {'tipsv2_dpt': 'Tipsv2DptForDensePrediction'}
# Model types that take a metric prompt beside the image and give no metres without one.
PROMPTED_MODEL_TYPES = ('prompt_depth_anything',)


class ModelLoadError(RuntimeError):
    """A checkpoint could not be loaded; the message names it and says how to fix it."""


@dataclass
class LoadedModel:
    """A model ready for inference, with what the rest of the pipeline needs to know of it."""

    task: str                      # 'depth' or 'segmentation': what it was loaded as
    source: str                    # the folder or hub id it came from
    # pixel_values (, prompt_depth) -> the heads' outputs: one tensor for one head, else a
    # tuple in the order of heads
    net: torch.nn.Module
    spec: PreprocessSpec
    device: torch.device
    dtype: torch.dtype
    model_type: str
    metric: bool = False           # raw output is metres
    labels: List[str] = field(default_factory=list)
    square_input: bool = False     # ViT DPT reassembles tokens into a square grid
    backend: str = 'torch'
    num_parameters: int = 0
    notes: List[str] = field(default_factory=list)
    eager: Optional[torch.nn.Module] = None  # the torch module when a backend replaced net
    weights_hash: str = ''         # set once by backends.export.model_hash (engine cache keys)
    max_depth: Optional[float] = None  # metres: the farthest a metric checkpoint outputs
    heads: Tuple[str, ...] = ()    # what net returns, in order (HEAD_*); () means (task,)
    # the depth head's units: 'metres', 'relative_inverse' (unitless, larger is nearer) or
    # 'canonical_inverse' (Depth Pro: metres through postprocess.depth_pro_metres)
    depth_units: str = ''
    needs_prompt: bool = False     # metres only with a metric prompt (Prompt Depth Anything)

    def __post_init__(self) -> None:
        if not self.heads:
            self.heads = (self.task,)
        if not self.depth_units and HEAD_DEPTH in self.heads:
            self.depth_units = 'metres' if self.metric else 'relative_inverse'

    def __call__(self, pixel_values: torch.Tensor, prompt_depth: Optional[torch.Tensor] = None,
                 heads: Optional[Sequence[str]] = None) -> Any:
        """Run the network on preprocessed pixel values (already on the device, in dtype).

        prompt_depth: (B, 1, h, w) metres (preprocess.prompt_depth) for a model that
        needs_prompt; it must not be given to any other. heads: the heads this call needs
        (default all); a multi-head model whose class can skip the others (TIPSv2-DPT) runs
        only their necks and decoders, and gives None in the place of each one skipped.
        """
        if prompt_depth is None:
            if self.needs_prompt:
                raise ValueError(f"'{self.source}' ({self.model_type}) needs a metric prompt "
                                 '(prompt_depth) for every frame: it gives no metres without.')
        elif not self.needs_prompt:
            raise ValueError(f"'{self.source}' ({self.model_type}) takes no prompt_depth.")
        args = () if prompt_depth is None else (prompt_depth,)
        if heads is not None and isinstance(self.net, _TensorOut) and \
                self.net.partial is not None:
            return self.net(pixel_values, *args, heads=tuple(heads))
        return self.net(pixel_values, *args)

    @property
    def gives_metres(self) -> bool:
        """Whether its depth is metres: as it comes, or through depth_pro_metres (Depth Pro)."""
        return self.metric or self.depth_units == 'canonical_inverse'

    def index(self, head: str) -> int:
        """Position of a head in net's outputs; KeyError if this model does not give it."""
        if head not in self.heads:
            raise KeyError(f"'{self.source}' was loaded for {', '.join(self.heads)}, not {head}")
        return self.heads.index(head)


def _tipsv2_heads(model: torch.nn.Module, pixel_values: torch.Tensor,
                  heads: Sequence[str]) -> Dict[str, torch.Tensor]:
    """One backbone pass of Tipsv2DptForDensePrediction, then only these heads' necks.

    The steps of its forward (backbone feature maps on the patch grid, then per head its neck,
    its decoder on the finest fused map and, for depth, the bin regressor), each head run
    only when asked: a robot that wants no normals this frame does not pay their decoder.
    """
    maps = model.backbone(pixel_values).feature_maps
    patch = model.config.backbone_config.patch_size
    ph, pw = (patch, patch) if isinstance(patch, int) else patch
    grid = {'patch_height': pixel_values.shape[-2] // ph,
            'patch_width': pixel_values.shape[-1] // pw}
    out = {}
    if HEAD_DEPTH in heads:
        fused = model.depth_neck(maps, **grid)[-1]
        out[HEAD_DEPTH] = model.depth_bin_regressor(model.depth_decoder(fused))
    if HEAD_NORMALS in heads:
        out[HEAD_NORMALS] = model.normals_decoder(model.normals_neck(maps, **grid)[-1])
    if HEAD_SEGMENTATION in heads:
        fused = model.segmentation_neck(maps, **grid)[-1]
        out[HEAD_SEGMENTATION] = model.segmentation_decoder(fused)
    return out


# Classes whose forward can give a subset of their heads: class name -> how.
_PARTIAL = {'Tipsv2DptForDensePrediction': _tipsv2_heads}


class _TensorOut(torch.nn.Module):
    """Wrap a transformers model so it maps tensors to tensors (compile/ONNX/TRT friendly).

    One head: one tensor; several: a tuple in the order of heads (None for a head a call with
    heads= did not ask for).
    """

    def __init__(self, model: torch.nn.Module, heads: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.heads = tuple(heads)
        self.partial = _PARTIAL.get(type(model).__name__) if len(self.heads) > 1 else None

    def forward(self, pixel_values: torch.Tensor, prompt_depth: Optional[torch.Tensor] = None,
                heads: Optional[Tuple[str, ...]] = None) -> Any:
        if self.partial is not None:
            # Also for all of its heads: the class's own forward runs every head it has.
            some = self.partial(self.model, pixel_values, heads or self.heads)
            return tuple(some.get(h) for h in self.heads)
        extra = {} if prompt_depth is None else {'prompt_depth': prompt_depth}
        out = self.model(pixel_values=pixel_values, return_dict=True, **extra)
        got = tuple(next(getattr(out, a) for a in _HEAD_ATTRS[h] if getattr(out, a, None)
                         is not None) for h in self.heads)
        return got[0] if len(got) == 1 else got


def resolve_device(spec: str) -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> torch.device, with a clear error if not present."""
    if spec == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    dev = torch.device(spec)
    if dev.type == 'cuda':
        if not torch.cuda.is_available():
            raise ConfigError(
                f"model.device is '{spec}' but torch {torch.__version__} sees no CUDA GPU; "
                "use 'auto' or 'cpu', or install a CUDA build of torch.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"model.device is '{spec}' but only {torch.cuda.device_count()} CUDA device(s) "
                'are visible.')
    return dev


def resolve_dtype(precision: str, device: torch.device) -> Tuple[torch.dtype, Optional[str]]:
    """Precision name -> dtype on this device, and a note when it had to fall back."""
    if precision == 'auto':
        return (torch.float16 if device.type == 'cuda' else torch.float32), None
    dtype = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}[precision]
    if device.type == 'cpu' and dtype != torch.float32:
        return torch.float32, (f'model.precision {precision} is not used on the CPU (slow or '
                               'unsupported there); running fp32.')
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        return torch.float16, 'this GPU has no bf16 support; running fp16.'
    return dtype, None


def _looks_like_path(source: str) -> bool:
    # A hub id is 'name' or 'org/name'; anything else, or anything that exists, is a folder.
    return (Path(source).expanduser().exists() or source.startswith(('/', '.', '~'))
            or source.count('/') > 1)


def _check_local_dir(path: Path) -> None:
    if not path.is_dir():
        raise ModelLoadError(
            f"model folder '{path}' does not exist. Set model.depth / model.segmentation to a "
            'folder holding config.json and model.safetensors, or to a Hugging Face hub id.')
    if not (path / 'config.json').is_file():
        raise ModelLoadError(f"model folder '{path}' has no config.json; it is not a "
                             'transformers checkpoint (save one with save_pretrained).')
    if not any(path.glob('*.safetensors')):
        extra = (' It has PyTorch .bin weights, which dpt_ros does not load (they can run code '
                 'when unpickled); convert them to safetensors with save_pretrained('
                 'safe_serialization=True).' if any(path.glob('*.bin')) else '')
        raise ModelLoadError(f"model folder '{path}' has no .safetensors weights.{extra}")


def _read_preprocessor_config(source: str, local: Optional[Path]) -> Optional[Dict[str, Any]]:
    if local is not None:
        p = local / 'preprocessor_config.json'
    else:
        from transformers.utils import cached_file
        try:
            found = cached_file(source, 'preprocessor_config.json',
                                _raise_exceptions_for_missing_entries=False)
        except Exception:  # noqa: B902 - an absent optional file must never stop loading
            found = None
        p = Path(found) if found else None
    if p is None or not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f'{p} is not valid JSON: {exc}') from exc


def _arch_task(config: Any) -> Optional[str]:
    for arch in getattr(config, 'architectures', None) or []:
        if 'SemanticSegmentation' in arch:
            return 'segmentation'
        if 'DepthEstimation' in arch:
            return 'depth'
    return None


def _hub_unreachable(source: str) -> Optional[str]:
    """Return why the hub cannot serve an uncached id now (None if it may); fails in seconds."""
    try:
        from huggingface_hub import try_to_load_from_cache
        if isinstance(try_to_load_from_cache(source, 'config.json'), str):
            return None  # cached (`hf download ID`): transformers loads it offline too
    except Exception:  # noqa: B902 - a cache probe must never stop loading
        pass
    if os.environ.get('HF_HUB_OFFLINE', '0').lower() in ('1', 'true', 'yes'):
        return 'HF_HUB_OFFLINE is set and it is not in the Hugging Face cache'
    url = urlparse(os.environ.get('HF_ENDPOINT', 'https://huggingface.co'))
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=3).close()
    except OSError as exc:
        return f'cannot reach {url.hostname} ({exc.strerror or exc})'
    return None


def _load_config(source: str, local: Optional[Path]):
    from transformers import AutoConfig
    if local is None:
        why = _hub_unreachable(source)
        if why is not None:
            raise ModelLoadError(
                f"cannot load '{source}': it is not a local folder and the Hugging Face hub is "
                f'unreachable ({why}). Offline? Download it where there is internet '
                f'(`hf download {source} --local-dir DIR`) and set the parameter to DIR.')
    try:
        return AutoConfig.from_pretrained(str(local or source), trust_remote_code=False)
    except (OSError, ValueError) as exc:
        if local is not None:
            raise ModelLoadError(f"cannot read {local / 'config.json'}: {exc}") from exc
        raise ModelLoadError(
            f"cannot load '{source}': it is not a local folder and the Hugging Face hub could not "
            f'provide it ({first_line(exc)}). Offline? Download it where there is internet '
            f'(`hf download {source} --local-dir DIR`) and set the parameter to DIR.') from exc


def first_line(exc: BaseException) -> str:
    """Return the first line of an error message (at most 300 characters), or its type's name."""
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def checkpoint_heads(config: Any) -> Tuple[str, ...]:
    """Return the heads (HEAD_*) one forward of this checkpoint's architecture can give."""
    if config.model_type in _MULTI_HEAD:
        return (HEAD_DEPTH, HEAD_NORMALS, HEAD_SEGMENTATION)
    if config.model_type == 'depth_pro':
        return (HEAD_DEPTH, HEAD_FOV) if getattr(config, 'use_fov_model', False) else \
            (HEAD_DEPTH,)
    found = _arch_task(config)
    if found:
        return (found,)
    from transformers import AutoModelForDepthEstimation, AutoModelForSemanticSegmentation
    known = tuple(h for h, auto in ((HEAD_DEPTH, AutoModelForDepthEstimation),
                                    (HEAD_SEGMENTATION, AutoModelForSemanticSegmentation))
                  if type(config) in auto._model_mapping)
    return known or (HEAD_DEPTH,)


def model_class(config: Any, heads: Sequence[str]) -> Any:
    """Return the transformers class that gives these heads of this config in one forward.

    A concrete class (build one with cls(config), or cls.from_pretrained); ValueError when
    transformers has none for this config and task.
    """
    import transformers
    from transformers import AutoModelForDepthEstimation, AutoModelForSemanticSegmentation
    table = _MULTI_HEAD.get(config.model_type)
    if table is not None:
        return getattr(transformers, table.get(tuple(heads)) or _DENSE_CLASS[config.model_type])
    # One head per forward in these families: the first one asked for.
    auto = AutoModelForSemanticSegmentation if heads[0] == HEAD_SEGMENTATION else \
        AutoModelForDepthEstimation
    try:
        return auto._model_mapping[type(config)]
    except KeyError:
        raise ValueError(f'Unrecognized configuration class {type(config).__name__} for '
                         f'{auto.__name__}') from None


def load_transformers_model(source: str, task: str,
                            before_weights: Optional[Callable[[Any, Optional[Path]], None]] = None,
                            heads: Optional[Sequence[str]] = None
                            ) -> Tuple[torch.nn.Module, Any, Optional[Path]]:
    """Load a checkpoint through transformers, safely, with the class that gives its heads.

    heads: what one forward must give (HEAD_*; default the task's own). before_weights(config,
    local folder) runs once the config is read, so a checkpoint that will be refused is
    refused before its weights are read.
    """
    from transformers.utils import logging as hf_logging

    heads = tuple(heads or (task,))
    local = Path(source).expanduser() if _looks_like_path(source) else None
    if local is not None:
        _check_local_dir(local)
    config = _load_config(source, local)
    found = _arch_task(config)
    other = 'segmentation' if task == 'depth' else 'depth'
    if found is not None and found != task:
        raise ModelLoadError(
            f"'{source}' is a {found} checkpoint ({', '.join(config.architectures)}), given as "
            f'model.{task}; set it as model.{other} instead.')
    offered = checkpoint_heads(config)
    lacking = [h for h in heads if h not in offered]
    if lacking:
        raise ModelLoadError(
            f"'{source}' ({config.model_type}) gives {', '.join(offered)}, not "
            f"{', '.join(lacking)}.")
    if before_weights is not None:
        before_weights(config, local)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        model, info = model_class(config, heads).from_pretrained(
            str(local or source), config=config, use_safetensors=True, trust_remote_code=False,
            output_loading_info=True)
    except ValueError as exc:
        if 'Unrecognized configuration class' in str(exc):
            raise ModelLoadError(
                f"'{source}' ({config.model_type}) is not a {task} model transformers knows "
                f'({first_line(exc)}).') from exc
        raise ModelLoadError(f"cannot load '{source}': {first_line(exc)}") from exc
    except (OSError, RuntimeError, EnvironmentError) as exc:
        msg = first_line(exc)
        if local is not None:
            raise ModelLoadError(
                f"cannot read the weights in '{local}': {msg}. The file may be corrupt or "
                'truncated; copy or download it again.') from exc
        raise ModelLoadError(
            f"cannot load '{source}' ({msg}). If this machine is offline, download the model "
            f'where there is internet (`hf download {source} --local-dir DIR`) and set the '
            'parameter to DIR; dpt_ros loads safetensors weights only.') from exc
    except Exception as exc:  # noqa: B902 - safetensors raises its own error types
        raise ModelLoadError(
            f"cannot read the weights of '{source}': {first_line(exc)}. The file may be corrupt "
            'or truncated; copy or download it again.') from exc
    missing = list(info.get('missing_keys') or []) + list(info.get('mismatched_keys') or [])
    if missing:
        remote = (' Its config.json is the remote-code layout (backbone_repo), which needs '
                  'trust_remote_code; use a transformers-native copy of the checkpoint.'
                  if getattr(config, 'backbone_repo', None) else '')
        raise ModelLoadError(
            f"'{source}' lacks {len(missing)} weight(s) a {task} model needs (e.g. "
            f"{', '.join(str(k) for k in missing[:3])}); is it a checkpoint for another task "
            f'or architecture?{remote}')
    return model, config, local


def checkpoint_max_depth(config: Any) -> Optional[float]:
    """Farthest depth in metres a checkpoint declares (max_depth, ZoeDepth bins), or None."""
    bins = getattr(config, 'bin_configurations', None)
    values = [b.get('max_depth') for b in bins or [] if isinstance(b, dict)]
    values.append(getattr(config, 'max_depth', None))
    values = [float(v) for v in values if isinstance(v, (int, float)) and v > 0]
    return max(values) if values else None


def _needs_square(config: Any) -> bool:
    # ViT DPT (plain and hybrid) reshapes tokens to sqrt(N) x sqrt(N); backbone DPTs do not.
    if config.model_type != 'dpt':
        return False
    return getattr(config, 'backbone_config', None) is None or bool(config.is_hybrid)


def load_model(source: str, task: str, cfg: ModelConfig,
               log: Callable[[str], None] = LOG.info, on_host: bool = False,
               heads: Optional[Sequence[str]] = None, prompts: bool = False) -> LoadedModel:
    """Load one checkpoint for a task ('depth' or 'segmentation') as cfg says.

    heads: what one forward must give (HEAD_*; default the task's own head): e.g. depth,
    normals and segmentation of a TIPSv2-DPT checkpoint, or Depth Pro's depth and field of
    view. prompts: the caller gives every frame a metric prompt (needs_prompt models); a
    model that needs one is refused without, before its weights are read.
    on_host: keep the weights in host memory, in the precision of the configured device;
    move_model then puts them there (a managed node's configure, then activate).
    """
    device = resolve_device(cfg.device)
    dtype, note = resolve_dtype(cfg.precision, device)
    notes = [note] if note else []
    specs: List[PreprocessSpec] = []
    heads = tuple(heads or (task,))

    def processor(config: Any, local: Optional[Path]) -> None:
        if config.model_type in PROMPTED_MODEL_TYPES and not prompts:
            raise ModelLoadError(
                f"'{source}' ({config.model_type}) turns a metric prompt (a low-resolution "
                'depth from a lidar or ToF) into dense metres and gives none without one; '
                'this caller has no prompt to give it.')
        classes = int(getattr(config, 'num_labels', 0) or 0)
        if HEAD_SEGMENTATION in heads and classes > MAX_CLASSES:
            raise ModelLoadError(
                f"'{source}' has {classes} classes, but segmentation/image carries class ids "
                f'as 16-bit pixels (mono16, ids 0 to {MAX_CLASSES - 1}, as vision_msgs class '
                f'ids): use a checkpoint with at most {MAX_CLASSES} classes.')
        proc = _read_preprocessor_config(source, local)
        try:
            specs.append(PreprocessSpec.from_processor_dict(
                proc or {}, cfg, square_only=_needs_square(config), model_type=config.model_type))
        except UnsupportedProcessor as exc:
            raise ModelLoadError(f"'{source}' ({config.model_type}): {exc}") from exc
        if proc is None:
            notes.append(f"'{source}' has no preprocessor_config.json; using the "
                         f"{specs[0].kind} image processor's defaults.")

    model, config, local = load_transformers_model(source, task, processor, heads)
    spec = specs[0]
    square = _needs_square(config)
    if getattr(model, 'auxiliary_head', None) is not None:
        model.auxiliary_head = None  # training-only branch, computed on every forward otherwise
    model.eval().requires_grad_(False)
    if on_host:
        device = torch.device('cpu')
    model.to(device=device, dtype=dtype)
    if device.type == 'cuda':
        model.to(memory_format=torch.channels_last)
    labels = []
    if HEAD_SEGMENTATION in heads:
        id2label = getattr(config, 'id2label', None) or {}
        labels = [str(id2label.get(i, id2label.get(str(i), f'class_{i}')))
                  for i in range(int(config.num_labels))]
    metric = (getattr(config, 'depth_estimation_type', None) == 'metric'
              or config.model_type in _METRIC_MODEL_TYPES)
    units = 'canonical_inverse' if config.model_type == 'depth_pro' else ''
    prompted = config.model_type in PROMPTED_MODEL_TYPES
    # A prompted model's max_depth scales its sigmoid before the prompt's range is put back:
    # not a range in metres.
    max_depth = checkpoint_max_depth(config) if metric and not prompted else None
    loaded = LoadedModel(
        task=task, source=source, net=_TensorOut(model, heads).eval(), spec=spec, device=device,
        dtype=dtype, model_type=config.model_type, metric=metric, labels=labels,
        square_input=square, num_parameters=sum(p.numel() for p in model.parameters()),
        notes=notes, max_depth=max_depth, heads=heads, depth_units=units,
        needs_prompt=prompted)
    for n in notes:
        log(n)
    return loaded


def _same_checkpoint(a: str, b: str) -> bool:
    if a == b:
        return True
    if _looks_like_path(a) and _looks_like_path(b):
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    return False


def load_models(cfg: ModelConfig, log: Callable[[str], None] = LOG.info, on_host: bool = False,
                normals: bool = False, prompts: bool = False
                ) -> Tuple[Optional[LoadedModel], Optional[LoadedModel]]:
    """Load model.depth and model.segmentation: (depth model, segmentation model).

    The same checkpoint named in both (a hub id, or the same folder) is loaded once, for
    both heads: the two returned are one object, whose one forward gives depth and logits.
    normals: also ask the depth checkpoint for its normals head when it has one (TIPSv2-DPT);
    Depth Pro is asked for its field-of-view head whenever it has one.
    """
    depth = seg = None
    if cfg.depth:
        local = Path(cfg.depth).expanduser() if _looks_like_path(cfg.depth) else None
        if local is not None:
            _check_local_dir(local)
        config = _load_config(cfg.depth, local)
        offered = checkpoint_heads(config)
        heads = [HEAD_DEPTH]
        if cfg.segmentation and _same_checkpoint(cfg.depth, cfg.segmentation):
            heads.append(HEAD_SEGMENTATION)
        heads += [h for h in offered if h == HEAD_FOV or (normals and h == HEAD_NORMALS)]
        depth = load_model(cfg.depth, HEAD_DEPTH, cfg, log, on_host, heads, prompts)
        if HEAD_SEGMENTATION in heads:
            seg = depth
    if cfg.segmentation and seg is None:
        seg = load_model(cfg.segmentation, HEAD_SEGMENTATION, cfg, log, on_host)
    return depth, seg


def move_model(loaded: LoadedModel, device: torch.device) -> None:
    """Move a loaded model's weights to device, precision unchanged, back on eager torch.

    A backend's compiled form (engine, compiled graph) belongs to the old device: it is
    dropped, and the next frame applies the backend again.
    """
    if loaded.eager is not None:
        loaded.net, loaded.eager = loaded.eager, None
    loaded.backend = 'torch'
    if loaded.device == device:
        return
    loaded.net.to(device=device)
    if device.type == 'cuda':
        loaded.net.to(memory_format=torch.channels_last)
    loaded.device = device
