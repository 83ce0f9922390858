# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Which variable names the Fast DDS profile: checked in real processes, by what they create.

A Fast DDS participant with the shipped profile in effect creates a 64 MB shared-memory
segment in /dev/shm; one with Fast DDS defaults a 512 KB one. So whether a profile file is in
effect in a process is read off the segment that process creates, not off its environment.
"""

import ast
import os
from pathlib import Path
import subprocess
import sys

import pytest

from dpt_ros.ros import fastdds

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / 'config' / 'fastdds_large_frames.xml'
SEGMENT = 64 * 1024 * 1024  # the shipped profile's segment_size

# A participant, then the sizes of the shared-memory segments it created.
PARTICIPANT = r"""
import glob, os, sys, time
def segments():
    return {p for p in glob.glob('/dev/shm/fastrtps_*') + glob.glob('/dev/shm/fastdds_*')
            if not p.endswith('_el') and '_port' not in p}
before = segments()
import rclpy
from std_msgs.msg import String
rclpy.init()
node = rclpy.create_node('fastdds_profile_check')
node.create_publisher(String, 'fastdds_profile_check', 10)
time.sleep(0.3)
print(sorted(os.path.getsize(p) for p in segments() - before))
node.destroy_node()
rclpy.shutdown()
"""

RMW = os.environ.get('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')
needs_fastdds = pytest.mark.skipif(not os.path.isdir('/dev/shm') or 'fastrtps' not in RMW,
                                   reason='needs Fast DDS (the default rmw) and /dev/shm')


def segment_sizes(env):
    """Run one participant with env (no profile variable but those given): its segments."""
    base = {k: v for k, v in os.environ.items() if k not in fastdds.PROFILE_VARS}
    proc = subprocess.run([sys.executable, '-c', PARTICIPANT], capture_output=True, text=True,
                          timeout=60, env=dict(base, **env))
    assert proc.returncode == 0, proc.stderr
    return ast.literal_eval(proc.stdout.strip().splitlines()[-1])  # the sizes it printed


@needs_fastdds
def test_the_variables_we_set_put_the_profile_in_effect_and_the_other_is_ignored():
    """profile_env names the profile the way this Fast DDS reads it; Jazzy ignores FASTDDS_."""
    major = fastdds.fastdds_major()
    assert major in (2, 3), 'rclpy is loaded here, with the Fast DDS of this ROS'
    with open('/proc/self/maps') as f:
        assert major == fastdds.major_from_maps(f.read())  # the library, not ROS_DISTRO
    env = fastdds.profile_env(str(PROFILE), major)
    assert list(env) == [fastdds.FASTRTPS_VAR if major == 2 else fastdds.FASTDDS_VAR]
    with_profile = segment_sizes(env)
    assert with_profile and max(with_profile) >= SEGMENT, with_profile
    assert max(segment_sizes({})) < SEGMENT  # Fast DDS defaults
    # The variable this Fast DDS does not prefer: ignored by Fast DDS 2, read by Fast DDS 3.
    other = segment_sizes({fastdds.FASTDDS_VAR if major == 2 else fastdds.FASTRTPS_VAR:
                           str(PROFILE)})
    if major == 2:
        assert max(other) < SEGMENT, other
        assert fastdds.ignored_profile({fastdds.FASTDDS_VAR: str(PROFILE)}, major)
    else:
        assert max(other) >= SEGMENT, other
        assert not fastdds.ignored_profile({fastdds.FASTRTPS_VAR: str(PROFILE)}, major)
    # Unknown Fast DDS: both, so that either reads it.
    assert fastdds.profile_env('p.xml', None) == {fastdds.FASTDDS_VAR: 'p.xml',
                                                  fastdds.FASTRTPS_VAR: 'p.xml'}


def test_the_major_version_from_the_library_or_the_distribution():
    maps = ('7f00-7f01 r-xp 0 08:01 1 /opt/ros/jazzy/lib/libfastrtps.so.2.14.5\n'
            '7f02-7f03 r-xp 0 08:01 2 /usr/lib/libc.so.6\n')
    assert fastdds.major_from_maps(maps) == 2
    assert fastdds.major_from_maps('7f00-7f01 r-xp 0 08:01 1 /x/libfastdds.so.3.2.1\n') == 3
    assert fastdds.major_from_maps('7f00-7f01 r-xp 0 08:01 1 /x/libddsc.so.0\n') is None
    assert [fastdds.major_from_distro(d) for d in ('humble', 'jazzy', 'Jazzy ', 'kilted',
                                                   'rolling', '', None)] == \
        [2, 2, 2, 3, 3, None, None]


def test_what_is_in_effect_and_what_is_said_about_an_ignored_profile():
    dds, rtps = fastdds.FASTDDS_VAR, fastdds.FASTRTPS_VAR
    assert fastdds.profile_in_effect({dds: 'a.xml'}, 2) == ''
    assert fastdds.profile_in_effect({dds: 'a.xml', rtps: 'b.xml'}, 2) == 'b.xml'
    assert fastdds.profile_in_effect({rtps: 'b.xml'}, 3) == 'b.xml'
    assert fastdds.profile_in_effect({dds: 'a.xml', rtps: 'b.xml'}, 3) == 'a.xml'
    assert fastdds.profile_in_effect({}, None) == ''
    said = fastdds.ignored_profile({dds: 'a.xml'}, 2)
    assert 'a.xml' in said and rtps in said and 'not in effect' in said
    assert fastdds.ignored_profile({dds: 'a.xml', rtps: 'a.xml'}, 2) == ''
    assert fastdds.ignored_profile({dds: 'a.xml'}, 3) == ''
    assert fastdds.ignored_profile({dds: 'a.xml'}, None) == ''
    assert fastdds.ignored_profile({}, 2) == ''
