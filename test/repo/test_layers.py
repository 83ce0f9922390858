# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""The layers: core runs without ROS, imports run one way, the ROS layer leaves torch alone.

Imports run tools -> offline/ros -> core; device memory and models are the core's.
"""

import ast
from pathlib import Path
import subprocess
import sys

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / 'dpt_ros'

SCRIPT = r"""
import importlib.abc, sys
BLOCK = ('rclpy', 'sensor_msgs', 'std_msgs', 'rcl_interfaces', 'diagnostic_msgs',
         'builtin_interfaces', 'launch', 'launch_ros', 'cv_bridge')
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCK:
            raise ImportError(f'{name} blocked for this test')
sys.meta_path.insert(0, Block())
import pkgutil, dpt_ros
mods, ros_only = [], []
for m in (m.name for m in pkgutil.walk_packages(dpt_ros.__path__, 'dpt_ros.')):
    try:
        __import__(m)
        mods.append(m)
    except ImportError as exc:  # only the ROS layer may need ROS
        if not (m.startswith('dpt_ros.ros.') and 'blocked for this test' in str(exc)):
            raise
        ros_only.append(m)
assert 'dpt_ros.ros.node' in ros_only and 'dpt_ros.ros.scheduler' in mods, ros_only
from dpt_ros.core.config import Config
from dpt_ros.core.conversions import Frame
from dpt_ros.core.outputs import encode, EncodeOptions
from dpt_ros.core.pipeline import Pipeline
from dpt_ros.tools.sample import synthetic_scene
s = synthetic_scene(64, 48)
cfg = Config().replace({'model.depth': sys.argv[1], 'model.device': 'cpu'})
r = Pipeline(cfg, log=lambda m: None).process(Frame(s.rgb, 'rgb8'), s.intrinsics)
encoded = [o.name for o, _ in encode(r, EncodeOptions('32FC1', True))]
assert 'points' in r.arrays and 'points' in encoded and 'depth_info' in encoded
try:
    import dpt_ros.ros.node
except ImportError:
    pass
else:
    raise SystemExit('dpt_ros.ros.node imported without rclpy?')
print('OK', len(mods))
"""


def test_core_runs_without_ros(tiny_metric):
    proc = subprocess.run([sys.executable, '-c', SCRIPT, str(tiny_metric)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith('OK')
    assert int(proc.stdout.split()[1]) >= 30  # every module but the ROS layer's: imported


# Which layer may import which: tools -> offline / ros -> core, never back up or sideways.
ALLOWED = {
    'core': {'core'},
    'ros': {'core', 'ros'},
    'offline': {'core', 'offline'},
    'tools': {'core', 'ros', 'offline', 'tools'},
}


def _layer(module: str) -> str:
    parts = module.split('.')
    return parts[1] if len(parts) > 1 and parts[0] == 'dpt_ros' else ''


def _imports(path: Path) -> list:
    """Return (line, module) of every dpt_ros import in a file, lazy ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] if node.module != 'dpt_ros' else \
                [f'dpt_ros.{a.name}' for a in node.names]
            out += [(node.lineno, n) for n in names if n.startswith('dpt_ros')]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith('dpt_ros')]
    return out


def _sources() -> list:
    return sorted(p for p in PACKAGE.rglob('*.py') if p.parent != PACKAGE)


def test_every_module_lives_in_a_layer():
    top = sorted(p.name for p in PACKAGE.glob('*.py'))
    assert top == ['__init__.py'], f'modules outside core/ros/offline/tools: {top}'
    assert {p.relative_to(PACKAGE).parts[0] for p in _sources()} == set(ALLOWED)


@pytest.mark.parametrize('layer', sorted(ALLOWED))
def test_imports_run_one_way(layer):
    wrong = []
    for path in _sources():
        if path.relative_to(PACKAGE).parts[0] != layer:
            continue
        for line, module in _imports(path):
            if _layer(module) not in ALLOWED[layer]:
                wrong.append(f'{path.relative_to(PACKAGE.parent)}:{line} imports {module}')
    assert not wrong, f'{layer} may import only {sorted(ALLOWED[layer])}:\n' + '\n'.join(wrong)


def _circles(package: Path) -> list:
    """Return the sets of modules under package that import each other in a loop.

    Every import counts, lazy and TYPE_CHECKING ones included: a loop drawn in the structure is
    a loop to read, whether Python meets it at start-up or not. `from pkg import mod` points
    at mod's file; a name that is no module points at the package's __init__.py.
    """
    def name(p: Path) -> str:
        parts = p.relative_to(package.parent).with_suffix('').parts
        return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)
    files = {name(p): p for p in package.rglob('*.py')}
    graph = {}
    for mod, path in files.items():
        out = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                out |= {f'{node.module}.{a.name}' if f'{node.module}.{a.name}' in files
                        else node.module for a in node.names}
            elif isinstance(node, ast.Import):
                out |= {a.name for a in node.names}
        graph[mod] = {t for t in out if t in files and t != mod}
    # Tarjan's strongly connected components.
    order, low, stack, on, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        order[v] = low[v] = len(order)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in order:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], order[w])
        if low[v] == order[v]:
            comp = []
            while not comp or comp[-1] != v:
                comp.append(stack.pop())
                on.discard(comp[-1])
            if len(comp) > 1:
                found.append(sorted(comp))
    for v in sorted(graph):
        if v not in order:
            visit(v)
    return found


def test_no_import_circles():
    """Modules never import each other in a loop (a type-only import neither: say a Protocol)."""
    assert _circles(PACKAGE) == []


def test_circle_check_sees_a_type_only_loop(tmp_path):
    pkg = tmp_path / 'dpt_ros'
    (pkg / 'core').mkdir(parents=True)
    (pkg / '__init__.py').write_text('')
    (pkg / 'core' / '__init__.py').write_text('')
    (pkg / 'core' / 'a.py').write_text('from dpt_ros.core import b\n')
    (pkg / 'core' / 'b.py').write_text('from typing import TYPE_CHECKING\n'
                                       'if TYPE_CHECKING:\n    from dpt_ros.core.a import X\n')
    (pkg / 'core' / 'c.py').write_text('from dpt_ros.core import a\n')
    assert _circles(pkg) == [['dpt_ros.core.a', 'dpt_ros.core.b']]


def _imports_torch(path: Path) -> list:
    """Return the lines of a file that import torch (or a torch submodule), lazy ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module or ''] if isinstance(node, ast.ImportFrom) else \
            [a.name for a in node.names] if isinstance(node, ast.Import) else []
        out += [node.lineno for n in names if n.split('.')[0] == 'torch']
    return sorted(out)


def test_ros_layer_does_not_import_torch():
    """Device memory and models are the core's (Pipeline.release); the node only asks."""
    wrong = [f'{p.relative_to(PACKAGE.parent)}:{line}' for p in sorted((PACKAGE / 'ros').rglob(
        '*.py')) for line in _imports_torch(p)]
    assert not wrong, 'the ROS layer imports torch:\n' + '\n'.join(wrong)


def test_torch_check_sees_a_torch_import(tmp_path):
    bad = tmp_path / 'bad.py'
    bad.write_text('import os\ndef f():\n    import torch.cuda\nfrom torch import nn\n')
    assert _imports_torch(bad) == [3, 4]


def test_direction_check_sees_a_wrong_import(tmp_path):
    bad = tmp_path / 'bad.py'
    bad.write_text('from dpt_ros.ros.node import DptNode\n'
                   'def f():\n    from dpt_ros.tools import sample\n')
    assert [_layer(m) for _, m in _imports(bad)] == ['ros', 'tools']
