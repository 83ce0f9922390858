# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Where dpt_bag writes: output paths resolved, checked writable, and only its own replaced.

An output bag is written into a hidden staging folder beside it (`.NAME.partial/NAME`) and
moved into place when complete, with the completion marker written last. What dpt_bag may
delete is therefore narrow: a staging folder holding nothing but a bag, and, with --force, an
output folder holding nothing but a bag and the marker (or nothing at all). Everything else
(a recording, a folder of recordings, a file, the folder the user is in) is refused before
the model loads, and the deleting functions here check again right before they delete.
"""

from __future__ import annotations

import os
from pathlib import Path
import shutil
import tempfile
from typing import Iterable, Optional

from dpt_ros.offline.bag import BagError

MARKER = 'dpt_bag_complete.json'
_BAG_SUFFIXES = ('.mcap', '.db3', '.zstd')
_SQLITE_SIDE_FILES = ('.db3-journal', '.db3-wal', '.db3-shm')


def output_path(output: str) -> Path:
    """Return the output as an absolute path whose last part is a name, not `.` or `..`.

    `Path('.').name` is empty: a staging folder beside it would be `./..partial`, and what is
    removed as 'the staging folder's parent' would be the current folder. Such an output is
    resolved to the folder it names; any other keeps its parts as given (symlinks too, so
    messages show them), made absolute.
    """
    p = Path(output).expanduser()
    return p.resolve() if p.name in ('', '..') else p.absolute()


def staging(dst: Path) -> Path:
    """Return the folder an output bag is written in before it is moved to dst."""
    # The inner folder keeps the bag's name: rosbags names the storage file after it.
    return dst.parent / f'.{dst.name}.partial' / dst.name


def _bag_file(path: Path) -> bool:
    """Whether path is a file a rosbag2 writer (or dpt_bag's marker) leaves in a bag folder."""
    return path.is_file() and not path.is_symlink() and (
        path.name in ('metadata.yaml', MARKER) or path.suffix in _BAG_SUFFIXES
        or path.name.endswith(_SQLITE_SIDE_FILES))


def _listing(names: Iterable[str], most: int = 4) -> str:
    names = sorted(names)
    more = f' and {len(names) - most} more' if len(names) > most else ''
    return ', '.join(names[:most]) + more


def refusal(dst: Path) -> Optional[str]:
    """Return why an existing dst must never be replaced, or None when dpt_bag may replace it.

    Replaceable: a dpt_bag output (its marker beside bag files only) or an empty folder. A
    folder holding a bag without the marker is a recording, even when it looks like a bag.
    """
    if not dst.exists():
        return 'is a symlink to nothing' if dst.is_symlink() else None
    if not dst.is_dir():
        return 'is a file'
    children = list(dst.iterdir())
    if not children:
        return None
    held = _listing(c.name for c in children)
    if not (dst / MARKER).is_file():
        return f'holds {held} and is not a dpt_bag output (it has no {MARKER})'
    extra = [c.name for c in children if not _bag_file(c)]
    if extra:
        return f'is a dpt_bag output but also holds {_listing(extra)}'
    return None


def _staging_refusal(partial: Path, name: str) -> Optional[str]:
    """Why the staging folder `partial` is not dpt_bag's to clear (None: it is, or is absent)."""
    if not partial.exists() and not partial.is_symlink():
        return None
    if partial.is_symlink() or not partial.is_dir():
        return 'is not a folder'
    children = list(partial.iterdir())
    inner = partial / name
    if any(c != inner for c in children) or (inner in children and (
            inner.is_symlink() or not inner.is_dir()
            or not all(_bag_file(f) for f in inner.iterdir()))):
        return f'holds {_listing(str(c.relative_to(partial)) for c in partial.rglob("*"))}'
    return None


def check_target(dst: Path) -> None:
    """Raise BagError when dst, or the staging folder beside it, is not dpt_bag's to replace."""
    why = refusal(dst)
    if why is not None:
        raise BagError(f"output '{dst}' {why}: dpt_bag never deletes it; move it away or "
                       'choose another output')
    real, here = dst.resolve(), Path.cwd().resolve()
    if dst.exists() and (real == here or real in here.parents):
        # Replacing it would leave the shell in a deleted folder that looks emptied.
        where = 'is' if real == here else 'holds'
        raise BagError(f"output '{dst}' {where} the folder you are in: an output bag is a "
                       'folder of its own that dpt_bag makes; give it a new name (e.g. '
                       './NAME)')
    partial = staging(dst).parent
    why = _staging_refusal(partial, dst.name)
    if why is not None:
        raise BagError(f"'{partial}', where dpt_bag stages the output '{dst}', {why}: "
                       'dpt_bag did not write that and never deletes it; move it away')


def check_writable(folder: Path, what: str) -> None:
    """Raise BagError unless a file can be made in folder (or in the folder that would hold it).

    A probe file is created and removed at once; nothing else is written, no folder created.
    """
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = '' if existing == folder else f" cannot be made: '{existing}'"
        raise BagError(f"{what} '{folder}'{where} is a file")
    try:
        fd, probe = tempfile.mkstemp(prefix='.dpt_bag_probe_', dir=existing)
    except OSError as exc:
        raise BagError(f"{what} '{folder}' cannot be written: no file can be made in "
                       f"'{existing}' ({exc.strerror or exc})") from exc
    os.close(fd)
    os.unlink(probe)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def clear_staging(dst: Path) -> None:
    """Remove the staging folder of dst left by a killed run; BagError if it is not ours."""
    partial = staging(dst).parent
    why = _staging_refusal(partial, dst.name)
    if why is not None:
        raise BagError(f"'{partial}' {why}: dpt_bag did not write that and never deletes it")
    _remove(partial)


def remove_own(partial: Path) -> None:
    """Remove a staging folder this run created (whatever the writer left in it)."""
    if partial.name.startswith('.') and partial.name.endswith('.partial'):
        _remove(partial)


def replace(dst: Path) -> None:
    """Remove dst so a finished output can take its place; BagError if it is not ours."""
    why = refusal(dst)
    if why is not None:
        raise BagError(f"output '{dst}' {why}: dpt_bag never deletes it")
    _remove(dst)
