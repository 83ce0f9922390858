# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Settings validation, the parameter table and params-file reading (no ROS)."""

from pathlib import Path

import pytest

from dpt_ros.core.config import Config, config_from_flat, ConfigError
from dpt_ros.core.params import config_from_params_file, param_table, read_params_file


@pytest.mark.parametrize('flat, words', [
    ({'depth.max': -1.0}, ['depth.max', 'out of range']),
    ({'depth.scale': float('nan')}, ['depth.scale', 'finite']),
    ({'depth.encoding': '8UC1'}, ['depth.encoding', '32FC1, 16UC1']),
    ({'model.device': 'gpu0'}, ['model.device', 'cuda:N']),
    ({'depth.min': 5.0, 'depth.max': 2.0}, ['depth.min', 'depth.max']),
    ({'model.depth': '', 'model.segmentation': ''}, ['at least one']),
    ({'model.input_height': 384}, ['model.input_height', 'model.input_width']),
    ({'points.stride': 2.5}, ['points.stride', 'integer']),
    ({'points.organized': 'yes'}, ['points.organized', 'true or false']),
    ({'depth.mode': 'affine_inverse', 'depth.scale': 0.0}, ['affine_inverse']),
    ({'nosuch.thing': 1}, ['nosuch.thing']),
])
def test_bad_values_name_the_parameter(flat, words):
    with pytest.raises(ConfigError) as info:
        config_from_flat(flat)
    for w in words:
        assert w in str(info.value), str(info.value)


def test_ints_become_floats_and_defaults_validate():
    cfg = config_from_flat({'depth.max': 10, 'depth.scale': 2})
    assert cfg.depth.max == 10.0 and isinstance(cfg.depth.max, float)
    assert Config().validate() == Config()


def test_table_has_descriptions_ranges_and_choices():
    table = param_table()
    names = [p.name for p in table]
    assert len(names) == len(set(names))
    for p in table:
        assert len(p.description) > 20, p.name
        if p.type in (int, float) and p.name != 'model.engine_dir':
            assert p.range is not None, p.name
    by = {p.name: p for p in table}
    assert by['depth.encoding'].choices == ('32FC1', '16UC1')
    assert by['model.depth'].read_only and not by['depth.max'].read_only
    assert 'One of' in by['depth.mode'].describe()
    for needed in ('model.depth', 'model.segmentation', 'model.device', 'model.precision',
                   'model.backend', 'depth.mode', 'depth.scale', 'depth.shift', 'depth.min',
                   'depth.max', 'depth.encoding', 'points.stride', 'points.organized',
                   'points.rgb', 'segmentation.overlay_alpha', 'input.transport'):
        assert needed in by, needed


def test_params_file_sections_and_nesting(tmp_path):
    p = tmp_path / 'p.yaml'
    p.write_text(
        '/**:\n  ros__parameters:\n    depth: {max: 8, encoding: 16UC1}\n'
        '    use_sim_time: true\n'
        '/camera/dpt:\n  ros__parameters:\n    depth:\n      max: 6.5\n'
        '    points: {stride: 2}\n'
        'other_node:\n  ros__parameters:\n    depth: {max: 1.0}\n')
    flat = read_params_file(p, 'dpt')
    assert flat['depth.max'] == 6.5 and flat['points.stride'] == 2
    cfg = config_from_params_file(p, 'dpt')
    assert (cfg.depth.max, cfg.depth.encoding, cfg.points.stride) == (6.5, '16UC1', 2)
    bad = tmp_path / 'bad.yaml'
    bad.write_text('/**:\n  ros__parameters:\n    depth: {maxx: 3}\n')
    with pytest.raises(ConfigError, match='depth.maxx'):
        config_from_params_file(bad)
    with pytest.raises(ConfigError, match='cannot read'):
        config_from_params_file(tmp_path / 'missing.yaml')
    (tmp_path / 'junk.yaml').write_text('a: [1, 2\n')
    with pytest.raises(ConfigError, match='not valid YAML'):
        config_from_params_file(tmp_path / 'junk.yaml')


