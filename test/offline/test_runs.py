# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""dpt_bag over many bags: one output each, failures per bag, resumable, serial == Ray."""

import filecmp
import json
import os
from pathlib import Path
import shutil
import sys

import numpy as np
import pytest

from dpt_ros.offline import runs as bag_runs
from dpt_ros.offline.cli import EXIT_NOTHING_RAN, main
from dpt_ros.offline.runs import MARKER, SUMMARY

from bagutil import (empty_bag, header, IMAGE_TOPIC, read_bag, Stream,  # noqa: I100
                     synthetic_frames, write_bag, write_streams)

NS = '/camera/color'


@pytest.fixture
def params(tmp_path, tiny_metric):
    p = tmp_path / 'params.yaml'
    p.write_text(f'/**:\n  ros__parameters:\n    model:\n      depth: {tiny_metric}\n'
                 '      device: cpu\n')
    return p


def run(*args, quiet=True):
    return main([str(a) for a in args] + (['--quiet'] if quiet else []))


def make_bags(folder, names, n=3):
    """Write small bags (folders, or .mcap files for names ending in .mcap) under folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        frames = synthetic_frames(n, 48, 36, t0=10**18 + i * 10**9)
        if name.endswith('.mcap'):
            stem = name[:-len('.mcap')]
            work = folder.parent / 'mcap_work' / stem  # rosbags names the file after it
            write_bag(work, frames)
            (work / name).rename(folder / name)
            shutil.rmtree(work.parent)
        else:
            write_bag(folder / name, frames)
    return folder


def summary(root):
    return json.loads((root / SUMMARY).read_text())


def statuses(root):
    return {b['bag']: b['status'] for b in summary(root)['bags']}


def test_several_inputs_one_output_each_one_model_load(tmp_path, params, monkeypatch, capsys):
    loads = []

    class CountingPipeline(bag_runs.Pipeline):
        def __init__(self, *a, **k):
            loads.append(1)
            super().__init__(*a, **k)
    monkeypatch.setattr(bag_runs, 'Pipeline', CountingPipeline)
    fleet = make_bags(tmp_path / 'fleet', ['a', 'c.mcap'])
    single = make_bags(tmp_path / 'more', ['b']) / 'b'
    root = tmp_path / 'out'
    assert run(fleet, single, root, '--params-file', params) == 0
    assert sorted(p.name for p in root.iterdir()) == ['a', 'b', 'c', SUMMARY]
    for name in 'abc':
        assert (root / name / MARKER).is_file()
        assert len(read_bag(root / name)[f'{NS}/depth/image']) == 3
    assert loads == [1]  # one model for all bags
    doc = summary(root)
    assert doc['totals'] == {**doc['totals'], 'bags': 3, 'done': 3, 'failed': 0, 'frames': 9}
    assert [b['bag'] for b in doc['bags']] == ['a', 'c', 'b'] and doc['runner'] == 'serial'
    table = capsys.readouterr().out
    assert all(f'{n} ' in table for n in 'abc') and 'frames/s' in table and 'done' in table


def test_a_failing_bag_does_not_stop_the_others(tmp_path, params, capsys):
    fleet = make_bags(tmp_path / 'fleet', ['good1', 'good2'])
    (fleet / 'garbage.mcap').write_bytes(os.urandom(2000))
    empty_bag(fleet / 'empty')
    no_image = tmp_path / 'no_image'
    empty_bag(no_image, topic=None)
    root = tmp_path / 'out'
    rc = run(fleet, no_image, tmp_path / 'missing', root, '--params-file', params)
    assert rc == 4  # the exit status counts the failed bags
    got = statuses(root)
    assert got == {'missing': 'failed', 'empty': 'failed', 'garbage': 'failed',
                   'good1': 'done', 'good2': 'done', 'no_image': 'failed'}
    reasons = {b['bag']: b['reason'] for b in summary(root)['bags']}
    assert 'not a readable bag' in reasons['garbage'] and 'empty' in reasons['empty']
    assert 'does not exist' in reasons['missing']
    err = capsys.readouterr().err
    assert 'dpt_bag: garbage: error:' in err and 'Traceback' not in err
    assert sorted(p.name for p in root.iterdir()) == [SUMMARY, 'good1', 'good2']


def test_rerun_skips_complete_redoes_half_written_and_force_redoes_all(tmp_path, params):
    fleet = make_bags(tmp_path / 'fleet', ['a', 'b', 'c'])
    root = tmp_path / 'out'
    assert run(fleet, root, '--params-file', params) == 0
    first = {n: (root / n / MARKER).stat().st_mtime_ns for n in 'abc'}
    # b killed half-way: its staging folder is left, no output; c is a folder we did not write.
    staging = root / '.b.partial' / 'b'
    staging.parent.mkdir()
    (root / 'b').rename(staging)
    (staging / MARKER).unlink()
    shutil.rmtree(root / 'c')
    (root / 'c').mkdir()
    (root / 'c' / 'notes.txt').write_text('mine')
    # Never deleted, even with --force: the run is refused before anything runs.
    assert run(fleet, root, '--params-file', params, '--force') == EXIT_NOTHING_RAN
    assert (root / 'c' / 'notes.txt').read_text() == 'mine'
    assert staging.is_dir() and (root / 'a' / MARKER).stat().st_mtime_ns == first['a']
    (root / 'c' / 'notes.txt').unlink()  # an empty folder: replaced with --force only
    assert run(fleet, root, '--params-file', params) == 1
    assert statuses(root) == {'a': 'skipped', 'b': 'done', 'c': 'failed'}
    assert (root / 'a' / MARKER).stat().st_mtime_ns == first['a']  # not redone
    assert (root / 'b' / MARKER).is_file() and not (root / '.b.partial').exists()
    assert (root / 'c').is_dir() and not list((root / 'c').iterdir())
    # --force redoes every output.
    assert run(fleet, root, '--params-file', params, '--force') == 0
    assert set(statuses(root).values()) == {'done'}
    assert (root / 'a' / MARKER).stat().st_mtime_ns != first['a']
    # Outputs made with other settings are not taken for complete.
    assert run(fleet, root, '--params-file', params, '--no-viewers') == 3
    reasons = {b['bag']: b['reason'] for b in summary(root)['bags']}
    assert all('other parameters, options or checkpoint' in reasons[n] for n in 'abc')
    assert run(fleet, root, '--params-file', params, '--no-viewers', '--force') == 0
    assert run(fleet, root, '--params-file', params, '--no-viewers') == 0
    assert set(statuses(root).values()) == {'skipped'}


def test_progress_bar_counts_bags_and_frames(tmp_path, params, capsys):
    fleet = make_bags(tmp_path / 'fleet', ['a', 'b'])
    assert run(fleet, tmp_path / 'out', '--params-file', params, quiet=False) == 0
    err = capsys.readouterr().err
    last = [ln for ln in err.splitlines() if 'bags' in ln][-1]
    assert '2/2 bags' in last and '6 frames' in last and 'frames/s' in last and 'ETA' in last


def test_ray_missing_says_how_to_install(tmp_path, params, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, 'ray', None)  # import ray -> ImportError
    fleet = make_bags(tmp_path / 'fleet', ['a', 'b'], n=1)
    assert run(fleet, tmp_path / 'out', '--params-file', params, '--ray') == EXIT_NOTHING_RAN
    err = capsys.readouterr().err
    assert "pip install 'dpt_ros[ray]'" in err and 'requirements/ray.txt' in err


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob('*') if p.name != SUMMARY)


def camera_bags(folder, names):
    """Write bags of three cameras: two sizes (batched across cameras), three rates."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        write_streams(folder / name, [
            Stream(synthetic_frames(n, w, w * 3 // 4, t0=10**18 + i * 10**9 + k * 10**6,
                                    period=period), f'/{cam}/image', f'/{cam}/camera_info')
            for k, (cam, w, n, period) in enumerate((('front', 48, 4, 10**8),
                                                     ('rear', 48, 2, 2 * 10**8),
                                                     ('side', 64, 3, 13 * 10**7)))])
    return folder


