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
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import urlparse

import torch

from dpt_ros.core.config import ConfigError, ModelConfig
from dpt_ros.core.preprocess import PreprocessSpec, UnsupportedProcessor

LOG = logging.getLogger('dpt_ros')

# Architectures whose raw output is already metres (besides configs that say so).
_METRIC_MODEL_TYPES = ('zoedepth', 'glpn')


class ModelLoadError(RuntimeError):
    """A checkpoint could not be loaded; the message names it and says how to fix it."""


@dataclass
class LoadedModel:
    """A model ready for inference, with what the rest of the pipeline needs to know of it."""

    task: str                      # 'depth' or 'segmentation'
    source: str                    # the folder or hub id it came from
    net: torch.nn.Module           # pixel_values -> predicted_depth (B,h,w) or logits (B,C,h,w)
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

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Run the network on preprocessed pixel values (already on the device, in dtype)."""
        return self.net(pixel_values)


class _TensorOut(torch.nn.Module):
    """Wrap a transformers model so it maps a tensor to one tensor (compile/ONNX/TRT friendly)."""

    def __init__(self, model: torch.nn.Module, task: str) -> None:
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=pixel_values, return_dict=True)
        return out.predicted_depth if self.task == 'depth' else out.logits


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


def load_transformers_model(source: str, task: str,
                            before_weights: Optional[Callable[[Any, Optional[Path]], None]] = None
                            ) -> Tuple[torch.nn.Module, Any, Optional[Path]]:
    """Load a depth or segmentation checkpoint through transformers' Auto classes, safely.

    before_weights(config, local folder) runs once the config is read, so a checkpoint that
    will be refused is refused before its weights are read.
    """
    from transformers import AutoModelForDepthEstimation, AutoModelForSemanticSegmentation
    from transformers.utils import logging as hf_logging

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
    if before_weights is not None:
        before_weights(config, local)
    auto = AutoModelForDepthEstimation if task == 'depth' else AutoModelForSemanticSegmentation
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        model, info = auto.from_pretrained(
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
        raise ModelLoadError(
            f"'{source}' lacks {len(missing)} weight(s) a {task} model needs (e.g. "
            f"{', '.join(str(k) for k in missing[:3])}); is it a checkpoint for another task "
            'or architecture?')
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
               log: Callable[[str], None] = LOG.info, on_host: bool = False) -> LoadedModel:
    """Load one checkpoint for a task ('depth' or 'segmentation') as cfg says.

    on_host: keep the weights in host memory, in the precision of the configured device;
    move_model then puts them there (a managed node's configure, then activate).
    """
    device = resolve_device(cfg.device)
    dtype, note = resolve_dtype(cfg.precision, device)
    notes = [note] if note else []
    specs: List[PreprocessSpec] = []

    def processor(config: Any, local: Optional[Path]) -> None:
        proc = _read_preprocessor_config(source, local)
        try:
            specs.append(PreprocessSpec.from_processor_dict(
                proc or {}, cfg, square_only=_needs_square(config), model_type=config.model_type))
        except UnsupportedProcessor as exc:
            raise ModelLoadError(f"'{source}' ({config.model_type}): {exc}") from exc
        if proc is None:
            notes.append(f"'{source}' has no preprocessor_config.json; using the "
                         f"{specs[0].kind} image processor's defaults.")

    model, config, local = load_transformers_model(source, task, processor)
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
    if task == 'segmentation':
        id2label = getattr(config, 'id2label', None) or {}
        labels = [str(id2label.get(i, id2label.get(str(i), f'class_{i}')))
                  for i in range(int(config.num_labels))]
    metric = (getattr(config, 'depth_estimation_type', None) == 'metric'
              or config.model_type in _METRIC_MODEL_TYPES)
    loaded = LoadedModel(
        task=task, source=source, net=_TensorOut(model, task).eval(), spec=spec, device=device,
        dtype=dtype, model_type=config.model_type, metric=metric, labels=labels,
        square_input=square, num_parameters=sum(p.numel() for p in model.parameters()),
        notes=notes, max_depth=checkpoint_max_depth(config) if metric else None)
    for n in notes:
        log(n)
    return loaded


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
