# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""The one table of input topics (dpt_ros.core.inputs): which the node reads, how remaps apply."""

import pytest

from dpt_ros.core import inputs
from dpt_ros.core.config import Config


@pytest.mark.parametrize('settings, topics', [
    ({}, ['image', 'camera_info']),
    ({'input.transport': 'compressed'}, ['image/compressed', 'camera_info']),
    ({'depth.mode': 'fitted', 'anchors.source': 'depth_image'},
     ['image', 'camera_info', 'anchors/depth', 'anchors/camera_info']),
    ({'depth.mode': 'fitted', 'anchors.source': 'points', 'input.transport': 'compressed'},
     ['image/compressed', 'camera_info', 'anchors/points']),
    ({'depth.mode': 'fitted', 'anchors.source': 'depth_image',
      'anchors.transport': 'compressedDepth'},
     ['image', 'camera_info', 'anchors/depth/compressedDepth', 'anchors/camera_info']),
    ({'depth.mode': 'fitted', 'anchors.source': 'points', 'anchors.transport': 'compressedDepth'},
     ['image', 'camera_info', 'anchors/points']),
])
def test_the_settings_select_the_inputs(settings, topics):
    cfg = Config().replace(settings)
    assert [i.topic for i in inputs.selected(cfg)] == topics
    assert [i.role for i in inputs.selected(cfg)][:2] == [inputs.IMAGE, inputs.CAMERA_INFO]
    assert [i.topic for i in inputs.of_role(inputs.ANCHORS, cfg)] == \
        [t for t in topics if t.startswith(('anchors/depth', 'anchors/points'))]


def test_rows_and_roles():
    assert [i.topic for i in inputs.of_role(inputs.IMAGE)] == ['image', 'image/compressed']
    assert [i.topic for i in inputs.of_role(inputs.ANCHORS)] == [
        'anchors/depth', 'anchors/depth/compressedDepth', 'anchors/points']
    topics = [i.topic for i in inputs.INPUTS]
    assert len(set(topics)) == len(topics) and not any(t.startswith('/') for t in topics)


def test_a_remap_of_image_moves_image_compressed_too():
    remaps = {'image': '/camera/color/image_raw', 'front/image': '/front_cam/image_raw'}

    def resolve(name):
        return remaps.get(name, '/robot/' + name)
    raw, compressed = inputs.of_role(inputs.IMAGE)
    assert raw.resolve('', resolve) == '/camera/color/image_raw'
    assert compressed.resolve('', resolve) == '/camera/color/image_raw/compressed'
    assert compressed.resolve('front/', resolve) == '/front_cam/image_raw/compressed'
    info, = inputs.of_role(inputs.CAMERA_INFO)
    assert info.resolve('rear/', resolve) == '/robot/rear/camera_info'


def test_a_remap_of_anchors_depth_moves_its_compressed_depth_too():
    remaps = {'anchors/depth': '/camera/aligned_depth_to_color/image_raw'}

    def resolve(name):
        return remaps.get(name, '/robot/' + name)
    raw, compressed, _ = inputs.of_role(inputs.ANCHORS)
    assert compressed.resolve('', resolve) == \
        '/camera/aligned_depth_to_color/image_raw/compressedDepth'
    assert compressed.resolve('rear/', resolve) == '/robot/rear/anchors/depth/compressedDepth'


def test_launch_arguments_remap_every_input_but_the_transport_suffix():
    args = inputs.launch_arguments()
    assert {a: t for a, (t, _) in args.items()} == {
        'image': 'image', 'camera_info': 'camera_info', 'anchors_depth': 'anchors/depth',
        'anchors_camera_info': 'anchors/camera_info', 'anchors_points': 'anchors/points'}
    assert all(text.endswith('.') for _, text in args.values())
