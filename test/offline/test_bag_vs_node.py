# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""A multi-camera bag through dpt_bag and the same messages through the multi-camera node."""

import time

import numpy as np

from dpt_ros.core import conversions as conv
from dpt_ros.core import outputs
from dpt_ros.offline.cli import main
from dpt_ros.tools.toolkit import write_params_file

from bagutil import read_bag, STORE, synthetic_frames, write_streams  # noqa: I100
from rosutil import Harness, rclpy_message, stamp_of
from test_bag_cameras import rig

from rclpy.qos import QoSProfile  # noqa: E402, I100
from rosbags.rosbag2 import Reader  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

CAMERAS = ('front', 'rear', 'side')


def node_outputs(recorded, tiny_metric):
    """Publish the recorded messages to a node with `cameras`, each image once it is free.

    Returns {topic: [messages]} of every output of every camera.
    """
    h = Harness()
    try:
        # Normals from depth too (a bag writes them when normals.source says so).
        params = {'model.depth': str(tiny_metric), 'model.device': 'cpu',
                  'normals.source': 'depth'}
        node = h.start_node('', cameras=CAMERAS, **params)
        topics = [f'/{c}/{o.topic}' for c in CAMERAS for o in outputs.OUTPUTS]
        for c in CAMERAS:
            h.record_outputs(f'/{c}')
        pubs = {c: h.publishers(f'/{c}') for c in CAMERAS}
        for img, info in pubs.values():
            assert h.wait_subscribed(img) and h.wait_subscribed(info)
        h.wait(lambda: all(node.cameras[k].subscribed('depth') for k in range(3)), 10)
        for topic, msgtype, msg in recorded:
            cam = topic.split('/')[1]
            img, info = pubs[cam]
            if msgtype.endswith('CameraInfo'):
                info.publish(rclpy_message(msg, msgtype))
                # The node keeps the newest camera_info: wait until it has this one.
                assert h.wait(lambda: node.cameras[CAMERAS.index(cam)].camera_info is not None
                              and node.cameras[CAMERAS.index(cam)].camera_info.header.stamp
                              == rclpy_message(msg, msgtype).header.stamp, 10)
                continue
            stamp = conv.stamp_ns(msg.header)
            img.publish(rclpy_message(msg, msgtype))
            assert h.wait(lambda: any(stamp_of(m) == stamp
                                      for m in h.get(f'/{cam}/depth/image')), 30), topic
        h.wait(lambda: False, 0.5)  # the last frame's other outputs
        return {t: h.get(t) for t in topics if h.get(t)}
    finally:
        h.close()


