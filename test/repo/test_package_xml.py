# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""package.xml and the robot requirements cover every module the package imports."""

import ast
from pathlib import Path
import re
import sys
import xml.etree.ElementTree as ET

ROOT = Path(__file__).resolve().parents[2]

# Python module -> rosdep key (rosdistro rosdep/python.yaml) where the two names differ.
ROSDEP_KEYS = {'numpy': 'python3-numpy', 'cv2': 'python3-opencv', 'yaml': 'python3-yaml'}
# From pip on a robot (requirements/robot.txt); huggingface_hub comes with transformers.
ROBOT_PIP = {'torch', 'transformers', 'safetensors'}
# Optional extras, each imported only by the tool that needs it and installed by hand.
OPTIONAL = {'huggingface_hub', 'rosbags', 'mcap', 'matplotlib', 'tensorrt', 'onnx', 'onnxruntime',
            'openvino', 'ray'}


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name.split('.')[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split('.')[0]


def _depends(kinds):
    root = ET.parse(ROOT / 'package.xml').getroot()
    return {el.text.strip() for kind in kinds for el in root.iter(kind)}


def test_every_imported_module_has_a_package_xml_key():
    run = _depends(('depend', 'exec_depend'))
    sources = sorted((ROOT / 'dpt_ros').rglob('*.py')) + sorted((ROOT / 'launch').glob('*.py'))
    missing = {}
    for path in sources:
        for mod in _imports(path):
            if mod in sys.stdlib_module_names or mod == 'dpt_ros' or mod in ROBOT_PIP | OPTIONAL:
                continue
            if ROSDEP_KEYS.get(mod, mod) not in run:
                missing.setdefault(mod, path.name)
    assert not missing, f'imported but not in package.xml (module: first file): {missing}'


def test_apt_python_modules_are_rosdep_keys_and_never_pip_requirements_on_a_robot():
    run = _depends(('depend', 'exec_depend'))
    assert set(ROSDEP_KEYS.values()) <= run
    robot = (ROOT / 'requirements' / 'robot.txt').read_text()
    names = {re.split(r'[<>=!~\[; ]', ln.strip())[0].lower()
             for ln in robot.splitlines() if ln.strip() and not ln.startswith(('#', '-'))}
    assert names == ROBOT_PIP, names
    assert not names & {'numpy', 'opencv-python', 'opencv-python-headless', 'pyyaml'}


def test_robot_requirements_keep_numpy_below_2():
    robot = (ROOT / 'requirements' / 'robot.txt').read_text()
    assert '-c robot-constraints.txt' in robot.splitlines()
    lines = [ln.strip() for ln in (ROOT / 'requirements' / 'robot-constraints.txt').read_text()
             .splitlines() if ln.strip() and not ln.startswith('#')]
    assert lines == ['numpy<2']
