# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Lint as ament would: flake8 (ament settings in setup.cfg), copyright, package.xml.

And Python 3.10 syntax everywhere, the Python of Humble (Ubuntu 22.04), which nothing here runs.
"""

import ast
from pathlib import Path
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

ROOT = Path(__file__).resolve().parents[2]
PY_FILES = sorted([*ROOT.glob('dpt_ros/**/*.py'), *ROOT.glob('test/**/*.py'),
                   *ROOT.glob('launch/*.py'), ROOT / 'setup.py'])
# What Humble's Python 3.10 imports, launches or tests (colcon test runs test/ there too).
PY310_FILES = sorted({*PY_FILES, *ROOT.glob('launch/**/*.py'), *ROOT.glob('scripts/**/*.py')})
PY310 = (3, 10)


def test_flake8():
    pytest.importorskip('flake8', reason='flake8 is not installed (requirements/test.txt)')
    proc = subprocess.run([sys.executable, '-m', 'flake8', *map(str, PY_FILES)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_copyright_headers():
    missing = [str(p.relative_to(ROOT)) for p in PY_FILES
               if not p.read_text().startswith('# Copyright ')]
    assert not missing, missing


def test_package_xml():
    path = ROOT / 'package.xml'
    if shutil.which('xmllint'):
        subprocess.run(['xmllint', '--noout', str(path)], check=True)
    root = ET.parse(path).getroot()
    assert root.tag == 'package' and root.get('format') == '3'
    assert root.findtext('name') == 'dpt_ros'
    deps = {e.text for e in root.findall('exec_depend')}
    for d in ('rclpy', 'sensor_msgs', 'std_msgs', 'builtin_interfaces', 'diagnostic_msgs'):
        assert d in deps, d
    assert root.find('export').findtext('build_type') == 'ament_python'
    version = root.findtext('version')
    assert version in (ROOT / 'setup.py').read_text()


def test_python_310_syntax():
    """Every Python file parses as Python 3.10 (Humble): no except*, x[*a], type statements.

    CI's Python 3.11 refuses 3.12's f-strings (PEP 701) by itself; ast's feature_version does
    not flag them, so a 3.12 interpreter running this test would let them by.
    """
    problems = [p for path in PY310_FILES for p in newer_syntax(path)]
    assert not problems, '\n'.join(problems)


def test_python_310_syntax_check_catches_newer_syntax(tmp_path):
    newer = {'except_star.py': 'try:\n    pass\nexcept* ValueError:\n    pass\n',  # 3.11
             'star_index.py': 'x = a[1, *b]\n',                                     # 3.11
             'star_annotation.py': 'def f(*args: *Ts):\n    pass\n',               # 3.11
             'type_alias.py': 'type Point = tuple[float, float]\n'}                 # 3.12
    older = {'match.py': 'match x:\n    case [1, *rest]:\n        pass\n',          # 3.10
             'with.py': 'with (open(a) as b,\n      open(c) as d):\n    pass\n',     # 3.10
             'fstring.py': "s = f'{n:#x}'\n"}
    for name, text in {**newer, **older}.items():
        (tmp_path / name).write_text(text)
    found = {name: newer_syntax(tmp_path / name) for name in [*newer, *older]}
    assert all(found[name] for name in newer), found
    assert not any(found[name] for name in older), found
    assert 'Exception groups' in found['except_star.py'][0]
    assert found['star_index.py'][0].endswith('star_index.py:1: x[*a] needs Python 3.11')


def newer_syntax(path: Path) -> list:
    """Return 'file:line: why' wherever path needs a Python newer than 3.10 (Humble's)."""
    source = path.read_text()
    try:
        tree = ast.parse(source, str(path), feature_version=PY310)
    except SyntaxError as exc:  # except*, type statements, ... (3.11, 3.12)
        return [f'{path}:{exc.lineno}: {exc.msg}']
    found = []
    for node in ast.walk(tree):
        why = ''
        if isinstance(node, ast.Subscript) and any(
                isinstance(e, ast.Starred) for e in getattr(node.slice, 'elts', [node.slice])):
            why = 'x[*a] needs Python 3.11'  # PEP 646; feature_version lets it by
        elif isinstance(node, ast.arguments) and node.vararg is not None and \
                isinstance(node.vararg.annotation, ast.Starred):
            why = '*args: *Ts needs Python 3.11'
        if why:
            found.append(f'{path}:{getattr(node, "lineno", "?")}: {why}')
    return found
