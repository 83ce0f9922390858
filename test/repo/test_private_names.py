# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""No module of the package uses another module's private names (a leading underscore)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / 'dpt_ros'


def _private_uses(path: Path) -> list:
    """Return 'line: name' for each private name of another dpt_ros module used in a file."""
    tree = ast.parse(path.read_text())
    modules, found = {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or '').startswith('dpt_ros'):
            for a in node.names:
                modules[a.asname or a.name] = f'{node.module}.{a.name}'
                if a.name.startswith('_') and not a.name.startswith('__'):
                    found.append(f'{node.lineno}: imports {node.module}.{a.name}')
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith('dpt_ros'):
                    modules[a.asname or a.name.split('.')[0]] = a.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in modules and node.attr.startswith('_')
                and not node.attr.startswith('__')):
            found.append(f'{node.lineno}: uses {node.value.id}.{node.attr}')
    return found


def test_no_private_name_crosses_a_module():
    wrong = [f'{p.relative_to(PACKAGE.parent)}:{use}' for p in sorted(PACKAGE.rglob('*.py'))
             for use in _private_uses(p)]
    assert not wrong, 'make these public or move them:\n' + '\n'.join(wrong)


def test_the_check_sees_both_kinds(tmp_path):
    bad = tmp_path / 'bad.py'
    bad.write_text('from dpt_ros.core.conversions import _buffer\n'
                   'from dpt_ros.tools import sample\n'
                   'sample._preset_config("tiny-depth")\n')
    assert _private_uses(bad) == ['1: imports dpt_ros.core.conversions._buffer',
                                  '3: uses sample._preset_config']