ANCHORS = '/camera/aligned_depth_to_color/image_raw'


def fitted_bags(folder, names, checkpoint, n=4):
    """Write bags whose depth anchors follow the checkpoint's own output (a new map a frame)."""
    from dpt_ros.offline.bag import IMAGE, rosbags
    from dpt_ros.core.config import Config
    from dpt_ros.core.conversions import Frame
    from dpt_ros.core.pipeline import Pipeline
    pipe = Pipeline(Config().replace({'model.depth': str(checkpoint), 'model.device': 'cpu',
                                      'depth.temporal': False}), log=lambda m: None)
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        frames = synthetic_frames(n, 48, 36, t0=10**18 + k * 10**9)
        more = []
        for i, (rgb, _, stamp) in enumerate(frames):
            rel = pipe.process(Frame(rgb, 'rgb8'), None, {'relative'}).arrays['relative']
            z = np.full(rel.shape, np.nan, np.float32)
            pick = rng.choice(z.size, 200, replace=False)
            z.flat[pick] = 1.0 / ((0.01 + 0.002 * (i + k)) * rel.flat[pick] + 0.05)
            data = z.view(np.uint8).reshape(z.shape[0], -1)
            msg = rosbags().store.types[IMAGE](
                header=header(stamp), height=z.shape[0], width=z.shape[1], encoding='32FC1',
                is_bigendian=0, step=data.shape[1], data=data.ravel())
            more.append((ANCHORS, IMAGE, stamp + 2000, msg))
        write_streams(folder / name, [Stream(frames)], more=more)
    pipe.close()
    return folder


