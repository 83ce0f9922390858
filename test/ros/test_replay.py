# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Bag replay into the live node with use_sim_time, /clock, and a loop back to the start."""

from rosbags.rosbag2 import Reader  # noqa: I100  (bagutil skips the module without rosbags)

from dpt_ros.core import conversions as conv
from dpt_ros.tools.sample import synthetic_scene, synthetic_sequence
from dpt_ros.tools.toolkit import write_params_file

from bagutil import IMAGE_TOPIC, INFO_TOPIC, STORE, write_bag  # noqa: I100
from rosutil import Harness, header, NodeProcess, rclpy_message, stamp_of

from builtin_interfaces.msg import Time  # noqa: E402, I100
from rclpy.qos import QoSProfile  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402


def test_replay_with_sim_time_and_loop(tmp_path, tiny_metric):
    frames = [(s.rgb, s.intrinsics, 1_600_000_000_000_000_000 + i * 200_000_000)
              for i, s in enumerate(synthetic_sequence(6, 160, 120))]
    bag = tmp_path / 'bag'
    stamps = write_bag(bag, frames, storage='sqlite3', compressed=True)
    with Reader(bag) as r:
        recorded = [(conn.topic, conn.msgtype, t, STORE.deserialize_cdr(raw, conn.msgtype))
                    for conn, t, raw in r.messages()]
    params = write_params_file(tmp_path / 'p.yaml', {
        'model.depth': str(tiny_metric), 'model.device': 'cpu',
        'input.transport': 'compressed', 'use_sim_time': True})
    node = NodeProcess(['--params-file', str(params), '-r', '__ns:=/camera/color',
                        '-r', f'image:={IMAGE_TOPIC}', '-r', f'camera_info:={INFO_TOPIC}'])
    h = Harness().start()
    try:
        h.record('/camera/color/depth/image', Image)
        h.record('/camera/color/points', __import__('sensor_msgs.msg').msg.PointCloud2)
        clock = h.node.create_publisher(Clock, '/clock', 10)
        # ros2 bag play offers the recorded QoS: reliable here.
        pubs = {IMAGE_TOPIC + '/compressed': h.node.create_publisher(
                    CompressedImage, IMAGE_TOPIC + '/compressed', QoSProfile(depth=10)),
                INFO_TOPIC: h.node.create_publisher(CameraInfo, INFO_TOPIC, QoSProfile(depth=10))}
        # Both matched before the first frame: a camera_info sent before the node's camera_info
        # subscription matched would be lost, and that frame would get no points.
        for pub in pubs.values():
            assert h.wait_subscribed(pub, 60), node.text()
        outputs_before = 0
        for loop in range(2):  # the second pass is the bag looping: the clock jumps back
            for topic, msgtype, t, msg in recorded:
                clock.publish(Clock(clock=Time(sec=t // 10**9, nanosec=t % 10**9)))
                pubs[topic].publish(rclpy_message(msg, msgtype))
                if topic == INFO_TOPIC:
                    continue
                want = [s for s in stamps if s <= t][-1]
                ok = h.wait(lambda: sum(stamp_of(m) == want
                                        for m in h.get('/camera/color/depth/image'))
                            > loop, 30)
                assert ok, f'pass {loop}: no output for stamp {want}\n{node.text()[-2000:]}'
            if loop == 0:
                outputs_before = len(h.get('/camera/color/depth/image'))
        depth = h.get('/camera/color/depth/image')
        assert len(depth) >= 2 * len(stamps) and outputs_before >= len(stamps)
        assert {stamp_of(m) for m in depth} == set(stamps)  # bag stamps kept, never now()
        assert h.wait(lambda: len(h.get('/camera/color/points')) >= 2 * len(stamps), 10)
        assert node.proc.poll() is None, node.text()
    finally:
        h.close()
        rc = node.stop()
    assert rc == 0 and 'Traceback' not in node.text(), node.text()


def test_sim_time_without_clock_measures_no_frame_age(harness, tiny_metric):
    """use_sim_time with no /clock (a bag played without --clock): ROS time is 0.

    Frames are processed as they come; the frame age, now - stamp, would be minus the stamp
    (decades), so none is recorded until /clock arrives.
    """
    ns = '/noclock'
    node = harness.start_node(ns, **{'model.depth': str(tiny_metric), 'model.device': 'cpu',
                                     'use_sim_time': True})
    harness.record_outputs(ns, ['depth/image'])
    img_pub, _ = harness.publishers(ns)
    assert harness.wait_subscribed(img_pub)
    s = synthetic_scene(64, 48)
    img_pub.publish(conv.image_msg(header(1), s.rgb, 'rgb8'))
    harness.wait_stamp(f'{ns}/depth/image', conv.stamp_ns(header(1)))
    stats = node.cameras[0].stats
    assert stats.report()[0]['frame_age_p50_ms'] == 'nan'
    # Once /clock runs, ages are measured against it.
    clock = harness.node.create_publisher(Clock, '/clock', 10)
    at = conv.stamp_ns(header(2)) + 250_000_000
    assert harness.wait(lambda: (clock.publish(Clock(clock=Time(
        sec=at // 10**9, nanosec=at % 10**9))), node.get_clock().now().nanoseconds > 0)[1], 10)
    img_pub.publish(conv.image_msg(header(2), s.rgb, 'rgb8'))
    harness.wait_stamp(f'{ns}/depth/image', conv.stamp_ns(header(2)))
    assert 0 <= float(stats.report()[0]['frame_age_p50_ms']) <= 250 + 1
