# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""A multi-camera bag through dpt_bag and the same messages through the multi-camera node."""

import numpy as np

from dpt_ros.core import conversions as conv
from dpt_ros.core import outputs
from dpt_ros.offline.cli import main

from bagutil import read_bag, STORE, write_streams  # noqa: I100
from rosutil import Harness, rclpy_message, stamp_of
from test_bag_cameras import rig

from rosbags.rosbag2 import Reader  # noqa: E402, I100

CAMERAS = ('front', 'rear', 'side')


def node_outputs(recorded, tiny_metric):
    """Publish the recorded messages to a node with `cameras`, each image once it is free.

    Returns {topic: [messages]} of every output of every camera.
    """
    h = Harness()
    try:
        params = {'model.depth': str(tiny_metric), 'model.device': 'cpu'}
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
            if topic.endswith('depth/image'):
                assert a.encoding == b.encoding
                assert np.allclose(conv.image_to_array(a), conv.image_to_array(b), rtol=1e-4,
                                   atol=1e-5, equal_nan=True), topic
            elif topic.endswith('points'):
                pa, pb = conv.read_points(a), conv.read_points(b)
                assert pa.shape == pb.shape and a.point_step == b.point_step
                for axis in 'xyz':
                    assert np.allclose(pa[axis], pb[axis], rtol=1e-4, atol=1e-5,
                                       equal_nan=True), topic
            elif topic.endswith('camera_info'):
                assert list(a.k) == list(b.k) and (a.width, a.height) == (b.width, b.height)
            else:  # the viewing image: colours of nearly equal depths
                diff = np.abs(conv.image_to_array(a).astype(int) -
                              conv.image_to_array(b).astype(int))
                assert (a.width, a.height, a.encoding) == (b.width, b.height, b.encoding)
                assert diff.mean() < 1.0, topic