@pytest.mark.parametrize('kind', ['one camera', 'three cameras', 'relative temporal', 'fitted'])
def test_ray_gives_the_same_bytes_as_serial(tmp_path, params, kind, tiny_depth):
    """Serial == Ray byte for byte, and a bag run after others == that bag run alone.

    A worker runs several bags with one Pipeline: nothing of one bag (fits, temporal
    alignment, the fit's RNG) may reach the next. The relative and fitted kinds have such
    state; the metric ones check the cameras.
    """
    pytest.importorskip('ray', reason='Ray is not installed (requirements/ray.txt)')
    cameras = ('front', 'rear', 'side') if kind == 'three cameras' else ()
    args = ['--params-file', params]
    if cameras:
        fleet = camera_bags(tmp_path / 'fleet', ['a', 'b', 'c'])
        args += ['--cameras', ','.join(cameras)]
    elif kind == 'one camera':
        fleet = make_bags(tmp_path / 'fleet', ['a', 'b', 'c.mcap'], n=4)
    else:
        relative = tmp_path / 'relative.yaml'  # depth.mode auto: relative, depth.temporal on
        fitted = ('    depth: {mode: fitted, min: 0.0, max: 10000.0}\n'
                  '    anchors: {source: depth_image}\n')
        relative.write_text(f'/**:\n  ros__parameters:\n    model: {{depth: {tiny_depth}, '
                            'device: cpu}\n' + (fitted if kind == 'fitted' else ''))
        args = ['--params-file', relative]
        if kind == 'fitted':
            fleet = fitted_bags(tmp_path / 'fleet', ['a', 'b', 'c'], tiny_depth)
            args += ['--image-topic', IMAGE_TOPIC]
        else:
            fleet = make_bags(tmp_path / 'fleet', ['a', 'b', 'c'], n=4)
    serial, ray_root, alone = tmp_path / 'serial', tmp_path / 'ray', tmp_path / 'alone'
    assert run(fleet, serial, *args) == 0
    assert run('--ray', fleet, ray_root, *args, '--workers', 2) == 0
    if cameras:
        bag = read_bag(serial / 'a')
        assert {t.split('/')[1] for t in bag} == set(cameras)
        assert len(bag['/side/points']) == 3 and len(bag['/rear/depth/image']) == 2
    if kind == 'fitted':  # metres fitted to each frame's anchors
        assert len(read_bag(serial / 'b')['/camera/color/depth/image']) == 4
    assert _tree(serial) == _tree(ray_root)
    assert sum((serial / rel).is_file() for rel in _tree(serial)) == 9  # 3 x (bag, yaml, marker)
    for rel in _tree(serial):
        if (serial / rel).is_file():
            assert filecmp.cmp(serial / rel, ray_root / rel, shallow=False), rel
    # Bag b after a (serial) is bag b alone.
    assert run(fleet / 'b', alone / 'b', *args) == 0
    assert _tree(alone) == [t for t in _tree(serial) if t.startswith('b')]
    for rel in _tree(alone):
        if (alone / rel).is_file():
            assert filecmp.cmp(serial / rel, alone / rel, shallow=False), rel
    doc = summary(ray_root)
    assert doc['runner'] == 'ray' and doc['totals']['done'] == 3
    ray_stats = doc['ray']
    assert ray_stats['workers'] == 2 and ray_stats['model_loads'] == 2  # per worker, not bag
    # Each worker process started on one malloc arena and keeps what its frames free.
    assert ray_stats['worker_malloc'] == ['keep_freed, one arena'] * 2, ray_stats
    assert len({b['worker'] for b in doc['bags']}) <= 2
    assert len(ray_stats['model_load_seconds']) == 2
    assert ray_stats['per_bag_overhead_seconds_p50'] is not None


def test_bag_bench_smoke(tmp_path):
    """The README's benchmark command runs: serial and Ray, byte-identical, figures written."""
    pytest.importorskip('ray', reason='Ray is not installed (requirements/ray.txt)')
    from dpt_ros.tools import bag_bench
    out = tmp_path / 'bench'
    assert bag_bench.main(['--smoke', '--out', str(out), '--work-dir', str(tmp_path / 'w')]) == 0
    res = json.loads((out / 'results.json').read_text())
    assert res['byte_identical'] and res['frames'] == 4 and res['ray_workers'] == 2
    assert res['serial']['seconds'] > 0 and res['ray']['seconds'] > 0 and res['speedup'] > 0
    assert len(res['ray']['model_load_seconds']) == 2 and res['ray']['init_seconds'] > 0
    assert '| Ray, 2 workers |' in (out / 'results.md').read_text()


def test_ctrl_c_keeps_finished_outputs_and_leaves_no_half_written_one(tmp_path, params,
                                                                      monkeypatch, capsys):
    fleet = make_bags(tmp_path / 'fleet', ['a', 'b'])
    real = bag_runs.process_bag

    def interrupted_at_b(src, dst, *a, **k):
        if src.name == 'b':
            dst.mkdir()
            (dst / 'b.db3').write_bytes(b'half')
            raise KeyboardInterrupt
        return real(src, dst, *a, **k)
    monkeypatch.setattr(bag_runs, 'process_bag', interrupted_at_b)
    root = tmp_path / 'out'
    assert run(fleet, root, '--params-file', params) == 130
    assert 'interrupted' in capsys.readouterr().err
    assert sorted(p.name for p in root.iterdir()) == ['a']
    assert (root / 'a' / MARKER).is_file()


def _snapshot(root):
    """Every path under root with its bytes (files) or link target (symlinks)."""
    return {str(p.relative_to(root)): os.readlink(p) if p.is_symlink() else
            p.read_bytes() if p.is_file() else None for p in sorted(root.rglob('*'))}


@pytest.mark.parametrize('shape', ['folder onto itself', 'bag onto itself', 'inside the input',
                                   'contains the input', 'several into their folder',
                                   'symlink to the input', 'through a symlink into the input'])
def test_an_output_that_is_inside_or_holds_an_input_is_refused(tmp_path, params, shape, capsys):
    fleet = make_bags(tmp_path / 'fleet', ['a', 'b'], n=1)
    a = fleet / 'a'
    (tmp_path / 'link').symlink_to(a, target_is_directory=True)
    (tmp_path / 'adir').symlink_to(a, target_is_directory=True)
    inputs, out, what = {
        # the issue: dpt_bag FOLDER FOLDER --force; the root is the folder of bags read
        'folder onto itself': ([fleet], fleet, 'is the folder of bags'),
        'bag onto itself': ([a], a, 'is'),
        'inside the input': ([a], a / 'out', 'is inside'),
        'contains the input': ([a], fleet, 'contains'),
        'several into their folder': ([a, fleet / 'b'], fleet, 'is'),
        'symlink to the input': ([a], tmp_path / 'link', 'is'),
        'through a symlink into the input': ([a], tmp_path / 'adir' / 'out', 'is inside'),
    }[shape]
    before = _snapshot(tmp_path)
    assert run(*inputs, out, '--params-file', params, '--force') == EXIT_NOTHING_RAN
    errors = [ln for ln in capsys.readouterr().err.splitlines() if 'error' in ln]
    assert len(errors) == 1, errors
    # Several bags: the first job whose output (root/name) is an input is named.
    named = fleet / 'a' if out == fleet and shape == 'several into their folder' else out
    assert errors[0].startswith(f"dpt_bag: error: output '{named}'")
    what = what if what.endswith('bags') else f'{what} the input bag'
    assert f" {what} '" in errors[0] and 'nothing was written' in errors[0]
    if 'symlink' in shape:
        assert f'(resolved: {a.resolve()}' in errors[0]
    assert _snapshot(tmp_path) == before  # the recordings untouched, nothing written