def test_params_file_ignores_other_nodes_settings_as_the_node_does(tmp_path):
    # A shared /** section may hold other nodes' settings: dpt_bag and dpt_build_engine read
    # the same file as the node, so they refuse only unknown names inside our groups.
    p = tmp_path / 'p.yaml'
    p.write_text('/**:\n  ros__parameters:\n    depth: {max: 8}\n    camera_name: front\n'
                 '    camera: [front]\n    qos_overrides: {image: {depth: 1}}\n')
    told = []
    cfg = config_from_params_file(p, 'dpt', warn=told.append)
    assert cfg.depth.max == 8
    assert len(told) == 1 and "'camera'" in told[0] and "did you mean 'cameras'" in told[0]
    p.write_text('/**:\n  ros__parameters:\n    cameras: {front: 1}\n')
    with pytest.raises(ConfigError, match='cameras.front'):
        config_from_params_file(p)


def test_camera_list_setting_and_launch_argument():
    from dpt_ros.core.params import parse_camera_list
    assert config_from_flat({'cameras': ['front', 'robot/rear', '/side']}).cameras == \
        ('front', 'robot/rear', '/side')
    assert config_from_flat({'cameras': None}).cameras == ()  # rclpy: an empty list is unset
    for bad, word in ((['a', 'a'], 'more than once'), (['a b'], 'not a valid name'),
                      ('front', r'list of text items, e.g. \[front, rear\]'),
                      (5, 'list of text items.*; got 5'),  # live: any type reaches it
                      ([''], 'not a valid name'),
                      ([f'c{i}' for i in range(40)], 'at most')):
        with pytest.raises(ConfigError, match=word):
            config_from_flat({'cameras': bad})
    for text, names in (('', []), ('[]', []), ('front,rear', ['front', 'rear']),
                        ("[front, 'rear']", ['front', 'rear'])):
        assert parse_camera_list(text) == names, text
    by = {p.name: p for p in param_table()}
    assert by['cameras'].read_only and by['cameras'].constraint() == 'list of names'
    assert not by['batch.max_size'].read_only and by['batch.max_size'].range == (1, 32)


def test_camera_extrinsics_give_each_camera_its_own_pose():
    """anchors.camera_extrinsics: 'CAMERA: x y z qx qy qz qw', a camera of cameras, once each."""
    from dpt_ros.core.config import check_settings, parse_camera_extrinsics
    base = {'cameras': ['front', '/rear', 'left'], 'anchors.extrinsic': '0 0 0 0 0 0 1'}
    cfg = config_from_flat({**base, 'anchors.camera_extrinsics': [
        'front: 0.1 0 -0.2 0.5 -0.5 0.5 0.5', ' /rear :-0.1, 0, -0.2, 0, 0, 0, 1']})
    a = cfg.anchors
    assert parse_camera_extrinsics(a.camera_extrinsics) == {
        'front': '0.1 0 -0.2 0.5 -0.5 0.5 0.5', 'rear': '-0.1, 0, -0.2, 0, 0, 0, 1'}
    # Each camera its own pose (named with or without the leading '/'); the others
    # anchors.extrinsic; the other settings untouched.
    assert a.for_camera('front').extrinsic == '0.1 0 -0.2 0.5 -0.5 0.5 0.5'
    assert a.for_camera('/rear').extrinsic == a.for_camera('rear').extrinsic
    assert a.for_camera('left') is a and a.for_camera('').extrinsic == '0 0 0 0 0 0 1'
    assert a.for_camera('front').max_age == a.max_age
    bad = {
        'front 0 0 0 0 0 0 1': r"entry 'front 0 0 0 0 0 0 1' is not 'CAMERA: x y z",
        'front:': r"entry 'front:' is not 'CAMERA: x y z",
        ': 0 0 0 0 0 0 1': r"entry ': 0 0 0 0 0 0 1' is not 'CAMERA",
        'front: 0 0 0 0 0 1': r"entry 'front: 0 0 0 0 0 1': the pose '0 0 0 0 0 1' must be "
                              '7 numbers',
        'front: 0 0 0 0 0 0 x': r"entry 'front: 0 0 0 0 0 0 x': the pose .* must be 7 numbers",
        'front: 0 0 0 0 0 0.5 0.5': r"entry 'front: 0 0 0 0 0 0.5 0.5': quaternion has norm "
                                    r'0\.7071; give a unit quaternion',
        'back: 0 0 0 0 0 0 1': r"entry 'back: 0 0 0 0 0 0 1': 'back' is not one of cameras "
                               r'\[front, /rear, left\]',
    }
    for entry, words in bad.items():
        with pytest.raises(ConfigError, match=r'anchors\.camera_extrinsics ' + words):
            config_from_flat({**base, 'anchors.camera_extrinsics': [entry]})
    with pytest.raises(ConfigError, match=r"entry 'rear: 0 0 0 0 0 0 1': camera 'rear' is "
                       'given more than once'):
        config_from_flat({**base, 'anchors.camera_extrinsics': [
            '/rear: 0 0 0 0 0 0 1', 'front: 0 0 0 0 0 0 1', 'rear: 0 0 0 0 0 0 1']})
    # One camera (no cameras list) has anchors.extrinsic alone.
    with pytest.raises(ConfigError, match=r'anchors\.camera_extrinsics is .* but cameras is '
                       'empty: one camera takes anchors.extrinsic'):
        config_from_flat({'anchors.camera_extrinsics': ['front: 0 0 0 0 0 0 1']})
    assert config_from_flat({}).anchors.camera_extrinsics == ()
    # Alone (a lifecycle node while unconfigured), the format is checked, not the names.
    check_settings({'anchors.camera_extrinsics': ['back: 0 0 0 0 0 0 1']})
    with pytest.raises(ConfigError, match='quaternion has norm'):
        check_settings({'anchors.camera_extrinsics': ['back: 0 0 0 0 0 0 3']})
    # Live, as anchors.extrinsic; a list of poses; one entry without brackets shows an example.
    by = {p.name: p for p in param_table()}
    assert not by['anchors.camera_extrinsics'].read_only
    assert not by['anchors.extrinsic'].read_only
    assert by['anchors.camera_extrinsics'].constraint() == 'list of camera poses'
    with pytest.raises(ConfigError, match=r"anchors\.camera_extrinsics must be a list of text "
                       r"items, e\.g\. \['front: 0\.1 0 -0\.2"):
        config_from_flat({**base, 'anchors.camera_extrinsics': 'front: 0 0 0 0 0 0 1'})


