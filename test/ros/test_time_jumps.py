# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Time jumping back under the live node: a bag played with --loop, a restarted simulation.

Images and anchors come stamped on a /clock the test publishes (use_sim_time), and their
stamps jump back to the start; nothing the node kept from the previous pass may shape the
outputs of the next one.
"""

from dataclasses import replace
import time

import numpy as np

from dpt_ros.core import conversions as conv
from dpt_ros.tools.evaluation import make_sequence

from rosutil import stamp_of  # noqa: I100
from test_node_anchors import depth_anchors, H, logged, NS, Rig, stamped, start, W

from rosgraph_msgs.msg import Clock  # noqa: E402, I100
from sensor_msgs.msg import Image  # noqa: E402

LAG = 0.03  # the aligned depth after its colour frame
# How long a frame may wait for it: long enough for a loaded machine, short of the frames of
# the previous pass nearest in stamp (0.4 s and more).
MAX_AGE = 0.3


def _count(harness, topic, stamp):
    return sum(stamp_of(m) == stamp for m in harness.get(topic))


def _pass(harness, rig, clock, scenes, steps, rng):
    """Play one pass: each frame's image, then its aligned depth (as a depth camera sends them).

    Return each frame's metres (None where no depth/image came).
    """
    out = []
    for i, s in zip(steps, scenes):
        hdr = stamped(i)
        stamp = conv.stamp_ns(hdr)
        before = {t: _count(harness, rig.prefix + t, stamp)
                  for t in ('depth/image', 'depth/relative')}
        clock.publish(Clock(clock=hdr.stamp))
        rig.image.publish(conv.image_msg(hdr, s.rgb, 'rgb8'))
        time.sleep(LAG)
        rig.anchors.publish(depth_anchors(s, hdr, rng, encoding='32FC1'))
        # depth/relative comes with every frame, metres or not.
        assert harness.wait(lambda: _count(harness, rig.prefix + 'depth/relative', stamp) >
                            before['depth/relative'], 30), 'frame not served'
        harness.wait(lambda: _count(harness, rig.prefix + 'depth/image', stamp) >
                     before['depth/image'], 1)
        got = [m for m in harness.get(rig.prefix + 'depth/image') if stamp_of(m) == stamp]
        out.append(conv.image_to_array(got[-1]) if len(got) > before['depth/image'] else None)
    return out


def _fitted_rig(harness, scenes):
    """Start a fitted node whose oracle knows these scenes; return its rig and a /clock."""
    node = start(harness, scenes, {'depth.mode': 'fitted', 'anchors.source': 'depth_image',
                                   'anchors.max_age': MAX_AGE, 'use_sim_time': True})
    rig = Rig(harness, node)
    rig.calibrate(scenes[0])
    return rig, harness.node.create_publisher(Clock, '/clock', 10)


def _true_metres(harness, rig, clock, scenes, steps, rng):
    """Play a pass (_pass) and check that every frame got the metres of its own scene."""
    for i, s, z in zip(steps, scenes, _pass(harness, rig, clock, scenes, steps, rng)):
        assert z is not None, f'frame {i}: no metres'
        err = float(np.nanmedian(np.abs(z / s.depth - 1)))
        assert err < 0.01, (i, err)


def _two_worlds():
    """Return the views of a room, and the same views of a room twice as deep.

    The new world has other colours (the oracle knows a view by its colours) and the same
    shapes: its relative depth is the first's, so no model could tell the two apart.
    """
    old = make_sequence(4, W, H)
    return old, [replace(s, rgb=255 - s.rgb, depth=2 * s.depth) for s in old]


def test_a_looping_bag_pairs_each_pass_with_its_own_anchors(harness):
    """The images loop before their anchors (an aligned depth comes after its colour frame).

    The first image of a pass must wait for its own anchor message, not go without one because
    the previous pass's are held: measured before, it got no metres at every loop ('no usable
    anchors yet', a warning, then 'anchors are back').
    """
    scenes = make_sequence(36, W, H)  # more anchor messages than the node keeps
    rig, clock = _fitted_rig(harness, scenes)
    rng = np.random.default_rng(0)
    _true_metres(harness, rig, clock, scenes, range(36), rng)
    _true_metres(harness, rig, clock, scenes[:3], range(3), rng)  # the loop
    assert not logged(harness, 'publishing no metres')


def test_a_restarted_simulation_never_pairs_the_previous_run_anchors(harness):
    """Another world under the same stamps (a simulation restarted: its clock starts again).

    The previous run's anchor message stamped as the new image is still held when the image
    comes: paired with it, the new view got the old world's metres (half its depth here).
    """
    old, new = _two_worlds()
    rig, clock = _fitted_rig(harness, old + new)
    rng = np.random.default_rng(1)
    steps = [0, 5, 10, 15]  # 0.5 s apart: the restart jumps 1.5 s back
    _true_metres(harness, rig, clock, old, steps, rng)
    _true_metres(harness, rig, clock, new, steps, rng)


def test_a_bag_recorded_later_gets_its_own_metres_at_once(harness):
    """Time jumps ahead: another bag played after the first, recorded an hour later.

    Its first image comes before its anchors, which are far behind it until theirs jump too,
    and its views look like the last bag's (the world twice as deep). Measured before: the
    first frame did not wait for its anchors and held the last bag's fit, an hour old; the next
    two, their anchor fits gated against that map, held it too: 0.50 off (half the depth),
    then no metres for a frame (anchors.hold_frames passed).
    """
    old, new = _two_worlds()
    rig, clock = _fitted_rig(harness, old + new)
    rng = np.random.default_rng(2)
    _true_metres(harness, rig, clock, old, range(4), rng)
    _true_metres(harness, rig, clock, new, range(36000, 36004), rng)  # 3600 s later


def test_relative_depth_is_not_aligned_across_a_loop(harness):
    """depth.temporal with relative_inverse: after the loop nothing is carried from its end.

    The second pass must publish exactly the first pass's depth/relative; measured before, each
    frame of it was aligned to the previous pass's end, 0.24-0.31 % off.
    """
    scenes = make_sequence(6, W, H)
    node = start(harness, scenes, {'depth.mode': 'relative_inverse', 'use_sim_time': True})
    image = harness.node.create_publisher(Image, f'{NS}/image', 5)
    harness.record(f'{NS}/depth/relative', Image)
    assert harness.wait_subscribed(image)
    clock = harness.node.create_publisher(Clock, '/clock', 10)
    cam = node.cameras[0]
    passes = []
    for _ in range(2):
        out = []
        for i, s in enumerate(scenes):
            hdr = stamped(5 * i)  # 0.5 s apart: the loop jumps 2.5 s back
            clock.publish(Clock(clock=hdr.stamp))
            image.publish(conv.image_msg(hdr, s.rgb, 'rgb8'))
            stamp = conv.stamp_ns(hdr)
            msg = harness.wait_stamp(f'{NS}/depth/relative', stamp)
            out.append(conv.image_to_array(msg))
            harness.clear()
        passes.append(out)
    assert cam.stats.processed == 2 * len(scenes)
    for i, (a, b) in enumerate(zip(*passes)):
        assert np.array_equal(a, b), (i, float(np.nanmax(np.abs(b / a - 1))))