def test_rerun_does_not_skip_an_output_of_another_recording_or_other_weights(tmp_path):
    from dpt_ros.tools.sample import make_random_checkpoint
    ckpt = make_random_checkpoint(tmp_path / 'ckpt', 'tiny-depth-anything', seed=0)
    params = tmp_path / 'params.yaml'
    params.write_text(f'/**:\n  ros__parameters:\n    model: {{depth: {ckpt}, device: cpu}}\n')
    fleet = make_bags(tmp_path / 'fleet', ['a', 'b'], n=2)
    root = tmp_path / 'out'
    assert run(fleet, root, '--params-file', params) == 0
    assert run(fleet, root, '--params-file', params) == 0
    assert set(statuses(root).values()) == {'skipped'}
    # a is recorded again at the same path (one frame more): its output is stale, not complete.
    shutil.rmtree(fleet / 'a')
    make_bags(tmp_path / 'fleet', ['a'], n=3)
    assert run(fleet, root, '--params-file', params) == 1
    assert statuses(root) == {'a': 'failed', 'b': 'skipped'}
    reason = {b['bag']: b['reason'] for b in summary(root)['bags']}['a']
    assert 'another recording' in reason and '--force' in reason
    assert run(fleet, root, '--params-file', params, '--force') == 0
    assert len(read_bag(root / 'a')['/camera/color/depth/image']) == 3
    # New weights saved over the checkpoint folder (same path, same parameters).
    make_random_checkpoint(ckpt, 'tiny-depth-anything', seed=1)
    assert run(fleet, root, '--params-file', params) == 2
    assert all('checkpoint files' in b['reason'] for b in summary(root)['bags'])
    assert run(fleet, root, '--params-file', params, '--force') == 0
    assert run(fleet, root, '--params-file', params) == 0
    assert set(statuses(root).values()) == {'skipped'}


def test_weights_digest_of_a_hub_id_follows_the_cached_snapshot(tmp_path, monkeypatch):
    from huggingface_hub import constants
    from dpt_ros.offline.runs import weights_digest
    from dpt_ros.core.config import Config
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(tmp_path))
    cfg = Config().replace({'model.depth': 'org/depth-model'})
    uncached = weights_digest(cfg)
    repo = tmp_path / 'models--org--depth-model'

    def snapshot(commit, blob):
        (repo / 'blobs').mkdir(parents=True, exist_ok=True)
        (repo / 'blobs' / blob).write_text('{}')
        snap = repo / 'snapshots' / commit
        snap.mkdir(parents=True)
        (snap / 'config.json').symlink_to(Path('..') / '..' / 'blobs' / blob)
        (repo / 'refs').mkdir(exist_ok=True)
        (repo / 'refs' / 'main').write_text(commit)
    snapshot('1' * 40, 'a' * 64)
    first = weights_digest(cfg)
    assert first != uncached and weights_digest(cfg) == first
    snapshot('2' * 40, 'b' * 64)  # the hub id now resolves to another commit
    assert weights_digest(cfg) not in (first, uncached)


def test_data_and_marker_are_on_disk_before_the_output_is_moved_into_place(tmp_path, params,
                                                                           monkeypatch):
    events = []
    real_fsync, real_rename = os.fsync, Path.rename

    def fsync(fd):
        path = Path(os.readlink(f'/proc/self/fd/{fd}'))
        events.append(('fsync', path, (path.parent / MARKER).exists() or path.name == MARKER))
        real_fsync(fd)

    def rename(self, target):
        events.append(('rename', Path(self), Path(target)))
        return real_rename(self, target)
    monkeypatch.setattr(os, 'fsync', fsync)
    monkeypatch.setattr(Path, 'rename', rename)
    src = make_bags(tmp_path / 'fleet', ['a'], n=1) / 'a'
    assert run(src, tmp_path / 'out', '--params-file', params) == 0
    moved = next(i for i, e in enumerate(events) if e[0] == 'rename')
    staging = events[moved][1]
    assert events[moved][2] == tmp_path / 'out' and staging.name == 'out'
    synced = [e for e in events[:moved] if e[0] == 'fsync']
    out = tmp_path / 'out'
    data = [staging / p.relative_to(out) for p in out.rglob('*') if p.name != MARKER]
    # Every file of the bag before the marker exists, the marker before the move, the move.
    assert data and set(data) <= {path for _, path, marker in synced if not marker}
    assert (staging / MARKER) in {path for _, path, _ in synced}
    assert any(e[0] == 'fsync' and e[1] == tmp_path for e in events[moved:])


@pytest.mark.parametrize('preset, warmup', [('tiny-depth', []),
                                            ('tiny-depth-anything', ['48x36'])])
