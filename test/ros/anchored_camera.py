# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""A camera process for the node's tests: images with their aligned depth, at a rate.

`python anchored_camera.py NS WIDTH HEIGHT HZ SECONDS`: publishes NS/image (rgb8),
NS/camera_info and NS/anchors/depth (32FC1, 300 true depths of the view, stamped like the
image and published just before it, as a depth camera's driver does) for SECONDS, cycling
through the views of dpt_ros.tools.evaluation.make_sequence (what the oracle model knows).
Prints how many frames it sent.
"""

import sys
import time

import numpy as np
import rclpy
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from dpt_ros.core import conversions as conv
from dpt_ros.tools.evaluation import make_sequence

VIEWS = 4


def main(argv):
    ns, width, height, hz, seconds = argv[0], int(argv[1]), int(argv[2]), float(argv[3]), \
        float(argv[4])
    scenes = make_sequence(VIEWS, width, height)
    rclpy.init()
    node = rclpy.create_node('anchored_camera_' + ns.strip('/').replace('/', '_'))
    qos = QoSProfile(depth=5)
    image = node.create_publisher(Image, f'{ns}/image', qos)
    info = node.create_publisher(CameraInfo, f'{ns}/camera_info', qos)
    anchors = node.create_publisher(Image, f'{ns}/anchors/depth', qos)
    end = time.monotonic() + 60
    while min(image.get_subscription_count(), anchors.get_subscription_count()) == 0:
        assert time.monotonic() < end, 'no subscriber'
        time.sleep(0.05)
    time.sleep(0.5)
    rng = np.random.default_rng(0)
    sent, t_next = 0, time.monotonic()
    end = t_next + seconds
    while time.monotonic() < end:
        s = scenes[sent % VIEWS]
        hdr = Header(frame_id='camera_color_optical_frame', stamp=node.get_clock().now().to_msg())
        z = np.full((height, width), np.nan, np.float32)
        pick = rng.choice(z.size, 300, replace=False)
        z.flat[pick] = s.depth.flat[pick]
        anchors.publish(conv.image_msg(hdr, z, '32FC1'))
        image.publish(conv.image_msg(hdr, s.rgb, 'rgb8'))
        info.publish(conv.camera_info_from_intrinsics(s.intrinsics, hdr))
        sent += 1
        t_next += 1.0 / hz
        time.sleep(max(0.0, t_next - time.monotonic()))
    print(f'sent {sent}', flush=True)
    time.sleep(1.0)  # let the last messages go out
    node.destroy_node()
    rclpy.try_shutdown()


if __name__ == '__main__':
    main(sys.argv[1:])
