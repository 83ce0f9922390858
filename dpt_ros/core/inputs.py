# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""The one table of input topics: what the node subscribes to and dpt_bag reads, by setting.

Each row is one input: its role in a frame (the image, its camera_info, the anchors and their
camera_info), its topic (relative, as the node names it), its message type and the setting
that makes the node subscribe to it. The node, the bag reader, the launch file's remapping
arguments and the topic table of doc/parameters.md iterates it. No rclpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Tuple

from dpt_ros.core.conversions import CLOUD_TYPE, COMPRESSED_TYPE, IMAGE_TYPE, INFO_TYPE

IMAGE, CAMERA_INFO, ANCHORS, ANCHORS_INFO = 'image', 'camera_info', 'anchors', 'anchors_info'


@dataclass(frozen=True)
class Input:
    """One row of the input table."""

    role: str           # IMAGE, CAMERA_INFO, ANCHORS or ANCHORS_INFO
    topic: str          # relative to the node's (or the camera's) namespace
    msg_type: str       # ROS type name
    setting: str        # the dotted setting that selects it ('' : always)
    value: str          # ... and its value
    shown: str          # the type as the topic table shows it
    when: str           # when it is read (the topic table)
    remapped: str = ''  # the topic a remap applies to, when not its own (image_transport)
    launch: str = ''    # the launch argument's description ('' : no argument of its own)
    also: Tuple[Tuple[str, str], ...] = ()  # further (setting, value) it needs

    def selected(self, cfg: Any) -> bool:
        """Whether the node reads this input under the settings cfg."""
        if not self.setting:
            return True
        for setting, value in ((self.setting, self.value),) + self.also:
            group, name = setting.split('.')
            if getattr(getattr(cfg, group), name) != value:
                return False
        return True

    @property
    def launch_argument(self) -> str:
        """The launch argument that remaps it ('' without one): anchors/depth -> anchors_depth."""
        return self.topic.replace('/', '_') if self.launch else ''

    def resolve(self, prefix: str, resolve: Any) -> str:
        """Return its full name under prefix, given the node's name resolution.

        image/compressed is the remapped image topic plus '/compressed', as image_transport
        names it, so remapping `image` moves both.
        """
        base = self.remapped or self.topic
        return resolve(prefix + base) + self.topic[len(base):]


INPUTS: Tuple[Input, ...] = (
    Input(IMAGE, 'image', IMAGE_TYPE, 'input.transport', 'raw', 'sensor_msgs/Image',
          '`input.transport: raw` (rgb8, bgr8, rgba8, bgra8, mono8, mono16, yuv422, bayer_* 8 '
          'and 16 bit, with `step` padding and either endianness)',
          launch='Input image topic (remap target, e.g. /camera/color/image_raw); with '
                 'input.transport compressed the node subscribes to <image>/compressed.'),
    Input(IMAGE, 'image/compressed', COMPRESSED_TYPE, 'input.transport', 'compressed',
          'sensor_msgs/CompressedImage', '`input.transport: compressed` (JPEG, PNG)',
          remapped='image'),
    Input(CAMERA_INFO, 'camera_info', INFO_TYPE, '', '', 'sensor_msgs/CameraInfo',
          'latest one kept; needed for `points`, `depth/camera_info` and normals from depth; '
          "Depth Pro's focal length (without it, its predicted field of view)",
          launch='Input CameraInfo topic (remap target, e.g. /camera/color/camera_info).'),
    Input(ANCHORS, 'anchors/depth', IMAGE_TYPE, 'anchors.source', 'depth_image',
          'sensor_msgs/Image 16UC1 mm or 32FC1 m',
          '`anchors.source: depth_image`: sparse metric depths registered to this camera '
          '([metric depth](metric-depth.md))',
          launch='depth.mode fitted, anchors.source depth_image: depth registered to the '
                 'colour image (e.g. /camera/aligned_depth_to_color/image_raw); with '
                 'anchors.transport compressedDepth the node subscribes to '
                 '<anchors_depth>/compressedDepth.',
          also=(('anchors.transport', 'raw'),)),
    Input(ANCHORS, 'anchors/depth/compressedDepth', COMPRESSED_TYPE, 'anchors.source',
          'depth_image', 'sensor_msgs/CompressedImage (compressedDepth)',
          '`anchors.source: depth_image`, `anchors.transport: compressedDepth`: the same depth '
          "as image_transport's compressedDepth plugin sends it (PNG or RVL)",
          remapped='anchors/depth', also=(('anchors.transport', 'compressedDepth'),)),
    Input(ANCHORS_INFO, 'anchors/camera_info', INFO_TYPE, 'anchors.source', 'depth_image',
          'sensor_msgs/CameraInfo',
          '`anchors.source: depth_image`, when `anchors/depth` has another resolution than '
          '`image`', launch='CameraInfo of anchors_depth when its resolution differs.'),
    Input(ANCHORS, 'anchors/points', CLOUD_TYPE, 'anchors.source', 'points',
          'sensor_msgs/PointCloud2 (x, y, z)',
          '`anchors.source: points`: a lidar or ToF cloud, in the optical frame or moved there '
          'by `anchors.extrinsic`',
          launch='depth.mode fitted, anchors.source points: a PointCloud2 (lidar, ToF).'),
)


def selected(cfg: Any) -> Tuple[Input, ...]:
    """Return the inputs the node reads under the settings cfg, in table order."""
    return tuple(i for i in INPUTS if i.selected(cfg))


def of_role(role: str, cfg: Any = None) -> Tuple[Input, ...]:
    """Return the rows of a role: all of them, or those the node reads under cfg."""
    return tuple(i for i in INPUTS if i.role == role and (cfg is None or i.selected(cfg)))


def launch_arguments() -> Dict[str, Tuple[str, str]]:
    """Return {launch argument: (default topic, description)} of the remappable inputs."""
    return {i.launch_argument: (i.topic, i.launch) for i in INPUTS if i.launch}


def markdown_rows() -> str:
    """Return the input rows of the topic table (doc/parameters.md)."""
    return '\n'.join(f'| `{i.topic}` (in) | {i.shown} | {i.when} |' for i in INPUTS)