def test_engines_are_built_when_the_model_loads_not_in_the_first_bag(tmp_path, checkpoints,
                                                                     preset, warmup):
    """ONNX Runtime under dpt_bag: every batch the worker forms is built before the first bag.

    Issue: dpt_bag built on its first frames (and read no model.warmup_sizes), where the node
    builds at activation. A fixed-input DPT is built for batches 1..--batch when the model
    loads; Depth Anything, whose input follows the frame, for each size of warmup_sizes.
    """
    pytest.importorskip('onnxruntime', reason='onnxruntime is not installed')
    p = tmp_path / 'params.yaml'
    p.write_text(f'/**:\n  ros__parameters:\n    model:\n      depth: {checkpoints(preset)}\n'
                 f'      device: cpu\n      backend: onnxruntime\n'
                 f"      engine_dir: {tmp_path / 'engines'}\n      warmup_sizes: {warmup}\n")
    fleet = make_bags(tmp_path / 'fleet', ['a', 'b'], n=5)  # 48 x 36 frames
    root = tmp_path / 'out'
    assert run(fleet, root, '--params-file', p, '--batch', 2) == 0
    bags = summary(root)['bags']
    assert [(b['bag'], b['status'], b['frames']) for b in bags] == \
        [('a', 'done', 5), ('b', 'done', 5)]
    assert [b['backend_builds'] for b in bags] == [0, 0]
    assert len(list((tmp_path / 'engines').glob('*.onnx'))) == 1  # batch-free: one session


def _errors(capsys):
    return [ln for ln in capsys.readouterr().err.splitlines() if 'error' in ln]


def test_output_dot_is_the_current_folder_never_emptied(tmp_path, params, monkeypatch, capsys):
    """`dpt_bag BAG . --force` in a folder of recordings: refused, the recordings kept.

    Issue: `.` has no name, the staging folder's parent was `.` itself, and clearing it
    deleted the current folder's files before the run crashed.
    """
    src = make_bags(tmp_path / 'fleet', ['b']) / 'b'
    here = make_bags(tmp_path / 'here', ['keep1.mcap', 'keep2.mcap'])
    monkeypatch.chdir(here)
    before = _snapshot(tmp_path)
    for force in ((), ('--force',)):
        assert run(src, '.', '--params-file', params, *force) == EXIT_NOTHING_RAN
        errors = _errors(capsys)
        assert len(errors) == 1 and f"output '{here}' holds keep1.mcap, keep2.mcap" in errors[0]
        assert '--force' not in errors[0]
    assert _snapshot(tmp_path) == before
    # An empty current folder: the bag would replace the folder the shell is in.
    empty = tmp_path / 'empty'
    empty.mkdir()
    monkeypatch.chdir(empty)
    assert run(src, '.', '--params-file', params, '--force') == EXIT_NOTHING_RAN
    assert 'is the folder you are in' in _errors(capsys)[0]
    assert empty.is_dir() and not list(tmp_path.glob('.*partial'))
    # As the root of several outputs, `.` is the current folder by its real path.
    fleet = make_bags(tmp_path / 'fleet2', ['a', 'c'])
    assert run(fleet, '.', '--params-file', params) == 0
    assert sorted(p.name for p in empty.iterdir()) == ['a', 'c', SUMMARY]
    assert (empty / 'a' / MARKER).is_file()


def _recording(folder):
    """Write a real recording into folder: metadata.yaml and an sqlite3 file, no marker."""
    write_bag(folder, synthetic_frames(2, 48, 36), storage='sqlite3')
    return folder


@pytest.mark.parametrize('kind', ['several recordings', 'a recording', 'our output and more',
                                  'a file'])
def test_force_replaces_only_a_dpt_bag_output(tmp_path, params, kind, capsys):
    """--force never deletes what dpt_bag did not write: one line, exit 101, all kept."""
    src = make_bags(tmp_path / 'fleet', ['a']) / 'a'
    dst = tmp_path / 'out'
    if kind == 'several recordings':
        make_bags(dst, ['monday.mcap', 'tuesday.mcap'])
        held = 'holds monday.mcap, tuesday.mcap'
    elif kind == 'a recording':
        _recording(dst)
        held = 'holds metadata.yaml, out.db3 and is not a dpt_bag output'
    elif kind == 'our output and more':
        assert run(src, dst, '--params-file', params) == 0
        (dst / 'notes.txt').write_text('mine')
        held = 'is a dpt_bag output but also holds notes.txt'
    else:
        dst.write_text('important')
        held = 'is a file'
    before = _snapshot(tmp_path)
    assert run(src, dst, '--params-file', params, '--force') == EXIT_NOTHING_RAN
    errors = _errors(capsys)
    assert len(errors) == 1 and errors[0].startswith(f"dpt_bag: error: output '{dst}' {held}")
    assert 'never deletes it' in errors[0] and '--force' not in errors[0]
    assert _snapshot(tmp_path) == before


def test_staging_and_replace_remove_only_what_dpt_bag_wrote(tmp_path):
    """The deleting functions check again, whatever their caller checked before."""
    from dpt_ros.offline import targets
    from dpt_ros.offline.bag import BagError
    dst = tmp_path / 'out'
    partial = targets.staging(dst).parent
    partial.mkdir()
    (partial / 'thesis.txt').write_text('mine')
    with pytest.raises(BagError, match='thesis.txt'):
        targets.clear_staging(dst)
    assert (partial / 'thesis.txt').read_text() == 'mine'
    (partial / 'thesis.txt').unlink()
    make_bags(partial / 'out', ['out.mcap'])  # a killed run's half-written bag: ours
    targets.clear_staging(dst)
    assert not partial.exists()
    _recording(dst)
    with pytest.raises(BagError, match='not a dpt_bag output'):
        targets.replace(dst)
    assert (dst / 'out.db3').is_file()


