# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Fixtures of the core tests: transformers' torchvision-only processors as a reference."""

import os
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent


def _torchvision_version() -> str:
    """Return the torchvision release built for this torch (2.N pairs with 0.(N + 15))."""
    import torch
    major, minor = (int(p) for p in torch.__version__.split('+')[0].split('.')[:2])
    return f'0.{minor + 15}.*' if major == 2 else ''


def _scratch_torchvision(cache, scratch: Path) -> Path:
    """Return a folder holding torchvision for the reference process only (not the node's).

    PyPI's torchvision wheel may carry a C extension built for another torch build (CUDA here,
    beside a CPU torch): the extension then does not load, and its import fails registering
    fake kernels of operators the extension would have defined. Those registrations are made
    conditional on the extension, as the other meta registrations in that file already are;
    the processors use only its Python transforms.
    """
    given = os.environ.get('DPT_ROS_TORCHVISION')
    if given:
        return Path(given)
    version = _torchvision_version()
    name = f'torchvision-{version.strip(".*")}'
    # Kept in pytest's cache between runs; in this run's temporary folder without one.
    folder = Path(cache.mkdir(name)) if cache is not None else scratch / name
    meta = folder / 'torchvision' / '_meta_registrations.py'
    if not meta.is_file():
        cmd = [sys.executable, '-m', 'pip', 'install', '--quiet', '--no-deps', '--target',
               str(folder), f'torchvision=={version}']
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if done.returncode != 0 or not meta.is_file():
            pytest.skip(f"transformers' reference processors need torchvision, and "
                        f"`{' '.join(cmd)}` failed ({done.stderr.strip()[-300:]}); install one "
                        'in a folder and set DPT_ROS_TORCHVISION to it')
    text = meta.read_text()
    guard = 'def _fake_if_ops('
    if guard not in text:
        text = text.replace('@torch.library.register_fake(', '@_fake_if_ops(')
        text = text.replace('\n\n@functools.lru_cache(None)\ndef get_meta_lib', (
            '\n\n' + guard + 'name):\n    if torchvision.extension._has_ops():\n'
            '        return torch.library.register_fake(name)\n    return lambda fn: fn\n'
            '\n\n@functools.lru_cache(None)\ndef get_meta_lib'), 1)
        meta.write_text(text)
    return folder


@pytest.fixture(scope='session')
def transformers_reference(request, tmp_path_factory):
    """Run test/core/dense_reference.py on a checkpoint and inputs; return its arrays."""
    folder = _scratch_torchvision(getattr(request.config, 'cache', None),
                                  tmp_path_factory.getbasetemp())
    work = tmp_path_factory.mktemp('reference')
    count = [0]

    def run(ckpt, inputs):
        count[0] += 1
        src, dst = work / f'in{count[0]}.npz', work / f'out{count[0]}.npz'
        np.savez(src, **inputs)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(folder)] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep)
                             if p]))
        done = subprocess.run([sys.executable, str(HERE / 'dense_reference.py'), str(ckpt),
                               str(src), str(dst)], capture_output=True, text=True, env=env,
                              timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        with np.load(dst) as out:
            return {k: out[k] for k in out.files}
    return run
