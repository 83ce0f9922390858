# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""The backend table: the parameter, the pipeline, dpt_bench and the GPU check all read it."""

import dataclasses

import pytest
import torch

from dpt_ros.core import backends
from dpt_ros.core.config import Config, ConfigError, ModelConfig
from dpt_ros.core.conversions import Frame
from dpt_ros.core.pipeline import Pipeline
from dpt_ros.tools.bench import default_backends
from dpt_ros.tools.sample import synthetic_scene


def test_the_parameter_lists_every_row():
    meta = ModelConfig.__dataclass_fields__['backend'].metadata
    assert meta['choices'] == backends.NAMES == tuple(b.name for b in backends.BACKENDS)
    for b in backends.BACKENDS:
        assert f"'{b.name}' ({b.description})" in meta['description']
    with pytest.raises(ConfigError):
        Config().replace({'model.backend': 'onnx-magic'}).validate()


@pytest.mark.parametrize('row', [b for b in backends.BACKENDS if b.module], ids=lambda b: b.name)
def test_every_row_names_a_module_that_builds_it(row):
    build = row.load().try_build
    assert callable(build) and 'max_batch' in build.__code__.co_varnames


def test_a_row_needing_a_missing_package_falls_back_with_its_install_line(
        tiny_metric, monkeypatch):
    """What a row says it needs is what the pipeline checks: no list of its own."""
    row = dataclasses.replace(backends.BY_NAME['onnxruntime'], requires='dpt_ros_no_such_pkg',
                              install='pip install dpt-ros-no-such-pkg')
    monkeypatch.setitem(backends.BY_NAME, 'onnxruntime', row)
    logs = []
    pipe = Pipeline(Config().replace({'model.depth': str(tiny_metric), 'model.device': 'cpu',
                                      'model.backend': 'onnxruntime'}), log=logs.append)
    pipe.process(Frame(synthetic_scene(96, 72).rgb, 'rgb8'))
    assert pipe.depth_model.backend == 'torch' and pipe.backend_builds == {}
    assert [m for m in logs if 'onnxruntime' in m] == [
        'model.backend onnxruntime unavailable (dpt_ros_no_such_pkg is not installed (pip '
        'install dpt-ros-no-such-pkg)); running on torch.']
    assert not row.installed() and row.missing()


def test_bench_compares_the_rows_that_run_here(monkeypatch):
    assert default_backends(torch.device('cuda')) == list(backends.NAMES)
    cpu = default_backends(torch.device('cpu'))
    assert cpu[0] == 'torch' and 'tensorrt' not in cpu and 'compile' not in cpu
    assert ('onnxruntime' in cpu) == backends.BY_NAME['onnxruntime'].installed()
    assert set(backends.runnable(cuda=False)) <= set(backends.NAMES) - {'tensorrt'}


def test_a_compiled_module_hands_out_a_copy_of_every_head_and_takes_a_prompt():
    """CUDA graphs reuse their output memory: each head of a multi-head model is copied."""
    from dpt_ros.core.backends.torch_compile import CompiledModule
    kept = (torch.ones(1, 2), torch.zeros(1, 3))
    seen = []

    class Graph(torch.nn.Module):  # stands in for a replayed graph: same tensors every call
        def forward(self, pixel_values, *prompt):
            seen.append(len(prompt))
            return kept

    module = CompiledModule(Graph(), (1, 3, 4, 4), graphs=True)
    out = module(torch.zeros(1, 3, 4, 4), torch.ones(1, 1, 2, 2))
    assert isinstance(out, tuple) and len(out) == 2 and seen == [1, 1, 1]  # record, replay
    assert all(torch.equal(a, b) and a.data_ptr() != b.data_ptr() for a, b in zip(out, kept))