@pytest.mark.parametrize('out', ['the folder', 'inside the folder'])
def test_an_output_root_in_a_folder_of_single_file_bags_is_refused(tmp_path, params, out,
                                                                   capsys):
    """`dpt_bag FOLDER FOLDER` with .mcap files in FOLDER: refused, as for bag folders.

    Issue: the outputs were written beside the inputs, and the next run read them as bags.
    """
    fleet = make_bags(tmp_path / 'mc', ['x.mcap', 'y.mcap'])
    root = fleet if out == 'the folder' else fleet / 'out'
    before = _snapshot(tmp_path)
    assert run(fleet, root, '--params-file', params) == EXIT_NOTHING_RAN
    errors = _errors(capsys)
    what = 'is' if out == 'the folder' else 'is inside'
    assert len(errors) == 1 and f"output '{root}' {what} the folder of bags '{fleet}'" in \
        errors[0] and 'nothing was written' in errors[0]
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize('kind', ['root is a file', 'root under a file', 'output under a file',
                                  'summary is a folder'])
def test_an_output_that_cannot_be_written_is_refused_before_the_model(tmp_path, params, kind,
                                                                      monkeypatch, capsys):
    loads = []
    monkeypatch.setattr(bag_runs, 'Pipeline', lambda *a, **k: loads.append(1))
    fleet = make_bags(tmp_path / 'fleet', ['a', 'b'])
    (tmp_path / 'file.txt').write_text('important')
    (tmp_path / 'sums').mkdir()
    args = {'root is a file': [fleet, tmp_path / 'file.txt'],
            'root under a file': [fleet, tmp_path / 'file.txt' / 'out'],
            'output under a file': [fleet / 'a', tmp_path / 'file.txt' / 'out'],
            'summary is a folder': [fleet, tmp_path / 'out', '--summary-json',
                                    tmp_path / 'sums']}[kind]
    before = _snapshot(tmp_path)
    assert run(*args, '--params-file', params) == EXIT_NOTHING_RAN
    errors = _errors(capsys)
    assert len(errors) == 1 and ('is a file' in errors[0] or 'is a folder' in errors[0])
    assert _snapshot(tmp_path) == before and not loads


@pytest.fixture
def immutable(tmp_path):
    """Return a maker of folders no one may write into, root included (chattr +i)."""
    import subprocess
    made = []

    def make(folder):
        folder.mkdir(parents=True, exist_ok=True)
        if subprocess.run(['chattr', '+i', str(folder)], capture_output=True).returncode:
            pytest.skip('chattr +i is not available here (needs root and ext4 or alike)')
        made.append(folder)
        return folder
    yield make
    for folder in made:
        subprocess.run(['chattr', '-i', str(folder)], check=True)


@pytest.mark.parametrize('kind', ['single', 'several', 'summary'])
def test_an_unwritable_output_is_refused_before_the_model(tmp_path, params, immutable, kind,
                                                          monkeypatch, capsys):
    loads = []
    monkeypatch.setattr(bag_runs, 'Pipeline', lambda *a, **k: loads.append(1))
    fleet = make_bags(tmp_path / 'fleet', ['a', 'b'])
    ro = immutable(tmp_path / 'ro')
    args = {'single': [fleet / 'a', ro / 'out'], 'several': [fleet, ro / 'multi'],
            'summary': [fleet, tmp_path / 'rw', '--summary-json', ro / 's.json']}[kind]
    assert run(*args, '--params-file', params) == EXIT_NOTHING_RAN
    errors = _errors(capsys)
    assert len(errors) == 1 and f"no file can be made in '{ro}'" in errors[0], errors
    assert not loads and not list(ro.iterdir()) and not (tmp_path / 'rw').exists()


def test_a_summary_that_fails_at_the_end_is_one_line(tmp_path, params, immutable, monkeypatch,
                                                     capsys):
    """The summary's folder turns read-only during the run: the bags stand, exit 0."""
    from dpt_ros.offline import cli
    fleet = make_bags(tmp_path / 'fleet', ['a', 'b'])
    real = cli.run_bags

    def then_read_only(*a, **k):
        out = real(*a, **k)
        immutable(tmp_path / 'sums')
        return out
    monkeypatch.setattr(cli, 'run_bags', then_read_only)
    (tmp_path / 'sums').mkdir()
    root = tmp_path / 'out'
    assert run(fleet, root, '--params-file', params, '--summary-json',
               tmp_path / 'sums' / 's.json') == 0
    captured = capsys.readouterr()
    errors = [ln for ln in captured.err.splitlines() if 'error' in ln]
    assert len(errors) == 1 and 'the summary could not be written' in errors[0]
    assert 'Traceback' not in captured.err and '2 done' in captured.out
    assert (root / 'a' / MARKER).is_file() and (root / 'b' / MARKER).is_file()


@pytest.fixture
def deadline():
    """Fail a test that would wait forever (a Ray worker pending for good), after 120 s."""
    import signal

    def expired(signum, frame):
        raise TimeoutError('still running after 120 s')
    before = signal.signal(signal.SIGALRM, expired)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, before)


