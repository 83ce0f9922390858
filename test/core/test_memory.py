# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""memory.keep_freed / one_arena: a buffer freed and allocated again is not faulted in again.

Each case runs in a process of its own (the settings are process-wide and cannot be undone):
a 40 MiB buffer, past glibc's largest automatic mmap threshold (32 MiB), allocated, written
and freed again and again, on the main thread and on a thread of its own. With glibc's
defaults every round maps it afresh and faults its pages in again; kept, none.
"""

import json
import subprocess
import sys

import pytest

from dpt_ros.core import memory

SCRIPT = r"""
import json, resource, sys, threading
import numpy as np
from dpt_ros.core import memory
if sys.argv[1] == 'kept':
    assert memory.one_arena() and memory.keep_freed(), 'settings refused'
SIZE = 40 << 20
def rounds(n):
    for _ in range(n):
        a = np.empty(SIZE, np.uint8)
        a[::4096] = 1  # every page written, as a frame's buffer is
        del a
def faults_per_round():
    rounds(3)  # warm: the heap grows to its size once
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    rounds(10)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10
out = {'main': faults_per_round()}
t = threading.Thread(target=lambda: out.__setitem__('thread', faults_per_round()))
t.start(); t.join()
out['settings'] = memory.settings()
print(json.dumps(out))
"""

HUGE_PAGES = (40 << 20) // (2 << 20)  # the fewest faults a fresh 40 MiB mapping can take


def faults(mode):
    proc = subprocess.run([sys.executable, '-c', SCRIPT, mode], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(memory._glibc() is None, reason='not glibc: keep_freed does nothing here')
def test_a_kept_buffer_is_faulted_in_once_not_every_round():
    default, kept = faults('default'), faults('kept')
    assert default['settings'] == "glibc's defaults"
    assert kept['settings'] == 'keep_freed, one arena'
    for where in ('main', 'thread'):
        # glibc's defaults: mapped afresh each round, faulted in again: a fault per 4 KiB
        # page, or per 2 MiB where the kernel backs the mapping with transparent huge pages
        # (measured here: 531 on the main thread, 21 on the other; 10,240 without them).
        assert default[where] >= 0.75 * HUGE_PAGES, (where, default, kept)
        # Kept: the heap holds it from one round to the next (measured: 0).
        assert kept[where] <= default[where] / 10, (where, default, kept)
