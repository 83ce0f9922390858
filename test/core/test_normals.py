# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Normals from depth and from a normals head: rendered planes of known orientation."""

import numpy as np
import pytest
import torch

from dpt_ros.core import normals as nm
from dpt_ros.core.geometry import Intrinsics, ray_grid
from dpt_ros.tools.sample import default_intrinsics, render_plane


def _unit(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def _rays(intr):
    return torch.from_numpy(ray_grid(intr)[0])


DISTORTED = Intrinsics(fx=70.0, fy=72.0, cx=40.3, cy=29.6, width=80, height=60,
                       distortion_model='plumb_bob', d=(-0.2, 0.05, 0.001, -0.002, 0.0))
# Planes facing the camera: fronto-parallel, a floor seen from a pitched camera, walls left
# and right, a steep oblique one.
PLANES = [(0, 0, -1), (0, -0.93, -0.35), (0.9, 0.12, -0.43), (-0.6, 0.2, -0.77),
          (0.3, 0.5, -0.81)]


@pytest.mark.parametrize('intr', [default_intrinsics(80, 60), DISTORTED],
                         ids=['pinhole', 'plumb_bob'])
def test_depth_normals_of_a_plane_are_its_normal(intr):
    depths, want = [], []
    for k, n in enumerate(PLANES):
        z = render_plane(n, 1.5 + 0.5 * k, intr)
        z[z > 100.0] = np.nan  # as depth.max would (float32 cannot carry a plane at 1e5 m)
        depths.append(z)
        want.append(_unit(n))
    # No jump limit here: far along a tilted plane neighbours differ by more than 5 %.
    got = nm.depth_normals(torch.from_numpy(np.stack(depths)), _rays(intr), max_jump=1e3)
    assert got.shape == (len(PLANES), intr.height, intr.width, 3) and got.dtype == torch.float32
    for k, n in enumerate(want):
        finite = torch.isfinite(got[k]).all(-1)
        hit = torch.from_numpy(np.isfinite(depths[k]))
        # Pixels whose ray meets the plane have a normal, image borders included (a pixel
        # at the plane's own end with no neighbour on the plane along an axis has none).
        assert not bool((finite & ~hit).any())
        assert bool(finite[0].any()) or not bool(hit[0].any())
        assert int((hit & ~finite).sum()) <= 0.01 * int(hit.sum()) + 1, k
        err = nm.angle_deg(got[k][finite], n.tolist())
        assert float(err.max()) < 0.05, f'plane {k} {PLANES[k]}: {float(err.max())} deg'
        length = torch.linalg.vector_norm(got[k][finite], dim=-1)
        assert torch.allclose(length, torch.ones_like(length), atol=1e-5)


def test_normals_face_the_camera_whichever_way_the_cross_product_turns():
    intr = default_intrinsics(40, 30)
    rays = _rays(intr)
    for n in PLANES:
        got = nm.depth_normals(torch.from_numpy(render_plane(n, 2.0, intr))[None], rays)[0]
        p = torch.cat([rays, torch.ones_like(rays[..., :1])], -1)  # direction of each pixel
        facing = (got * p).sum(-1)
        assert bool((facing[torch.isfinite(facing)] < 0).all()), n


def test_discontinuities_keep_each_side_and_drop_what_has_no_surface():
    intr = default_intrinsics(40, 30)
    z = np.full((30, 40), 4.0, np.float32)
    z[:, :20] = 2.0            # a step: two fronto-parallel planes
    z[10, 30] = 1.0            # one pixel floating in front of the far plane
    z[5:8, 5] = np.nan         # a hole
    z[:, 25] = 3.0             # a one-pixel-wide pole
    got = nm.depth_normals(torch.from_numpy(z)[None], _rays(intr))[0]
    finite = torch.isfinite(got).all(-1)
    # Both sides of the step keep their own plane's normal up to the edge, not a blend.
    for col in (18, 19, 20, 21):
        assert bool(finite[:, col].all()), col
        assert float(nm.angle_deg(got[:, col], (0.0, 0.0, -1.0)).max()) < 0.01, col
    # No surface continues: the floating pixel, the pole, the hole.
    assert not bool(finite[10, 30]) and not bool(finite[:, 25].any())
    assert not bool(finite[5:8, 5].any())
    # Beside the hole the other side still carries the surface.
    assert bool(finite[5:8, 4].all()) and bool(finite[5:8, 6].all())


def test_grazing_neighbours_beyond_max_jump_are_unknown():
    intr = default_intrinsics(160, 120)  # f = 128 px, horizon at row 59.5
    floor = render_plane((0, -1, 0), 1.0, intr)
    got = nm.depth_normals(torch.from_numpy(floor)[None], _rays(intr), max_jump=0.05)[0]
    known = torch.isfinite(got).all(-1).all(1)
    # Row v sees the floor at z = f / (v - cy): neighbouring rows differ by about
    # 1 / (v - cy), over 5 % within 20 rows of the horizon (like PCL's depth change factor).
    assert bool(known[82:].all()) and not bool(known[60:78].any())
    assert float(nm.angle_deg(got[82:], (0.0, -1.0, 0.0)).max()) < 0.05


def test_colours_are_half_n_plus_one_and_unknown_is_black():
    n = torch.tensor([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0],
                      [float('nan')] * 3])
    rgb = nm.colorize_normals(n)
    assert rgb.dtype == torch.uint8
    assert rgb.tolist() == [[128, 128, 0], [255, 128, 128], [128, 0, 128], [0, 0, 0]]


def test_point_normal_field_names_are_pcls():
    assert nm.NORMAL_FIELDS == ('normal_x', 'normal_y', 'normal_z')
