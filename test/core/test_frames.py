# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""The one road of a frame (dpt_ros.core.frames): decode, calibrate, pair, run, serialize.

Messages here are plain objects with the message fields (no ROS): the road reads rclpy and
rosbags messages alike.
"""

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from dpt_ros.core import cdr
from dpt_ros.core import frames
from dpt_ros.core import outputs
from dpt_ros.core.config import AnchorsConfig, Config
from dpt_ros.core.conversions import FrameError
from dpt_ros.core.frames import Calibration, FrameIn
from dpt_ros.core.geometry import IntrinsicsError
from dpt_ros.core.outputs import EncodeOptions
from dpt_ros.core.pipeline import Pipeline
from dpt_ros.tools.sample import synthetic_scene


def header(sec, frame_id='cam_optical'):
    return SimpleNamespace(stamp=SimpleNamespace(sec=sec, nanosec=500), frame_id=frame_id)


def image(rgb, sec=1):
    h, w = rgb.shape[:2]
    return SimpleNamespace(header=header(sec), height=h, width=w, encoding='rgb8',
                           is_bigendian=0, step=w * 3, data=rgb.tobytes())


def camera_info(intr, k=None):
    """Return a CameraInfo-like object for an Intrinsics (k: another K, e.g. a malformed one)."""
    k = [intr.fx, 0, intr.cx, 0, intr.fy, intr.cy, 0, 0, 1] if k is None else k
    return SimpleNamespace(
        header=header(0), height=intr.height, width=intr.width, distortion_model='plumb_bob',
        d=[0.0] * 5, k=k, r=[1.0, 0, 0, 0, 1, 0, 0, 0, 1],
        p=[intr.fx, 0, intr.cx, 0, 0, intr.fy, intr.cy, 0, 0, 0, 1, 0],
        binning_x=0, binning_y=0,
        roi=SimpleNamespace(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


@pytest.fixture(scope='module')
def pipe(checkpoints):
    cfg = Config().replace({'model.depth': str(checkpoints('tiny-depth-anything')),
                            'model.device': 'cpu', 'depth.temporal': False})
    return Pipeline(cfg, log=lambda m: None)


def test_decode_raw_and_compressed_or_say_why():
    s = synthetic_scene(64, 48)
    f = FrameIn.decode(image(s.rgb, 7), False, camera='front', origin='mine')
    assert np.array_equal(f.frame.pixels, s.rgb) and f.frame.layout == 'rgb8'
    assert (f.camera, f.origin, f.stamp_ns, f.want) == ('front', 'mine', 7_000_000_500,
                                                        outputs.ALL)
    assert f.decode_ms >= 0 and f.group == ((48, 64, 3), 'rgb8')
    ok, png = cv2.imencode('.png', s.rgb[:, :, ::-1])
    g = FrameIn.decode(SimpleNamespace(header=header(8), format='png', data=png.tobytes()), True)
    assert g.frame.layout == 'bgr8' and np.array_equal(g.frame.pixels[..., ::-1], s.rgb)
    assert g.stamp_ns == 8_000_000_500
    with pytest.raises(FrameError, match='encoding'):
        FrameIn.decode(SimpleNamespace(**dict(vars(image(s.rgb)), encoding='8UC3')), False)


def test_decode_with_the_pipeline_refuses_a_frame_its_network_cannot_take(pipe):
    """A frame the network would resize to nothing is a FrameError when decoded with pipe.

    The node and dpt_bag decode with their pipeline: the frame is refused there, alone
    (skipped and counted), not in the forward it would share.
    """
    sliver = image(np.zeros((1, 4000, 3), np.uint8))
    assert FrameIn.decode(sliver, False).frame.width == 4000  # decodable as such
    with pytest.raises(FrameError, match='too small for the depth model'):
        FrameIn.decode(sliver, False, pipe)
    assert FrameIn.decode(image(synthetic_scene(64, 48).rgb), False, pipe).frame.height == 48


def test_calibration_converts_once_per_message_and_checks_each_frame():
    s = synthetic_scene(64, 48)
    cal = Calibration()
    assert cal.for_frame(64, 48, True) == (None, None)  # none yet: no intrinsics, no error
    info = camera_info(s.intrinsics)
    cal.update(info)
    intr, got = cal.for_frame(64, 48, True)
    assert got is info and (intr.fx, intr.cx, intr.source) == (s.intrinsics.fx,
                                                               s.intrinsics.cx, 'P')
    assert cal.for_frame(64, 48, True)[0] is intr  # the same message: converted once
    assert cal.for_frame(64, 48, False)[0].source == 'K'  # input.rectified changed
    with pytest.raises(IntrinsicsError, match='96x72'):
        cal.for_frame(96, 72, True)  # another size: every such frame is told
    cal.update(camera_info(s.intrinsics, k=[1.0] * 8))  # malformed: K has 8 values
    for _ in range(2):
        with pytest.raises(IntrinsicsError, match='K has 8 values'):
            cal.for_frame(64, 48, False)
    f = FrameIn.decode(image(s.rgb), False)
    with pytest.raises(IntrinsicsError):
        f.calibrate(cal, False)
    assert f.intrinsics is None and f.camera_info is None  # nothing half-set
    cal.update(info)
    f.calibrate(cal, True)
    assert f.intrinsics is not None and f.camera_info is info


def test_pair_asks_the_anchors_for_this_frame():
    s = synthetic_scene(64, 48)
    asked = []

    class Anchors:
        def for_frame(self, *args):
            asked.append(args)
            return 'anchors'
    f = FrameIn.decode(image(s.rgb, 3), False)
    cal = Calibration()
    cal.update(camera_info(s.intrinsics))
    f.calibrate(cal, True)
    cfg = AnchorsConfig()
    assert f.pair(Anchors(), cfg) == 'anchors' and f.anchors == 'anchors'
    assert asked == [(3_000_000_500, (64, 48), f.intrinsics, 'cam_optical', cfg)]


def test_run_groups_by_network_input_with_each_cameras_source_stamp_and_wants(pipe):
    calls = []

    class Spy:
        batch_key = pipe.batch_key

        def process_batch(self, frames_, intrs, want, **kwargs):
            calls.append((len(frames_), set(want), kwargs['sources'], kwargs['stamps']))
            return pipe.process_batch(frames_, intrs, want, **kwargs)
    # Depth Anything keeps the aspect ratio: 64x48 and 66x48 frames both become 56x70
    # network inputs (one forward), 96x72 ones 70x98.
    small, large, wider = synthetic_scene(64, 48), synthetic_scene(96, 72), synthetic_scene(66, 48)
    batch = [FrameIn.decode(image(small.rgb, 1), False, camera='a', want=frozenset({'depth'})),
             FrameIn.decode(image(large.rgb, 2), False, camera='b'),
             FrameIn.decode(image(small.rgb, 3), False, camera='c',
                            want=frozenset({'points'})),
             FrameIn.decode(image(wider.rgb, 4), False, camera='d', want=frozenset({'depth'}))]
    for f in batch:
        f.decode_ms = 1.5
    done = list(frames.run(Spy(), batch))
    assert [[f.camera for f, _ in d] for d in done] == [['a', 'c', 'd'], ['b']]
    assert calls == [(3, {'depth', 'points'}, ['a', 'c', 'd'], [1.0000005, 3.0000005, 4.0000005]),
                     (1, set(outputs.ALL), ['b'], [2.0000005])]
    assert all(r.timings['decode'] == 1.5 for d in done for _, r in d)
    assert [(r.height, r.width) for _, r in done[0]] == [(48, 64), (48, 64), (48, 66)]
    (f, r), = done[1]
    assert (r.height, r.width) == (72, 96)


def test_messages_are_the_cdr_of_the_wanted_outputs_under_the_frames_header(pipe):
    s = synthetic_scene(64, 48)
    want = frozenset({'depth', 'depth_info', 'points', 'depth_colored'})
    f = FrameIn.decode(image(s.rgb, 4), False, want=want)
    (_, r), = next(frames.run(pipe, [f]))
    assert sorted(r.arrays) == ['depth', 'depth_colored']  # no intrinsics yet: no cloud
    assert [o.name for o, _ in frames.messages(f, r, '32FC1')] == ['depth', 'depth_colored']
    cal = Calibration()
    info = camera_info(s.intrinsics)
    cal.update(info)
    f.calibrate(cal, True)
    (_, r), = next(frames.run(pipe, [f]))
    got = frames.messages(f, r, '16UC1')
    expected = [(o, cdr.fields_to_cdr(o.msg_type, fields, f.header, info))
                for o, fields in outputs.encode(r, EncodeOptions('16UC1', True), f.want)]
    assert [o.name for o, _ in got] == ['depth', 'depth_info', 'depth_colored', 'points']
    assert got == expected
    only = frames.messages(f, r, '16UC1', {'points'})
    assert only == [m for m in expected if m[0].name == 'points']
