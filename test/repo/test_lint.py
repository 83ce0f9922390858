# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Lint as ament would: flake8 (ament settings in setup.cfg), copyright, package.xml."""

from pathlib import Path
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

ROOT = Path(__file__).resolve().parents[2]
PY_FILES = sorted([*ROOT.glob('dpt_ros/**/*.py'), *ROOT.glob('test/**/*.py'),
                   *ROOT.glob('launch/*.py'), ROOT / 'setup.py'])


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
