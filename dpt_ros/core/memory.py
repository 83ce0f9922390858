# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Keep the memory a frame frees for the next frame: glibc malloc settings (memory.keep_freed).

Every frame allocates and frees the same multi-megabyte buffers (activations, the image as
floats, depth, the cloud; the node's publishers keep their own, dpt_ros.ros.serialized). With
glibc's defaults each buffer over the mmap threshold (128 KiB, raised as buffers are freed,
to at most 32 MiB) is a new mapping, and freed memory at the top of the heap goes back to the
OS: the next frame takes a minor page fault, and a zeroed page, for every 4 KiB again.
keep_freed() sets, through mallopt at run time:
  M_MMAP_MAX 0        every buffer comes from the heap, none is mapped on its own;
  M_TRIM_THRESHOLD    the largest: the heap is never trimmed;
  M_TOP_PAD 64 MiB    a thread arena keeps a heap that empties (glibc drops an empty heap
                      unless the one before it has less than this much room).
What it costs: the process keeps the most memory it ever had in use (its peak resident
size), never shrinking back when a frame needs less.

A thread other than the main one allocates from an arena of its own, made of heaps of at
most 64 MiB; glibc maps any larger buffer of such a thread afresh every time, whatever the
settings above. one_arena() (M_ARENA_MAX 1) puts every thread on the main heap; it only
acts on threads that have not allocated yet, so a process calls it first thing.

Elsewhere than glibc (musl, macOS) both do nothing and say so.
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Any, Callable, Optional, Tuple

# mallopt parameters (glibc malloc.h).
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4
M_ARENA_MAX = -8
# mallopt takes an int: the largest trim threshold it can be told.
NEVER_TRIM = 2 ** 31 - 1
# Larger than any heap of a thread arena (HEAP_MAX_SIZE, 64 MiB on 64-bit glibc).
TOP_PAD = 64 << 20
KEEP_SETTINGS: Tuple[Tuple[str, int, int], ...] = (
    ('M_MMAP_MAX', M_MMAP_MAX, 0), ('M_TRIM_THRESHOLD', M_TRIM_THRESHOLD, NEVER_TRIM),
    ('M_TOP_PAD', M_TOP_PAD, TOP_PAD))
# The same, read by glibc from the environment when a process starts (Ray workers).
TUNABLES = 'glibc.malloc.arena_max=1'

_lock = threading.Lock()
_kept = False
# glibc read GLIBC_TUNABLES when this process started.
_one_arena = TUNABLES in os.environ.get('GLIBC_TUNABLES', '').split(':')


def _glibc() -> Optional[Any]:
    """Return the C library when it is glibc (mallopt with its parameters), else None."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return libc


def keep_freed(log: Callable[[str], None] = lambda m: None) -> bool:
    """Keep freed memory in this process from now on (process-wide; once); True if done."""
    global _kept
    with _lock:
        if _kept:
            return True
        libc = _glibc()
        if libc is None:
            log('memory.keep_freed: the C library is not glibc; its own malloc settings stay.')
            return False
        failed = [name for name, param, value in KEEP_SETTINGS if libc.mallopt(param, value) != 1]
        if failed:
            log(f"memory.keep_freed: glibc refused {', '.join(failed)}.")
            return False
        _kept = True
    log('memory.keep_freed: freed memory stays in the process (glibc malloc: no mapping per '
        'buffer, no trimming); it keeps its peak resident size.')
    return True


def one_arena() -> bool:
    """Make threads that have not allocated yet share the main heap; True on glibc."""
    global _one_arena
    libc = _glibc()
    done = libc is not None and libc.mallopt(M_ARENA_MAX, 1) == 1
    _one_arena = _one_arena or done
    return done


def settings() -> str:
    """Say which of these settings this process runs with (for logs and run summaries)."""
    if _glibc() is None:
        return 'not glibc'
    kept = ['keep_freed'] if _kept else []
    return ', '.join(kept + (['one arena'] if _one_arena else [])) or "glibc's defaults"
