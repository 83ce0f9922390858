# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Back-projection against analytic scenes and real ground-truth depth."""

import math

import cv2
import numpy as np
import pytest
import torch

from dpt_ros.core import postprocess as post
from dpt_ros.core.geometry import Backprojector, Intrinsics, IntrinsicsError, project

K = {'fx': 525.0, 'fy': 520.0, 'cx': 319.5, 'cy': 239.5, 'width': 640, 'height': 480}


def test_plane_at_two_metres_organized_and_strided():
    intr = Intrinsics(**K)
    depth = torch.full((480, 640), 2.0)
    depth[100:110, 200:220] = float('nan')
    for stride in (1, 2, 5):
        pts, h, w = Backprojector()(depth, intr, stride=stride)
        assert (h, w) == (math.ceil(480 / stride), math.ceil(640 / stride))
        p = pts.numpy().reshape(h, w, 4)
        v, u = np.mgrid[0:480:stride, 0:640:stride].astype(np.float64)
        ok = np.isfinite(p[..., 2])
        assert np.allclose(p[..., 2][ok], 2.0)
        assert np.abs(p[..., 0][ok] - ((u - K['cx']) * 2.0 / K['fx'])[ok]).max() < 1e-5
        assert np.abs(p[..., 1][ok] - ((v - K['cy']) * 2.0 / K['fy'])[ok]).max() < 1e-5
        # invalid depth stays NaN in x, y, z in an organized cloud
        assert np.isnan(p[~ok][:, :3]).all()
        if stride == 1:
            assert (~ok).sum() == 10 * 20


def test_dense_cloud_keeps_only_valid_points():
    intr = Intrinsics(**K)
    depth = torch.full((480, 640), 3.0)
    depth[:240] = float('nan')
    pts, h, w = Backprojector()(depth, intr, stride=2, organized=False)
    assert h == 1 and w == 120 * 320 and torch.isfinite(pts[:, :3]).all()