@pytest.mark.parametrize('ask', ['threads', 'cuda'])
def test_ray_workers_no_node_can_hold_are_refused(tmp_path, params, ask, deadline, capsys):
    """A worker asking for more than any node has: exit 101 at once, not a wait for ever.

    Issue: the pool started one worker anyway, and Ray kept it pending without a word.
    """
    pytest.importorskip('ray', reason='Ray is not installed (requirements/ray.txt)')
    import torch
    if ask == 'cuda' and torch.cuda.is_available():
        pytest.skip('this machine has a GPU: a local Ray cluster has it too')
    fleet = make_bags(tmp_path / 'fleet', ['a', 'b'], n=1)
    extra = ['--threads', 100000] if ask == 'threads' else ['--device', 'cuda']
    root = tmp_path / 'out'
    assert run('--ray', fleet, root, '--params-file', params, *extra) == EXIT_NOTHING_RAN
    errors = _errors(capsys)
    assert len(errors) == 1, errors
    assert ('--threads 100000' in errors[0] if ask == 'threads' else
            "model.device is 'cuda' but the Ray cluster has no GPU" in errors[0])
    assert not root.exists()


@pytest.mark.parametrize('runner', ['serial', 'ray'])
def test_sigterm_stops_like_ctrl_c(tmp_path, params, runner, monkeypatch, capsys):
    """SIGTERM (a scheduler's kill): the interrupted line and 143, serial or Ray.

    Issue: under --ray, Ray's own handler exited 15, which reads as 15 failed bags.
    """
    import signal
    if runner == 'ray':
        pytest.importorskip('ray', reason='Ray is not installed (requirements/ray.txt)')
    fleet = make_bags(tmp_path / 'fleet', ['a', 'b', 'c'])
    terminate = lambda: os.kill(os.getpid(), signal.SIGTERM)  # noqa: E731
    if runner == 'serial':
        real = bag_runs.process_bag

        def killed_at_b(src, dst, *a, **k):
            if src.name == 'b':
                dst.mkdir()
                terminate()
            return real(src, dst, *a, **k)
        monkeypatch.setattr(bag_runs, 'process_bag', killed_at_b)
    else:
        import threading
        import ray
        real_wait, sent = ray.wait, []

        def wait(*a, **k):  # the first waits for workers that take seconds to load
            if not sent:
                sent.append(threading.Timer(0.2, terminate))
                sent[0].start()
            return real_wait(*a, **k)
        monkeypatch.setattr(ray, 'wait', wait)

    def unhandled(signum, frame):
        raise AssertionError('dpt_bag did not handle SIGTERM')
    before = signal.signal(signal.SIGTERM, unhandled)  # not the default: it ends pytest
    try:
        root = tmp_path / 'out'
        assert run(fleet, root, '--params-file', params, *(['--ray'] * (runner == 'ray'))) \
            == 143
        assert signal.getsignal(signal.SIGTERM) is unhandled  # given back as it was
    finally:
        signal.signal(signal.SIGTERM, before)
    assert 'dpt_bag: interrupted: finished outputs are kept' in capsys.readouterr().err
    if runner == 'serial':
        assert sorted(p.name for p in root.iterdir()) == ['a']
    monkeypatch.undo()
    assert run(fleet, root, '--params-file', params) == 0
    assert sorted(p.name for p in root.iterdir()) == ['a', 'b', 'c', SUMMARY]


@pytest.mark.parametrize('where', ['is inside', 'is'])
def test_a_summary_in_an_output_bag_is_refused(tmp_path, params, where, capsys):
    """Issue: written into the output, it made every later run refuse that output."""
    fleet = make_bags(tmp_path / 'fleet', ['a', 'b'], n=1)
    root = tmp_path / 'out'
    path = root / 'a' / 'summary.json' if where == 'is inside' else root / 'a'
    before = _snapshot(tmp_path)
    assert run(fleet, root, '--params-file', params, '--summary-json', path) == \
        EXIT_NOTHING_RAN
    errors = _errors(capsys)
    assert len(errors) == 1 and f"summary '{path}' {where} the output bag" in errors[0]
    assert _snapshot(tmp_path) == before


def test_a_bag_of_corrupt_frames_fails_naming_the_first_error(tmp_path, params, capsys):
    """Issue: 'see the warning' where none was shown: the report died with the bag."""
    fleet = tmp_path / 'fleet'
    write_bag(fleet / 'bad', synthetic_frames(3, 48, 36), corrupt=(0, 1, 2))
    make_bags(fleet, ['good'], n=1)
    root = tmp_path / 'out'
    assert run(fleet, root, '--params-file', params) == 1
    reason = {b['bag']: b['reason'] for b in summary(root)['bags']}['bad']
    assert reason.startswith('none of the frames could be processed: 3 skipped as unusable, '
                             'the first: undecodable sensor_msgs/msg/Image on '), reason
    assert f'dpt_bag: bad: error: {reason}' in capsys.readouterr().err


def test_summary_counts_expected_frames_and_frames_without_camera_info(tmp_path, params):
    fleet = make_bags(tmp_path / 'fleet', ['a'], n=3)
    write_bag(fleet / 'b', synthetic_frames(2, 48, 36), info='none')  # no CameraInfo topic
    root = tmp_path / 'out'
    assert run(fleet, root, '--params-file', params) == 0
    bags = {b['bag']: b for b in summary(root)['bags']}
    assert [bags[n]['expected_frames'] for n in 'ab'] == [3, 2]
    assert [bags[n]['no_camera_info'] for n in 'ab'] == [0, 2]
    assert bags['b']['cameras'][0]['no_camera_info'] == 2
    said = [n for n in bags['b']['notes'] if 'CameraInfo' in n or 'camera_info' in n]
    assert len(said) == 1 and 'no CameraInfo topic in the bag' in said[0]


