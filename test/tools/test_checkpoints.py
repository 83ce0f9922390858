# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""The checkpoint table: the default is metric and commercially usable, shapes match, docs."""

from pathlib import Path

import pytest

from dpt_ros.core.config import Config, DEFAULT_DEPTH_MODEL
from dpt_ros.core.params import read_params_file
from dpt_ros.tools import checkpoints
from dpt_ros.tools.checkpoints import CHECKPOINTS, CPU_COLUMN, DEFAULT

ROOT = Path(__file__).resolve().parents[2]


def test_default_is_a_metric_checkpoint_a_commercial_robot_may_use():
    assert DEFAULT.hub_id == DEFAULT_DEPTH_MODEL == Config().model.depth
    assert read_params_file(ROOT / 'config' / 'dpt.yaml')['model.depth'] == DEFAULT.hub_id
    assert DEFAULT.output == 'metric' and DEFAULT.depth_mode == 'auto'
    assert DEFAULT.commercial and DEFAULT.license == 'Apache-2.0'
    assert DEFAULT.family == 'depth_anything' and DEFAULT.max_depth == 20
    assert DEFAULT.supported
    # The shipped depth.max must not blank the range the default checkpoint can output
    # (0: the checkpoint's own max_depth).
    assert Config().depth.max == 0 or Config().depth.max >= DEFAULT.max_depth


def test_table_entries_are_consistent():
    ids = [c.hub_id for c in CHECKPOINTS]
    assert len(ids) == len(set(ids))
    for c in CHECKPOINTS:
        assert c.output in ('metric', 'relative'), c.hub_id
        assert (c.depth_mode == 'auto') == (c.output == 'metric'), c.hub_id
        assert c.commercial == (c.license in ('Apache-2.0', 'MIT')), c.hub_id
        assert (c.max_depth is not None) == (c.family == 'depth_anything' and
                                             c.output == 'metric'), c.hub_id
    with pytest.raises(KeyError, match='listed'):
        checkpoints.by_id('nobody/nothing')


@pytest.mark.parametrize('preset', sorted({c.preset for c in CHECKPOINTS}))
def test_each_shape_has_the_published_family_and_size(preset):
    # Built on the meta device: the real architecture, no memory, no weights.
    torch = pytest.importorskip('torch')

    from dpt_ros.core.models import checkpoint_heads, model_class
    from dpt_ros.tools.sample import preset_config
    cfg, _ = preset_config(preset)
    with torch.device('meta'):  # the class the node loads, with every head it has
        model = model_class(cfg, checkpoint_heads(cfg))(cfg)
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    for c in CHECKPOINTS:
        if c.preset == preset:
            assert cfg.model_type == c.family, c.hub_id
            assert params_m == pytest.approx(c.params_m, rel=0.005), c.hub_id


MARKER = 'checkpoint table'


def _doc_table():
    """Return the cells of the checkpoint table, on whichever page holds its marker."""
    from docsutil import generated_block
    return [[cell.strip() for cell in line.strip('|').split(' | ')]
            for line in generated_block(MARKER).splitlines()]


def test_doc_table_is_the_table_apart_from_measured_cpu_figures():
    readme = _doc_table()
    assert readme[0] == list(checkpoints.HEADER)
    rows = readme[2:]
    expected = checkpoints.table_rows()
    assert len(rows) == len(expected)
    for got, want in zip(rows, expected):
        assert got[:CPU_COLUMN] + got[CPU_COLUMN + 1:] == \
            want[:CPU_COLUMN] + want[CPU_COLUMN + 1:]
        cpu = got[CPU_COLUMN]
        assert cpu == checkpoints.CPU_PLACEHOLDER or cpu.replace('.', '').isdigit(), cpu
    from docsutil import page_holding
    text = page_holding(f'<!-- {MARKER}')
    for n, source in checkpoints.SOURCES.items():
        assert f'[{n}] {source}' in text


def test_bench_times_the_default_architecture_with_random_weights(capsys):
    # A small network input keeps this quick; the full run uses the checkpoint's own size.
    assert checkpoints.main(['--bench', '--ids', DEFAULT.hub_id, '--input', '98x70',
                             '--iters', '1', '--warmup', '0', '--threads', '1']) == 0
    out = capsys.readouterr().out
    assert 'random weights' in out and '24.8 M' in out and 'input 70x98' in out
    row = next(ln for ln in out.splitlines() if ln.startswith(f'| `{DEFAULT.hub_id}`'))
    cpu = row.strip('|').split(' | ')[CPU_COLUMN].strip()
    assert cpu.isdigit() and int(cpu) > 0
    assert checkpoints.main(['--bench', '--ids', 'nobody/nothing']) == 2


@pytest.mark.parametrize('hub_id', [c.hub_id for c in checkpoints.CHECKPOINTS
                                    if c.preset in ('da2-small', 'da1-small')])
def test_small_rows_build_as_their_own_type_and_run(hub_id):
    """Each small row's architecture, with its type's config overrides, runs a forward."""
    c = checkpoints.by_id(hub_id)
    r = checkpoints.time_forward(c, iters=1, warmup=0, net_input=(28, 28))
    assert r['ms_p50'] > 0 and r['input'] == [28, 28]
