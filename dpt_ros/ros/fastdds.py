# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Which Fast DDS profile file a process reads, and the variable that names it.

Fast DDS reads its XML profile file from an environment variable whose name changed with
Fast DDS 3:
- Fast DDS 2 (Humble, Iron, Jazzy) reads FASTRTPS_DEFAULT_PROFILES_FILE only: a
  FASTDDS_DEFAULT_PROFILES_FILE set alone is ignored and the process runs with Fast DDS
  defaults (a 512 KB shared-memory segment);
- Fast DDS 3 (Kilted on) reads FASTDDS_DEFAULT_PROFILES_FILE, and rmw_fastrtps still loads
  FASTRTPS_DEFAULT_PROFILES_FILE, logging a deprecation warning in every process that has it.
Checked with the Jazzy (Fast DDS 2.14) and Kilted (Fast DDS 3.2) wheels by the size of the
shared-memory segment each process creates. So a process told about a profile should be told
through the one variable its Fast DDS reads (both where that cannot be known).

The Fast DDS in reach is the one mapped into this process (rclpy loads the rmw and its Fast
DDS library), else the one ROS_DISTRO implies. No rclpy import at module level: the launch
file and the tools use this too.
"""

from __future__ import annotations

import os
from typing import Dict, Mapping, Optional, Tuple

FASTDDS_VAR = 'FASTDDS_DEFAULT_PROFILES_FILE'
FASTRTPS_VAR = 'FASTRTPS_DEFAULT_PROFILES_FILE'
PROFILE_VARS = (FASTDDS_VAR, FASTRTPS_VAR)

# ROS 2 distributions released with Fast DDS 2 (Kilted and Rolling since 2024: Fast DDS 3).
FAST_DDS_2_DISTROS = ('foxy', 'galactic', 'humble', 'iron', 'jazzy')

# The Fast DDS library's file name per major version (libfastrtps.so.2.14, libfastdds.so.3.2).
_LIBRARIES = (('libfastrtps.so.2', 2), ('libfastdds.so.3', 3))


def major_from_maps(maps: str) -> Optional[int]:
    """2 or 3 from the Fast DDS library named in /proc/<pid>/maps text (None: none mapped)."""
    for line in maps.splitlines():
        name = line.rsplit('/', 1)[-1]
        for prefix, major in _LIBRARIES:
            if name.startswith(prefix):
                return major
    return None


def major_from_distro(distro: Optional[str]) -> Optional[int]:
    """2 or 3 from a ROS_DISTRO value (None when unset)."""
    distro = (distro or '').strip().lower()
    if not distro:
        return None
    return 2 if distro in FAST_DDS_2_DISTROS else 3


def _mapped_major() -> Optional[int]:
    try:
        with open('/proc/self/maps') as f:
            return major_from_maps(f.read())
    except OSError:  # not Linux: the distribution decides
        return None


def fastdds_major() -> Optional[int]:
    """Return the major version of the Fast DDS this process uses (None when unknown).

    The library mapped into the process first (asking rclpy for the rmw identifier loads the
    rmw where it is loaded lazily), then ROS_DISTRO. None under another rmw with no ROS_DISTRO.
    """
    major = _mapped_major()
    if major is None:
        try:
            import rclpy
            rclpy.get_rmw_implementation_identifier()
        except Exception:  # noqa: B902 - no rclpy or no rmw here: the distribution decides
            pass
        else:
            major = _mapped_major()
    if major is None:
        major = major_from_distro(os.environ.get('ROS_DISTRO'))
    return major


def reading_vars(major: Optional[int]) -> Tuple[str, ...]:
    """Return the variables a Fast DDS of this major version reads, the preferred one first."""
    if major == 2:
        return (FASTRTPS_VAR,)
    return PROFILE_VARS  # Fast DDS 3, or unknown: either may be the one read


def profile_in_effect(env: Mapping[str, str], major: Optional[int]) -> str:
    """Return the profile file this Fast DDS reads from env ('' when none is named)."""
    return next((env[v] for v in reading_vars(major) if env.get(v)), '')


def ignored_profile(env: Mapping[str, str], major: Optional[int]) -> str:
    """Say what is wrong when env names a profile only through a variable this Fast DDS ignores.

    '' when nothing is wrong (no profile named, or one named the way this Fast DDS reads it).
    """
    if major != 2 or env.get(FASTRTPS_VAR) or not env.get(FASTDDS_VAR):
        return ''
    return (f'{FASTDDS_VAR}={env[FASTDDS_VAR]} is set, but Fast DDS 2 (Humble, Iron, Jazzy) '
            f'reads only {FASTRTPS_VAR}: that profile is not in effect and this process runs '
            f'with Fast DDS defaults. Set {FASTRTPS_VAR} to the same file.')


def profile_env(profile: str, major: Optional[int]) -> Dict[str, str]:
    """Env vars naming profile for processes running this Fast DDS (both when unknown)."""
    if major == 2:
        return {FASTRTPS_VAR: profile}
    if major == 3:
        return {FASTDDS_VAR: profile}
    return {var: profile for var in PROFILE_VARS}
