# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""The one table of ROS parameters, built from config.py, and params-file reading (no rclpy)."""

from __future__ import annotations

from dataclasses import dataclass
import difflib
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from dpt_ros.core.config import Config, config_from_flat, ConfigError, iter_settings


@dataclass(frozen=True)
class ParamSpec:
    """One ROS parameter: name, default, type, description, range or choices, reload need."""

    name: str
    default: Any
    type: type
    description: str
    range: Optional[Tuple[float, float]]
    choices: Tuple[str, ...]
    read_only: bool
    items: str  # what a list parameter holds (_opt's items)

    def describe(self, managed: bool = False) -> str:
        """Return the description with allowed values, as `ros2 param describe` shows it.

        managed: for the lifecycle node, where a setting configure reads can be set while
        the node is unconfigured.
        """
        text = self.description
        if self.choices:
            text += f" One of: {', '.join(self.choices)}."
        if self.read_only and managed:
            text += (' Read at configure: settable while the node is unconfigured, refused '
                     'while inactive or active.')
        elif self.read_only:
            text += ' Read-only: change it in the params file and restart.'
        return text

    def constraint(self) -> str:
        """Human-readable allowed values."""
        if self.choices:
            return ' | '.join(self.choices)
        if self.range is not None:
            return f'[{_fmt(self.range[0])}, {_fmt(self.range[1])}]'
        if self.type is bool:
            return 'true | false'
        if self.type is tuple:
            return f'list of {self.items}'
        return 'text'


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return 'true' if v else 'false'
    if isinstance(v, float):
        return f'{v:g}'
    if isinstance(v, tuple):
        return '[' + ', '.join(v) + ']'
    return str(v)


def param_table(cfg: Optional[Config] = None) -> List[ParamSpec]:
    """Every parameter the node declares, in declaration order, defaults from cfg."""
    return [ParamSpec(name, value, ftype, meta['description'], meta['range'],
                      tuple(meta['choices']), bool(meta['read_only']),
                      meta['items'])
            for name, value, meta, ftype in iter_settings(cfg)]


def markdown_table() -> str:
    """Render the parameter table as markdown, as it appears in doc/parameters.md."""
    rows = ['| parameter | default | allowed | live | description |',
            '|---|---|---|---|---|']
    for p in param_table():
        default = f"'{p.default}'" if p.type is str else _fmt(p.default)
        live = 'no' if p.read_only else 'yes'
        # A bare | would split the cell (GitHub and rosdoc2's MyST alike): escape it.
        allowed, text = (t.replace('|', r'\|') for t in (p.constraint(), p.description))
        rows.append(f'| `{p.name}` | `{default}` | {allowed} | {live} | {text} |')
    return '\n'.join(rows)


def _flatten(prefix: str, tree: Dict[str, Any], out: Dict[str, Any]) -> None:
    for key, value in tree.items():
        name = f'{prefix}.{key}' if prefix else str(key)
        if isinstance(value, dict):
            _flatten(name, value, out)
        else:
            out[name] = value


def read_params_file(path: Union[str, Path], node_name: str = 'dpt') -> Dict[str, Any]:
    """Read a ROS 2 params YAML into dotted names: '/**' first, then the node's own section."""
    import yaml  # a ROS dependency (python3-yaml); only needed for files

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f'cannot read params file {path}: {exc.strerror}.') from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f'params file {path} is not valid YAML: {exc}') from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"params file {path} must map node names to 'ros__parameters'.")
    flat: Dict[str, Any] = {}
    keys = ['/**', node_name, '/' + node_name.lstrip('/')]
    keys += [k for k in doc if isinstance(k, str) and k.rstrip('/').endswith('/' + node_name)]
    for key in dict.fromkeys(keys):
        section = doc.get(key)
        if isinstance(section, dict) and isinstance(section.get('ros__parameters'), dict):
            _flatten('', section['ros__parameters'], flat)
    return flat


# The dotted groups of the parameters (depth., anchors., cameras. ...): an unknown name inside
# one is a mistake; a name outside them may be another node's (a shared /** section).
OWN_GROUPS = tuple(sorted({name.split('.')[0] + '.' for name, *_ in iter_settings()}))


def closest_name(name: str) -> Optional[str]:
    """Return the parameter a name not ours most looks like (a typo?), or None."""
    close = difflib.get_close_matches(name, [p.name for p in param_table()], 1, 0.75)
    return close[0] if close else None


def config_from_params_file(path: Union[str, Path], node_name: str = 'dpt',
                            overrides: Optional[Dict[str, Any]] = None,
                            warn: Optional[Callable[[str], None]] = None) -> Config:
    """Build a validated Config from a params file, reading it as the node does.

    Unknown names inside the parameter groups (depth.mod) are refused; names outside them
    are ignored, since a shared /** section may hold other nodes' settings; warn is told of
    those that look like a mistyped parameter.
    """
    flat = read_params_file(path, node_name)
    flat.update(overrides or {})
    names = [p.name for p in param_table()]
    unknown = sorted(k for k in flat if k not in names and k not in ROS_ONLY_PARAMS
                     and k.startswith(OWN_GROUPS))
    if unknown:
        raise ConfigError(f"unknown parameter(s) in {path}: {', '.join(unknown)}.")
    foreign = sorted(k for k in flat if k not in names and k not in ROS_ONLY_PARAMS
                     and not k.startswith(OWN_GROUPS + ('qos_overrides.',)))
    for name in foreign:
        close = closest_name(name)
        if close and warn is not None:
            warn(f"parameter '{name}' in {path} is not a dpt_ros parameter and is ignored: "
                 f"did you mean '{close}'?")
    return config_from_flat({k: v for k, v in flat.items() if k in names})


def parse_camera_list(text: str) -> List[str]:
    """Parse a camera list as a launch argument gives it: 'front,rear' or '[front, rear]'."""
    text = text.strip()
    if text.startswith('[') and text.endswith(']'):
        text = text[1:-1]
    names = [n.strip().strip('\'"') for n in text.split(',')]
    return [n for n in names if n]


# Parameters the node accepts that are not dpt_ros settings.
ROS_ONLY_PARAMS = ('use_sim_time', 'segmentation.class_names')