def test_warmup_sizes_are_width_by_height_frame_sizes():
    """model.warmup_sizes: 'WIDTHxHEIGHT' each, parsed in order, duplicates once, bad named."""
    from dpt_ros.core.config import MAX_WARMUP_SIZES, parse_sizes
    cfg = config_from_flat({'model.warmup_sizes': ['640x480', ' 1280 X 720 ', '640x480']})
    assert parse_sizes(cfg.model.warmup_sizes) == ((640, 480), (1280, 720))
    assert parse_sizes(()) == ()
    for bad in ('640', '640x', 'x480', '640x480x3', '0x480', '640x99999', '-640x480', 'wide'):
        with pytest.raises(ConfigError, match=r"model\.warmup_sizes: '.*' is not a frame size"):
            config_from_flat({'model.warmup_sizes': [bad]})
    many = [f'{64 + k}x48' for k in range(MAX_WARMUP_SIZES + 1)]
    with pytest.raises(ConfigError, match='at most'):
        config_from_flat({'model.warmup_sizes': many})
    # One size written without the brackets: the message shows a list of sizes, not of names.
    by = {p.name: p for p in param_table()}
    assert by['model.warmup_sizes'].constraint() == 'list of frame sizes'
    with pytest.raises(ConfigError, match=r"model\.warmup_sizes must be a list of text items, "
                       r"e\.g\. \['640x480', '1280x720'\]; got '640x480'"):
        config_from_flat({'model.warmup_sizes': '640x480'})


def test_cache_folder_follows_xdg_cache_home(monkeypatch, tmp_path):
    """Engines and the tools' checkpoints go under $XDG_CACHE_HOME/dpt_ros (absolute only)."""
    from dpt_ros.core.backends.export import engine_dir
    from dpt_ros.core.config import cache_dir
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
    assert engine_dir('') == tmp_path / 'dpt_ros' / 'engines'
    assert cache_dir('tools', 'bench') == tmp_path / 'dpt_ros' / 'tools' / 'bench'
    assert engine_dir(str(tmp_path / 'mine')) == tmp_path / 'mine'  # model.engine_dir wins
    home = Path('~/.cache/dpt_ros').expanduser()
    for unset in ('', 'relative/cache'):  # the XDG specification: ignore a relative path
        monkeypatch.setenv('XDG_CACHE_HOME', unset)
        assert engine_dir('') == home / 'engines'
    monkeypatch.delenv('XDG_CACHE_HOME')
    assert cache_dir() == home