def test_rgb_is_packed_bits():
    intr = Intrinsics(fx=10, fy=10, cx=1.5, cy=1.5, width=4, height=4)
    rgb = torch.zeros((4, 4, 3), dtype=torch.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 255, 128, 7
    pts, _, _ = Backprojector()(torch.ones(4, 4), intr, rgb=rgb)
    bits = pts[:, 3].numpy().view(np.uint32)
    assert (bits == (255 << 16 | 128 << 8 | 7)).all()


def test_metres_are_nan_outside_the_valid_range():
    """to_metres keeps finite depth > 0 within [depth.min, depth.max] and NaNs the rest."""
    raw = torch.tensor([float('nan'), float('inf'), -float('inf'), -1.0, 0.0, 0.05, 0.5, 5.0,
                        20.0, 1e30])
    for dmin, dmax in ((0.0, 10.0), (0.1, 10.0), (0.5, 5.0), (-1.0, 10.0),
                       (0.0, float('inf')), (0.1, float('inf'))):
        z = post.to_metres(raw.clone(), 'metric', 1.0, 0.0, dmin, dmax).numpy()
        r = raw.numpy()
        with np.errstate(invalid='ignore'):
            keep = np.isfinite(r) & (r > 0) & (r >= dmin) & (r <= dmax)
        assert np.array_equal(np.isnan(z), ~keep), (dmin, dmax)
        assert np.array_equal(z[keep], r[keep])
    # affine_inverse: 1 / (scale * d + shift), a zero denominator is no depth
    inv = torch.tensor([0.0, 0.5, 1.0, -2.0])
    z = post.to_metres(inv, 'affine_inverse', 2.0, 0.0, 0.0, 100.0).numpy()
    assert np.isnan(z[0]) and np.isnan(z[3]) and np.allclose(z[1:3], [1.0, 0.5])


def test_tum_ground_truth_round_trip(rgbd_data):
    raw = cv2.imread(str(rgbd_data / 'tum' / 'TUM_depth.png'), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16
    depth = raw.astype(np.float32) / 5000.0
    depth[raw == 0] = np.nan
    intr = Intrinsics(fx=525.0, fy=525.0, cx=319.5, cy=239.5, width=640, height=480)
    pts, h, w = Backprojector()(torch.from_numpy(depth), intr)
    p = pts.numpy()[:, :3].astype(np.float64)
    ok = np.isfinite(p[:, 2])
    assert ok.mean() > 0.5
    uv = project(p[ok], intr)
    v, u = np.mgrid[0:480, 0:640]
    grid = np.stack([u.ravel(), v.ravel()], 1)[ok]
    err = np.abs(uv - grid).max()
    assert err < 1e-3, err


@pytest.mark.parametrize('model, d', [
    ('plumb_bob', (-0.28, 0.07, 0.0005, -0.0003, 0.0)),
    # a wide-angle lens: OpenCV's default 5 undistortion steps leave the corners pixels off
    ('rational_polynomial', (-0.3, 0.1, 0.0, 0.0, 0.0, 0.1, 0.05, 0.0))])
def test_distorted_camera_rays_reproject_with_distortion(model, d):
    intr = Intrinsics(**K, distortion_model=model, d=d)
    pts, h, w = Backprojector()(torch.full((480, 640), 2.5), intr, stride=4)
    p = pts.numpy()[:, :3].astype(np.float64)
    assert np.isfinite(p).all()
    uv, _ = cv2.projectPoints(p, np.zeros(3), np.zeros(3), intr.matrix(), np.array(d))
    v, u = np.mgrid[0:480:4, 0:640:4]
    err = np.abs(uv.reshape(-1, 2) - np.stack([u.ravel(), v.ravel()], 1))
    assert err.max() < 0.01  # every pixel, the corners too
    # and the distortion really changed the rays (an undistorted model would be off)
    plain, _, _ = Backprojector()(torch.full((480, 640), 2.5), Intrinsics(**K), stride=4)
    assert np.abs(plain.numpy()[:, 0] - p[:, 0]).max() > 0.05


def test_pixels_no_ray_reaches_have_no_point():
    """Past the fold of r (1 + k1 r^2), k1 < 0, no ray maps to a pixel: NaN, not a guess."""
    d = (-0.5, 0.0, 0.0, 0.0, 0.0)
    intr = Intrinsics(**K, distortion_model='plumb_bob', d=d)
    pts, h, w = Backprojector()(torch.full((480, 640), 2.0), intr)
    p = pts.numpy().reshape(h, w, 4)[..., :3].astype(np.float64)
    v, u = np.mgrid[0:480, 0:640]
    # the largest distorted radius: at r^2 = 1 / (3 |k1|), r (1 + k1 r^2) = 2 r / 3
    r_fold = 2.0 / 3.0 * math.sqrt(1.0 / 1.5)
    r_d = np.hypot((u - K['cx']) / K['fx'], (v - K['cy']) / K['fy'])
    ok = np.isfinite(p[..., 2])
    assert ok[r_d < r_fold - 0.01].all()
    assert not ok[r_d > r_fold + 0.01].any()
    uv, _ = cv2.projectPoints(p[ok], np.zeros(3), np.zeros(3), intr.matrix(), np.array(d))
    assert np.abs(uv.reshape(-1, 2) - np.stack([u[ok], v[ok]], 1)).max() < 0.01


@pytest.mark.parametrize('change, word', [({'fx': 0.0}, 'positive'),
                                          ({'fy': float('nan')}, 'non-finite'),
                                          ({'width': 1280}, '1280x480'),
                                          # what OpenCV's undistortion would raise on, in the
                                          # forward of every camera batched with this one
                                          ({'distortion_model': 'plumb_bob',
                                            'd': (0.1, 0.01, 0.001)}, 'D has 3 coefficients'),
                                          ({'distortion_model': 'plumb_bob',
                                            'd': (0.1, float('nan'), 0, 0, 0)}, 'non-finite D')])
def test_intrinsics_check_rejects(change, word):
    intr = Intrinsics(**{**K, **change})
    with pytest.raises(IntrinsicsError, match=word):
        intr.check(640, 480)
    Intrinsics(**K).check(640, 480)


def test_fisheye_with_zero_distortion_is_still_equidistant():
    """Equidistant with D = 0 is r = f * theta, not the pinhole r = f * tan(theta)."""
    f = 800.0 / math.pi  # 45 degrees off axis lies 200 px from the principal point
    intr = Intrinsics(fx=f, fy=f, cx=319.0, cy=239.0, width=640, height=480,
                      distortion_model='equidistant', d=(0.0, 0.0, 0.0, 0.0))
    pts, h, w = Backprojector()(torch.full((480, 640), 2.0), intr)
    p = pts.numpy().reshape(h, w, 4).astype(np.float64)
    # 200 px right of the centre: a ray at 45 degrees, x = z
    assert p[239, 519, :3] == pytest.approx([2.0, 0.0, 2.0], abs=1e-5)
    # 200 px along the diagonal: also 45 degrees, split evenly between x and y
    d = 200 / math.sqrt(2)
    u, v = 319 + d, 239 + d
    ui, vi = int(round(u)), int(round(v))
    ray = p[vi, ui, :3] / 2.0
    theta = math.hypot(ui - 319, vi - 239) / f
    assert math.hypot(ray[0], ray[1]) == pytest.approx(math.tan(theta), rel=1e-5)
    # 400 px from the centre (the corner) is 90 degrees: no point in front of the camera
    assert np.isnan(p[479, 639, :3]).all()
    assert np.isfinite(p[239, 319, :3]).all() and p[239, 319, 0] == 0.0


def test_fisheye_rays_reproject_through_opencv():
    d = (0.05, -0.01, 0.002, -0.0005)
    intr = Intrinsics(fx=280.0, fy=281.0, cx=322.0, cy=238.0, width=640, height=480,
                      distortion_model='equidistant', d=d)
    pts, h, w = Backprojector()(torch.full((480, 640), 1.5), intr, stride=8)
    p = pts.numpy()[:, :3].astype(np.float64)
    ok = np.isfinite(p[:, 2])
    assert ok.mean() > 0.95
    uv, _ = cv2.fisheye.projectPoints(p[ok].reshape(-1, 1, 3), np.zeros(3), np.zeros(3),
                                      intr.matrix(), np.array(d))
    v, u = np.mgrid[0:480:8, 0:640:8]
    grid = np.stack([u.ravel(), v.ravel()], 1)[ok]
    assert np.abs(uv.reshape(-1, 2) - grid).max() < 1e-3


def test_the_note_is_the_current_intrinsics_not_the_last_built():
    """A grid built once with a note must not hand that note to later frames (cache hits)."""
    fallback = Intrinsics(fx=500, fy=500, cx=320, cy=240, width=640, height=480,
                          source='K (P is empty)')
    good = Intrinsics(fx=500, fy=500, cx=320, cy=240, width=640, height=480, source='P')
    project = Backprojector()
    depth = torch.full((480, 640), 2.0)
    project(depth, fallback, stride=8)
    assert 'empty P' in project.note
    project(depth, good, stride=8)
    assert project.note == ''
    project(depth, fallback, stride=8)  # cached now: its note all the same
    assert 'empty P' in project.note
    project(depth, good, stride=8)
    assert project.note == ''