def test_bag_writes_what_the_node_publishes(tmp_path, tiny_metric):
    streams = rig(root='', image='image', cameras=CAMERAS)
    src = tmp_path / 'rig'
    write_streams(src, streams)
    params = tmp_path / 'p.yaml'
    params.write_text('/**:\n  ros__parameters:\n    model:\n'
                      f'      depth: {tiny_metric}\n      device: cpu\n'
                      '    normals: {source: depth}\n'
                      f"    cameras: [{', '.join(CAMERAS)}]\n")
    dst = tmp_path / 'out'
    assert main([str(src), str(dst), '--params-file', str(params), '--quiet']) == 0
    bag = {t: [m for _, m in msgs] for t, msgs in read_bag(dst).items()}
    with Reader(src) as r:
        recorded = [(conn.topic, conn.msgtype, STORE.deserialize_cdr(raw, conn.msgtype))
                    for conn, _, raw in r.messages()]
    live = node_outputs(recorded, tiny_metric)
    assert sorted(bag) == sorted(live)  # the same topic names, per camera
    # depth/image, depth/camera_info, points, depth/colored, normals/image and
    # normals/colored of each camera
    assert len(bag) == 6 * len(CAMERAS)
    for topic, msgs in bag.items():
        got = live[topic]
        assert [stamp_of(m) for m in msgs] == [stamp_of(m) for m in got], topic
        assert [m.header.frame_id for m in msgs] == [m.header.frame_id for m in got], topic
        for a, b in zip(msgs, got):
            if topic.endswith('/image'):  # depth/image, normals/image: floats, NaN where none
                assert a.encoding == b.encoding and a.encoding.startswith('32FC'), topic
                # Depth in metres, relative; normals are unit vectors: 5e-4 is 0.03 degrees
                # (the depths agree to ~2e-6 relative; the normals, from their gradients, to
                # 1.6e-4 at worst).
                tol = {'rtol': 0, 'atol': 5e-4} if 'normals' in topic else \
                    {'rtol': 1e-4, 'atol': 1e-5}
                assert np.allclose(conv.image_to_array(a), conv.image_to_array(b),
                                   equal_nan=True, **tol), topic
            elif topic.endswith('points'):
                pa, pb = conv.read_points(a), conv.read_points(b)
                assert pa.shape == pb.shape and a.point_step == b.point_step
                for axis in 'xyz':
                    assert np.allclose(pa[axis], pb[axis], rtol=1e-4, atol=1e-5,
                                       equal_nan=True), topic
            elif topic.endswith('camera_info'):
                assert list(a.k) == list(b.k) and (a.width, a.height) == (b.width, b.height)
            else:  # the viewing images (rgb8): colours of nearly equal depths / normals
                assert a.encoding == 'rgb8', topic
                diff = np.abs(conv.image_to_array(a).astype(int) -
                              conv.image_to_array(b).astype(int))
                assert (a.width, a.height, a.encoding) == (b.width, b.height, b.encoding)
                assert diff.mean() < 1.0, topic


NS = '/cam'


def trailing_anchors_through_bag(tmp_path, tiny_depth, n, settings):
    """Write n frames at 30 Hz, each one's aligned depth logged 20 ms after it, run dpt_bag.

    Each frame's anchors follow a map of their own (10 % apart: test_bag_anchors._scale).
    Returns the input bag, the image stamps, {stamp: the bag's depth/image array} and the
    tiny model's relative depth of each frame (what the anchor maps were made from).
    """
    from test_bag_anchors import _anchor_image, _relative, _write
    frames = synthetic_frames(n, period=33_333_333, t0=1_700_000_000_000_000_000)
    rels = _relative(tiny_depth, frames)
    rng = np.random.default_rng(1)
    src = tmp_path / 'in'
    _write(src, frames, [(f'{NS}/anchors/depth', 'sensor_msgs/msg/Image', stamp + 20_000_000,
                          _anchor_image(rel, i, stamp, rng))
                         for i, ((_, _, stamp), rel) in enumerate(zip(frames, rels))],
           image_topic=f'{NS}/image', info_topic=f'{NS}/camera_info')
    params = write_params_file(tmp_path / 'p.yaml', settings)
    dst = tmp_path / 'out'
    assert main([str(src), str(dst), '--params-file', str(params), '--image-topic',
                 f'{NS}/image', '--anchors-topic', f'{NS}/anchors/depth', '--quiet']) == 0
    bag = {stamp_of(m): conv.image_to_array(m) for _, m in read_bag(dst)[f'{NS}/depth/image']}
    stamps = [stamp for _, _, stamp in frames]
    assert sorted(bag) == stamps
    return src, stamps, bag, rels


def test_node_and_bag_pair_anchors_that_trail_their_images_alike(tmp_path, tiny_depth):
    """Aligned depth logged 20 ms after its image (30 Hz): both pair each frame with its own.

    Each frame's anchors follow a map of their own (10 % apart), so a frame paired with the
    anchor before it (33 ms older, inside anchors.max_age) publishes other metres.
    """
    from test_bag_anchors import _scale
    settings = {'model.depth': str(tiny_depth), 'model.device': 'cpu', 'depth.mode': 'fitted',
                'depth.temporal': False, 'depth.max': 10000.0, 'depth.min': 0.0,
                'anchors.source': 'depth_image'}
    src, stamps, bag, rels = trailing_anchors_through_bag(tmp_path, tiny_depth, 8, settings)
    for i, stamp in enumerate(stamps):  # the bag: every frame fitted to its own anchors
        s, b = _scale(i)
        assert np.allclose(bag[stamp], 1.0 / (s * rels[i] + b), rtol=2e-3), i
    live = replay_to_node(src, NS, settings)
    for i, stamp in enumerate(stamps):
        if stamp in live:
            assert np.allclose(live[stamp], bag[stamp], rtol=1e-4, atol=1e-5), i
    assert sorted(live) == stamps


