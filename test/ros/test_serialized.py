# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""SerializedPublisher: rcl publishes the node's kept buffer in place; subscribers get the message.

Real rclpy and DDS: a publisher and a subscriber in one process, messages of several sizes
through the same buffer, the fallback through rclpy's publish(bytes), a destroyed publisher.
"""

import time

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy', reason='rclpy (ROS 2) is not installed')
msgs = pytest.importorskip('sensor_msgs.msg', reason='sensor_msgs (ROS 2) is not installed')
Header = pytest.importorskip('std_msgs.msg').Header
Time = pytest.importorskip('builtin_interfaces.msg').Time

from rclpy.context import Context  # noqa: E402, I100
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.serialization import deserialize_message  # noqa: E402

from dpt_ros.core import cdr  # noqa: E402
from dpt_ros.core import conversions as conv  # noqa: E402
from dpt_ros.ros import serialized  # noqa: E402
from dpt_ros.ros.serialized import SerializedPublisher  # noqa: E402

pytestmark = pytest.mark.ros


class Link:
    """A publisher and a raw subscriber of one topic in one Context."""

    def __init__(self, topic, msg_class=msgs.Image):
        self.ctx = Context()
        rclpy.init(context=self.ctx)
        self.node = Node('dpt_serialized_test', context=self.ctx)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.node)
        self.got = []
        self.pub = self.node.create_publisher(msg_class, topic, 10)
        self.node.create_subscription(msg_class, topic, self.got.append, 10, raw=True)
        self.spin_until(lambda: self.pub.get_subscription_count() > 0)

    def spin_until(self, done, timeout=10.0):
        end = time.monotonic() + timeout
        while not done() and time.monotonic() < end:
            self.ex.spin_once(timeout_sec=0.05)
        assert done(), 'timed out'

    def receive(self, count):
        self.spin_until(lambda: len(self.got) >= count)
        return self.got[:count]

    def close(self):
        self.ex.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.ctx)


@pytest.fixture
def link():
    lk = Link('/dpt_serialized_test/depth')
    yield lk
    lk.close()


def depth_message(h, w, frame_id, sec, value):
    depth = np.full((h, w), value, np.float32)
    depth[0, 0] = np.nan
    hdr = Header(frame_id=frame_id, stamp=Time(sec=sec, nanosec=7))
    return cdr.fields_to_serialized(conv.IMAGE_TYPE, conv.image_fields(depth, '32FC1'), hdr)


def test_messages_of_every_size_arrive_as_serialized_through_one_buffer(link):
    sender = SerializedPublisher(link.pub)
    assert serialized.zero_copy_reason() is None
    assert sender.in_place, 'rcl reached through ctypes on this platform'
    # Large, then smaller (the buffer keeps the larger one's tail), then larger again.
    sizes = [(480, 640, 'camera_optical_frame'), (3, 5, 'c'), (600, 800, 'cam'), (1, 1, '')]
    sent = []
    for i, (h, w, frame_id) in enumerate(sizes):
        msg = depth_message(h, w, frame_id, 100 + i, 0.5 + i)
        sender.publish(msg)
        sent.append(msg.tobytes())
    got = link.receive(len(sizes))
    assert [bytes(g) for g in got] == sent
    for (h, w, frame_id), data in zip(sizes, got):
        img = deserialize_message(data, msgs.Image)
        assert (img.height, img.width, img.header.frame_id, img.encoding) == (
            h, w, frame_id, '32FC1')
    # The buffer grew to the largest message and was kept, not remade per message.
    assert len(sender._buffer) == max(len(s) for s in sent)


def test_write_then_send_publishes_once(link):
    sender = SerializedPublisher(link.pub)
    sender.write(depth_message(4, 6, 'cam', 5, 2.0))
    sender.send()
    sender.send()  # nothing written since: publishes nothing
    sender.publish(depth_message(2, 3, 'cam', 6, 3.0))
    got = link.receive(2)
    time.sleep(0.3)
    link.ex.spin_once(timeout_sec=0.1)
    assert len(link.got) == 2
    assert [deserialize_message(g, msgs.Image).header.stamp.sec for g in got] == [5, 6]


def test_without_rcl_it_publishes_the_same_bytes_through_rclpy(link, monkeypatch):
    monkeypatch.setattr(serialized, '_api', None)
    monkeypatch.setattr(serialized, '_reason', 'rcl not reachable (test)')
    sender = SerializedPublisher(link.pub)
    assert not sender.in_place
    assert serialized.zero_copy_reason() == 'rcl not reachable (test)'
    msg = depth_message(48, 64, 'cam', 9, 1.5)
    sender.publish(msg)
    assert [bytes(g) for g in link.receive(1)] == [msg.tobytes()]
    assert sender._buffer is None


def test_a_destroyed_publisher_raises_instead_of_publishing(link):
    sender = SerializedPublisher(link.pub)
    sender.write(depth_message(4, 4, 'cam', 1, 1.0))
    link.node.destroy_publisher(link.pub)
    with pytest.raises(Exception, match='(?i)destroy|invalid'):
        sender.send()


def test_a_failed_publication_raises_with_rcl_s_message(link, monkeypatch):
    class Handle:
        pointer = 0  # rcl refuses a null publisher with RCL_RET_PUBLISHER_INVALID

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    sender = SerializedPublisher(link.pub)
    sender.publisher = type('Pub', (), {'handle': Handle()})()
    sender.write(depth_message(4, 4, 'cam', 1, 1.0))
    with pytest.raises(RuntimeError, match=r'rcl_publish_serialized_message failed \(\d+\): .'):
        sender.send()
    # The error state was reset: rclpy's next call does not find it set.
    link.pub.publish(depth_message(2, 2, 'cam', 2, 1.0).tobytes())
    assert deserialize_message(link.receive(1)[0], msgs.Image).header.stamp.sec == 2