def test_two_inputs_of_one_name_are_told_apart_from_a_new_recording(tmp_path, params):
    """Issue: 'another recording of y/r.mcap; pass --force' for x/r.mcap's output."""
    x = make_bags(tmp_path / 'x', ['r.mcap'], n=1) / 'r.mcap'
    y = make_bags(tmp_path / 'y', ['r.mcap'], n=2) / 'r.mcap'
    other = make_bags(tmp_path / 'more', ['b'], n=1) / 'b'
    root = tmp_path / 'out'
    assert run(x, other, root, '--params-file', params) == 0
    made = (root / 'r' / MARKER).read_bytes()
    for force in ((), ('--force',)):
        assert run(y, other, root, '--params-file', params, *force) == 1
        reason = {b['bag']: b['reason'] for b in summary(root)['bags']}['r']
        assert f"was made from '{x}', not from '{y}'" in reason and 'collide' in reason
        assert 'another output root' in reason and '--force' not in reason
    assert (root / 'r' / MARKER).read_bytes() == made  # x's output is still x's


def test_one_bag_given_twice_is_run_once(tmp_path, params, capsys):
    """A folder and a bag inside it: one output, no failure. Two bags of one name: refused."""
    fleet = make_bags(tmp_path / 'fleet', ['a', 'b'], n=1)
    root = tmp_path / 'out'
    for _ in range(2):
        assert run(fleet, fleet / 'a', str(fleet / 'b') + '/', root, '--params-file',
                   params) == 0
        assert [b['bag'] for b in summary(root)['bags']] == ['a', 'b']
    other = make_bags(tmp_path / 'other', ['a'], n=1) / 'a'
    assert run(fleet, other, root, '--params-file', params) == 1
    reasons = [b['reason'] for b in summary(root)['bags'] if b['status'] == 'failed']
    assert reasons == [f"same output name as '{fleet / 'a'}': rename one of them"]


def test_summary_rows_follow_the_inputs_and_show_whole_reasons(tmp_path, params, capsys):
    first = make_bags(tmp_path / 'first', ['a'], n=1)
    last = make_bags(tmp_path / 'last', ['z'], n=1) / 'z'
    root = tmp_path / 'out'
    assert run(first, tmp_path / 'missing', last, root, '--params-file', params,
               '--image-topic', IMAGE_TOPIC, '--camera-info-topic', '/nowhere') == 3
    assert [b['bag'] for b in summary(root)['bags']] == ['a', 'missing', 'z']
    table = capsys.readouterr().out
    row = next(ln for ln in table.splitlines() if ln.startswith('z '))
    assert "it has: /camera/color/camera_info (sensor_msgs/msg/CameraInfo" in row, row


def test_frame_warnings_are_not_skipped_messages():
    """A frame the pipeline warns about is written: not a skipped message."""
    from dpt_ros.offline.bag import BagReport
    report = BagReport()
    for age in (1.5, 2.5):
        report.frame_warning(f'depth.mode fitted: no usable anchors for {age} s; publishing')
    report.warn_once('cdr', 'undecodable')
    assert report.skipped == {'cdr': 1}
    assert report.warnings == {'depth.mode fitted: no usable anchors for 1.5 s; publishing': 2}
    assert len(report.notes) == 2 and 'skipped' not in report.notes[0]
    # Figures early in the text (a camera's count of points) are one kind, not one per frame;
    # two texts that start alike but tell different things stay two.
    for n in (1210, 987, 45):
        report.frame_warning(f'{n} anchor points fall outside the image; publishing relative')
    report.frame_warning('depth.mode fitted: the fit was refused (inliers below min_count)')
    assert report.warnings['1210 anchor points fall outside the image; publishing relative'] == 3
    assert report.warnings['depth.mode fitted: the fit was refused (inliers below '
                           'min_count)'] == 1
    assert len(report.warnings) == 3 and len(report.notes) == 4


def test_a_worker_keeps_the_last_pipeline_log_lines_only(tiny_depth):
    # A Ray worker runs bags for days; more network inputs than backend modules kept rebuild
    # (and log) on every frame: the lines kept must not grow with them.
    from dpt_ros.core.config import Config
    from dpt_ros.offline.bag import BagOptions
    cfg = Config().replace({'model.depth': str(tiny_depth), 'model.device': 'cpu'})
    worker = bag_runs.BagWorker(cfg, BagOptions())
    try:
        worker.load()
        for i in range(3 * bag_runs.LOG_LINES):
            worker.pipe.log(f'model.backend onnxruntime for input (1, 3, 70, {i})')
        assert len(worker.log) == bag_runs.LOG_LINES
        assert worker.log[-1].endswith(f'{3 * bag_runs.LOG_LINES - 1})')
    finally:
        worker.close()


def test_split_files_without_metadata_are_named_with_the_fix(tmp_path, params, capsys):
    """Split files without metadata.yaml: each is a bag, and dpt_bag says how to make them one.

    A recorder that was killed leaves rec_0.mcap, rec_1.mcap and no metadata.yaml.
    """
    split = make_bags(tmp_path / 'split', ['rec_0.mcap', 'rec_1.mcap', 'other.mcap'])
    out = tmp_path / 'out'
    assert run(split, out, '--params-file', params) == 0
    err = capsys.readouterr().err
    line, = [ln for ln in err.splitlines() if 'metadata.yaml' in ln]
    assert f"'{split}' holds rec_0.mcap .. rec_1.mcap without a metadata.yaml" in line
    assert f'ros2 bag reindex {split}' in line
    assert sorted(statuses(out)) == ['other', 'rec_0', 'rec_1']
    # Bags with their metadata, or unrelated files, get no such line.
    assert not bag_runs.split_without_metadata([str(make_bags(tmp_path / 'b', ['a', 'b'])),
                                                str(make_bags(tmp_path / 'c', ['x.mcap',
                                                                               'y_1.mcap']))])