def replay_to_node(src, ns, settings, served='depth/relative'):
    """Publish a bag's messages to a node in log order, spaced as logged, one frame at a time.

    served: the output every frame gets (the next frame waits for it). Returns {stamp:
    depth/image array} of what the node published.
    """
    with Reader(src) as r:
        recorded = sorted(((t, conn.topic, conn.msgtype,
                            STORE.deserialize_cdr(raw, conn.msgtype))
                           for conn, t, raw in r.messages()), key=lambda m: m[0])
    frames = len([m for m in recorded if m[1] == f'{ns}/image'])
    h = Harness()
    try:
        node = h.start_node(ns, **settings)
        for t in ('depth/image', 'depth/relative'):
            h.record(f'{ns}/{t}', Image)
        qos = QoSProfile(depth=5)
        pubs = {topic: h.node.create_publisher(CameraInfo if kind.endswith('CameraInfo')
                                               else Image, topic, qos)
                for _, topic, kind, _ in recorded}
        assert all(h.wait_subscribed(p) for p in pubs.values())
        assert h.wait(lambda: node.cameras[0].subscribed('depth'), 10)
        previous, last = None, recorded[0][0]
        for t, topic, kind, msg in recorded:  # in log order, spaced as recorded
            time.sleep((t - last) / 1e9)
            last = t
            if topic == f'{ns}/image' and previous is not None:
                # One frame at a time (as node_outputs): the node drops none.
                h.wait_stamp(f'{ns}/{served}', previous, 30)
            pubs[topic].publish(rclpy_message(msg, kind))
            if topic == f'{ns}/image':
                previous = stamp_of(msg)
        h.wait_stamp(f'{ns}/{served}', previous, 30)
        h.wait(lambda: len(h.get(f'{ns}/depth/image')) >= frames, 2)
        return {stamp_of(m): conv.image_to_array(m) for m in h.get(f'{ns}/depth/image')}
    finally:
        h.close()


def test_node_and_bag_give_a_prompted_model_the_same_trailing_prompts(
        tmp_path, tiny_depth, checkpoints):
    """Prompt Depth Anything, aligned depth logged 20 ms after each image: node == dpt_bag.

    Issue: the node held frames for their own anchors only in depth.mode fitted; a prompted
    model's frame took the previous frame's depth as its prompt (dpt_bag pairs its own).
    """
    # anchors.max_age 0.5 s: a loaded machine delivering an aligned depth image late still
    # pairs it (each frame's own anchors carry its exact stamp).
    settings = {'model.depth': str(checkpoints('tiny-prompt-depth-anything')),
                'model.device': 'cpu', 'depth.temporal': False, 'depth.max': 10000.0,
                'depth.min': 0.0, 'anchors.source': 'depth_image', 'anchors.max_age': 0.5}
    # dpt_bag's default --batch 4: still one frame of the camera per forward (each prompt is
    # guided by the camera's previous output, as in the node).
    src, stamps, bag, _ = trailing_anchors_through_bag(tmp_path, tiny_depth, 6, settings)
    live = replay_to_node(src, NS, settings, served='depth/image')  # metric: no relative
    assert sorted(live) == stamps
    for i, stamp in enumerate(stamps):
        assert np.allclose(live[stamp], bag[stamp], rtol=1e-3, atol=1e-5, equal_nan=True), i
