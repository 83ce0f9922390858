# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""README.md and the doc/ pages: find sections and generated tables, check links and tables."""

from pathlib import Path
import re
from typing import Dict, Iterator, List, Set, Tuple

ROOT = Path(__file__).resolve().parents[1]

_HEADING = re.compile(r'^(#{1,6})\s+(.*?)\s*#*\s*$')
# [text](target) and ![alt](target); the text may hold one level of brackets.
_LINK = re.compile(r'!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)')
_HTML_ID = re.compile(r'<a\s+(?:name|id)="([^"]+)"')
_CODE_SPAN = re.compile(r'(`+)(.+?)\1')
_DELIMITER_CELL = re.compile(r'^\s*:?-+:?\s*$')


def pages(root: Path = ROOT) -> List[Path]:
    """Return README.md and every doc/*.md page under root."""
    return [root / 'README.md'] + sorted((root / 'doc').glob('*.md'))


def prose_lines(text: str) -> Iterator[Tuple[int, str]]:
    """Yield (line number, line) of the lines outside fenced code blocks."""
    fence = None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.lstrip()
        if fence is None and stripped.startswith(('```', '~~~')):
            fence = stripped[:3]
        elif fence is not None and stripped.startswith(fence):
            fence = None
        elif fence is None:
            yield number, line


def headings(text: str) -> List[Tuple[int, int, str]]:
    """Return (line number, level, text) of every heading outside code blocks."""
    out = []
    for number, line in prose_lines(text):
        m = _HEADING.match(line)
        if m:
            out.append((number, len(m.group(1)), m.group(2)))
    return out


def slug(heading: str) -> str:
    """Return the anchor GitHub gives a heading (its rendered text, lower case, dashes)."""
    text = re.sub(r'!?\[([^\]]*)\]\([^)]*\)', r'\1', heading)  # a link shows its text
    text = re.sub(r'[`*]|<[^>]+>', '', text).strip().lower()
    return re.sub(r'[^\w\- ]', '', text).replace(' ', '-')


def anchors(text: str) -> Set[str]:
    """Return every #anchor a page offers: heading slugs (-1, -2 for repeats), <a id>s."""
    seen: Dict[str, int] = {}
    out = set(_HTML_ID.findall(text))
    for _, _, title in headings(text):
        base = slug(title)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f'{base}-{n}')
    return out


def section(title: str, root: Path = ROOT) -> str:
    """Return the section under the heading `title`, on whichever page holds it (only one may)."""
    found = []
    for page in pages(root):
        text = page.read_text()
        lines = text.splitlines()
        marks = headings(text)
        for i, (number, level, name) in enumerate(marks):
            if name == title:
                end = next((n for n, lv, _ in marks[i + 1:] if lv <= level), len(lines) + 1)
                found.append('\n'.join(lines[number - 1:end - 1]))
    assert len(found) == 1, f'heading {title!r} is on {len(found)} pages, not exactly one'
    return found[0]


def generated_block(marker: str, root: Path = ROOT) -> str:
    """Return the table after the comment `<!-- marker...-->`, on whichever page holds it."""
    found = []
    for page in pages(root):
        text = page.read_text()
        for m in re.finditer(rf'^<!-- {re.escape(marker)}.*?-->\n', text, re.M | re.S):
            lines = []
            for line in text[m.end():].splitlines():
                if not line.startswith('|'):
                    break
                lines.append(line)
            found.append((page, '\n'.join(lines)))
    assert len(found) == 1, \
        f'marker <!-- {marker} is found {len(found)} times: {[str(p) for p, _ in found]}'
    assert found[0][1], f'no table follows <!-- {marker} in {found[0][0]}'
    return found[0][1]


def page_holding(marker: str, root: Path = ROOT) -> str:
    """Return the text of the one page that holds marker."""
    holding = [p.read_text() for p in pages(root) if marker in p.read_text()]
    assert len(holding) == 1, f'{marker!r} is on {len(holding)} pages, not exactly one'
    return holding[0]


def links(text: str) -> Iterator[Tuple[int, str]]:
    """Yield (line number, target) of the links outside code blocks and code spans."""
    for number, line in prose_lines(text):
        for target in _LINK.findall(_CODE_SPAN.sub('', line)):
            yield number, target


def broken_links(files: List[Path], root: Path = ROOT) -> List[str]:
    """Return 'file:line: target (why)' for each relative link or #anchor that does not resolve.

    Web links are not followed (no network); every other link must name a file or folder in
    the repository, and an #anchor a heading (GitHub's slug) of the Markdown page it points at.
    """
    root = root.resolve()
    out = []
    for page in files:
        text = page.read_text()
        for number, target in links(text):
            if re.match(r'^[a-z][a-z0-9+.-]*:', target, re.I):
                continue
            where = f'{page.relative_to(root)}:{number}: {target}'
            path, _, anchor = target.partition('#')
            dest = (page.parent / path).resolve() if path else page.resolve()
            if dest != root and root not in dest.parents:
                out.append(f'{where} (outside the repository)')
            elif not dest.exists():
                out.append(f'{where} (no such file)')
            elif anchor and dest.suffix != '.md':
                out.append(f'{where} (an anchor into a file that is not a Markdown page)')
            elif anchor and anchor not in anchors(dest.read_text()):
                out.append(f'{where} (no heading with this anchor)')
    return out


def _cells(row: str) -> int:
    # GitHub splits table cells at every pipe not escaped as \|, inside code spans too.
    inner = row.strip()
    inner = inner[1:] if inner.startswith('|') else inner
    inner = inner[:-1] if inner.endswith('|') and not inner.endswith('\\|') else inner
    return len(re.split(r'(?<!\\)\|', inner))


def ragged_table_rows(text: str) -> List[str]:
    """Return 'line N: k cells, header has m' for table rows whose cell count differs."""
    out = []
    lines = list(prose_lines(text))
    i = 0
    while i + 1 < len(lines):
        (_, head), (_, delim) = lines[i], lines[i + 1]
        cells = delim.strip().strip('|').split('|')
        if head.lstrip().startswith('|') and all(_DELIMITER_CELL.match(c) for c in cells):
            want = _cells(head)
            j = i + 1
            while j < len(lines) and lines[j][1].lstrip().startswith('|'):
                if _cells(lines[j][1]) != want:
                    out.append(f'line {lines[j][0]}: {_cells(lines[j][1])} cells, '
                               f'header has {want}')
                j += 1
            i = j
        else:
            i += 1
    return out
