# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Lint as ament would: flake8 (ament settings in setup.cfg), copyright, package.xml.

And Python 3.10 syntax everywhere, the Python of Humble (Ubuntu 22.04), which nothing here runs.
"""

import ast
from pathlib import Path
import re
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
    """Every Python file parses as Python 3.10 (Humble): no except*, x[*a], PEP 701 f-strings."""
    problems = [p for path in PY310_FILES for p in newer_syntax(path)]
    assert not problems, '\n'.join(problems)


def test_python_310_syntax_check_catches_newer_syntax(tmp_path):
    newer = {'except_star.py': 'try:\n    pass\nexcept* ValueError:\n    pass\n',  # 3.11
             'star_index.py': 'x = a[1, *b]\n',                                     # 3.11
             'star_annotation.py': 'def f(*args: *Ts):\n    pass\n',               # 3.11
             'type_alias.py': 'type Point = tuple[float, float]\n'}                 # 3.12
    older = {'match.py': 'match x:\n    case [1, *rest]:\n        pass\n',          # 3.10
             'with.py': 'with (open(a) as b,\n      open(c) as d):\n    pass\n',     # 3.10
             'fstring.py': "s = f'{n:#x}' + f\"{', '.join(x)!r:>{w}}\"\n"}
    for name, text in {**newer, **older}.items():
        (tmp_path / name).write_text(text)
    found = {name: newer_syntax(tmp_path / name) for name in [*newer, *older]}
    assert all(found[name] for name in newer), found
    assert not any(found[name] for name in older), found
    assert 'Exception groups' in found['except_star.py'][0]
    assert found['star_index.py'][0].endswith('star_index.py:1: x[*a] needs Python 3.11')


# f-strings only Python 3.12 reads (PEP 701), then ones 3.10 reads (the first seven mean the same).
FSTRINGS_312 = ['f"{"a"}"', "f'{'\\n'.join(x)}'", "f'{x  # why\n}'", 'f"{f"{x}"}"',
                "f'{x\n}'", 'f"""{"""a"""}"""', "f'{d['k']}'"]
FSTRINGS_310 = ['f"{\'a\'}"', "f'{chr(10).join(x)}'", "f'{x}'  # why", 'f"{f\'{x}\'}"',
                "f'{x}'", 'f"""{"a"}"""', 'f\'{d["k"]}\'', "rf'\\d{x}\\{{'",
                "f'{ {\"a\": 1}[\"a\"] }'", "f'{x!r:>{w}.{p}}' 'b' F\"{y=}\"",
                "f'{n:#x}{a[1:2]}{(lambda: 1)()}'"]


def test_fstring_rules_are_those_of_python_310():
    """Flag PEP 701 f-strings here: ast's feature_version is best-effort, not a 3.10 parser."""
    assert all(fstring_problem(s) for s in FSTRINGS_312), [
        s for s in FSTRINGS_312 if not fstring_problem(s)]
    assert not any(fstring_problem(s) for s in FSTRINGS_310), [
        (s, fstring_problem(s)) for s in FSTRINGS_310 if fstring_problem(s)]


@pytest.mark.skipif(sys.version_info >= (3, 12), reason='Python 3.12 reads PEP 701 f-strings')
def test_fstring_rules_agree_with_this_python():
    """Before 3.12 the interpreter itself says which f-strings are 3.10 syntax."""
    for text in FSTRINGS_312 + FSTRINGS_310:
        try:
            compile(text, '<fstring>', 'eval')
            ok = True
        except SyntaxError:
            ok = False
        assert ok == (not fstring_problem(text)), text


def newer_syntax(path: Path) -> list:
    """Return 'file:line: why' wherever path needs a Python newer than 3.10 (Humble's)."""
    source = path.read_text()
    try:
        tree = ast.parse(source, str(path), feature_version=PY310)
    except SyntaxError as exc:  # except*, type statements, ... (3.11, 3.12)
        return [f'{path}:{exc.lineno}: {exc.msg}']
    found = []
    todo = [tree]
    while todo:
        node = todo.pop()
        why = ''
        if isinstance(node, ast.JoinedStr):  # the outermost f-string (nested ones within)
            why = fstring_problem(ast.get_source_segment(source, node))
        elif isinstance(node, ast.Subscript) and any(
                isinstance(e, ast.Starred) for e in getattr(node.slice, 'elts', [node.slice])):
            why = 'x[*a] needs Python 3.11'  # PEP 646; feature_version lets it by
        elif isinstance(node, ast.arguments) and node.vararg is not None and \
                isinstance(node.vararg.annotation, ast.Starred):
            why = '*args: *Ts needs Python 3.11'
        if why:
            found.append(f'{path}:{node.lineno}: {why}' if hasattr(node, 'lineno') else
                         f'{path}: {why}')
        if not isinstance(node, ast.JoinedStr):
            todo.extend(ast.iter_child_nodes(node))
    return found


_LITERAL = re.compile(r'(?P<prefix>[rRbBuUfF]{0,2})(?P<quote>\'\'\'|"""|\'|")')
_GAP = re.compile(r'(?:\s|\\\n|#[^\n]*)*')  # between implicitly joined literals


def fstring_problem(text: str) -> str:
    """Return why an f-string's source needs Python 3.12 ('' when 3.10 reads it).

    text: implicitly joined string literals, one an f-string at least. Up to 3.11 an f-string
    ends at the first unescaped closing quote, as any string does, and its expressions hold no
    backslash, no comment and, in a one-line string, no line break; 3.12 lifted all of that
    (PEP 701) and ast's feature_version does not check it.
    """
    pep701 = 'f-string as only Python 3.12 reads it (PEP 701): '
    i = _GAP.match(text).end()
    while i < len(text):
        m = _LITERAL.match(text, i)
        if m is None:
            return pep701 + 'a string inside reuses its quotes'
        quote, start = m['quote'], m.end()
        i = start
        while i < len(text) and not text.startswith(quote, i):
            i += 2 if text[i] == '\\' else 1
        if i >= len(text):
            return pep701 + 'a string inside reuses its quotes'
        body = text[start:i]
        i = _GAP.match(text, i + len(quote)).end()
        if len(quote) == 1 and '\n' in body:
            return pep701 + 'a line break inside a one-line string'
        if 'f' in m['prefix'].lower():
            why = _expression_problem(body)
            if why:
                return pep701 + why
    return ''


def _expression_problem(body: str) -> str:
    """Return what in the replacement fields of an f-string only Python 3.12 reads ('': none)."""
    stack = []  # 'field' (a replacement field), 'spec' (its format spec) or an open bracket
    j = 0
    while j < len(body):
        c = body[j]
        if not stack or stack[-1] == 'spec':  # literal text
            if not stack and body.startswith(('{{', '}}'), j):
                j += 1
            elif c == '{':
                stack.append('field')
            elif c == '}':
                stack.pop()  # the format spec ends with its field
        elif c == '\\':
            return 'a backslash in an expression'
        elif c == '#':
            return 'a comment in an expression'
        elif c in '\'"':
            end = body.find(c, j + 1)
            if end < 0:
                return 'a string inside reuses its quotes'
            if '\\' in body[j:end]:
                return 'a backslash in an expression'
            j = end
        elif c in '([{':
            stack.append(c)
        elif c in ')]}':
            stack.pop()
        elif c == ':' and stack[-1] == 'field':
            stack[-1] = 'spec'
        j += 1
    return 'an expression left open' if stack else ''
