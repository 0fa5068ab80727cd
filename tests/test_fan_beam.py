"""Fan-beam CT: geometry, projector (against the analytic referee and ASTRA), FBP, specs, torch.func.

The adjoint / norm / autograd / batch / float32 checks of the fan-beam operators live in the one
operator test (tests/test_operators.py, cases ``radon-fan-*`` of ``OPERATOR_CASES``).
"""
import math

import numpy as np
import pytest
import torch
from torch.func import jvp, vjp, vmap

from lifted_inverse.datasets.phantoms import shepp_logan
from lifted_inverse.metrics import psnr
from lifted_inverse.operators import (
    FanBeamGeometry,
    ParallelBeamGeometry,
    Radon,
    make_operator,
    operator_from_spec,
    spec_of,
)
from lifted_inverse.operators.analytic import ellipse_image, ellipse_sinogram, shepp_logan_ellipses
from lifted_inverse.operators.fan_beam import parker_weights, scan_weights
from lifted_inverse.operators.geometry import fan_detectors, geometry_from_dict
from lifted_inverse.operators.scanners import SCANNER_NAMES, SCANNERS, scanner_spec
from lifted_inverse.reconstruction.fbp import fbp


def _rel(a, b) -> float:
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def _rand(shape, batch=2, seed=0, dtype=torch.float64):
    return torch.randn((batch, *shape), generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ---- geometry ---------------------------------------------------------------------------------

def test_geometry_round_trips_and_validates():
    g = FanBeamGeometry((20, 24), 13, 31, 1.3, 40.0, 25.0, pixel_size=0.9, detector_offset=0.4)
    assert geometry_from_dict(g.image_shape, g.as_dict()) == g
    assert g.magnification == pytest.approx(65 / 40)
    assert g.fan_angle() == pytest.approx(math.atan((15 * 1.3 + 0.4) / 65))
    p = ParallelBeamGeometry(16, angles=[0.1, 0.5])
    assert geometry_from_dict(16, p.as_dict()) == p and p.n_detectors == 23
    bad = [
        (lambda: FanBeamGeometry(16, 10, 20, 1.0, 5.0, 10.0), "source_origin"),   # source inside
        (lambda: FanBeamGeometry(16, 10, 20, -1.0, 50.0, 10.0), "detector_spacing"),
        (lambda: FanBeamGeometry(16, 10, 0, 1.0, 50.0, 10.0), "n_detectors"),
        (lambda: FanBeamGeometry(16, 10, 20, 1.0, 50.0, -1.0), "origin_detector"),
        (lambda: FanBeamGeometry(16, 10, 20, 1.0, 50.0, 10.0, pixel_size=0), "pixel_size"),
        (lambda: FanBeamGeometry(16, 10, 20, 1.0, 50.0, 10.0, angle_range=(1.0, 1.0)), "angle_range"),
        (lambda: ParallelBeamGeometry(16, 10, detector_offset=float("nan")), "detector_offset"),
        (lambda: Radon(16, n_angles=5, geometry=ParallelBeamGeometry(16)), "n_angles"),
        (lambda: Radon(12, geometry=ParallelBeamGeometry(16)), "image_size"),
        (lambda: Radon(geometry=FanBeamGeometry(16, 4, 9, 1.0, 50.0, 10.0), model="bilinear"), "model"),
        (lambda: make_operator("ct", (1, 16, 16), geometry="cone"), "geometry"),
    ]
    for build, name in bad:
        with pytest.raises(ValueError, match=rf"^{name}:"):
            build()


def test_fan_detectors_cover_the_image():
    for size, spacing, rs, rd in ((32, 2.0, 64.0, 64.0), ((20, 30), 0.7, 40.0, 10.0)):
        d = fan_detectors(size, spacing, rs, rd)
        g = FanBeamGeometry(size, 4, d, spacing, rs, rd)
        h, w = g.image_shape
        corner = math.hypot(max(h // 2, h - 1 - h // 2) + 0.5, max(w // 2, w - 1 - w // 2) + 0.5)
        assert g.fov_radius() >= corner
        assert FanBeamGeometry(size, 4, d - 2, spacing, rs, rd).fov_radius() < corner


def test_parallel_shorthand_is_the_default_geometry():
    a = Radon(16, n_angles=9, n_detectors=21)
    b = Radon(geometry=ParallelBeamGeometry(16, 9, 21))
    x = _rand((1, 16, 16))
    assert torch.equal(a(x), b(x))


def test_pixel_size_scales_lengths():
    """Shrinking every length by a factor leaves the rays in pixel units, and scales R by it."""
    g1 = FanBeamGeometry(14, 7, 25, 1.5, 30.0, 20.0, detector_offset=0.3)
    g2 = FanBeamGeometry(14, 7, 25, 0.75, 15.0, 10.0, pixel_size=0.5, detector_offset=0.15)
    x = _rand((1, 14, 14))
    assert torch.allclose(Radon(geometry=g2)(x), 0.5 * Radon(geometry=g1)(x), rtol=1e-12, atol=1e-12)


# ---- projector ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sparse_equals_matrix_free(dtype):
    g = FanBeamGeometry((17, 22), 11, 37, 1.3, 40.0, 25.0, pixel_size=0.9, detector_offset=-0.6,
                        angle_range=(0.4, 5.0))
    a, b = Radon(geometry=g, method="sparse"), Radon(geometry=g, method="matrix_free")
    x, y = _rand(a.in_shape, 3, 1, dtype), _rand(a.out_shape, 3, 2, dtype)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert _rel(a(x), b(x)) < tol and _rel(a.adjoint(y), b.adjoint(y)) < tol


def test_skipped_rays_miss_the_image():
    """The projector computes only the bins whose rays can meet the image (FanSampling.hit_range):
    every ray with a non-zero weight on an image pixel lies inside that range."""
    from lifted_inverse.operators.fan_beam import FanSampling, fan_rows

    g = FanBeamGeometry((13, 17), 12, 61, 1.0, 30.0, 20.0, detector_offset=3.0, angle_range=(0.2, 6.0))
    s = FanSampling(g)
    index, wts = fan_rows(s, 0, g.n_angles, torch.float64, "cpu")
    row, col = index // (17 + 2) - 1, index % (17 + 2) - 1
    inside = (row >= 0) & (row < 13) & (col >= 0) & (col < 17) & (wts != 0)
    touched = inside.any(dim=-1).any(dim=-1).numpy()                                  # (A, D)
    assert 0 < touched.sum() < touched.size  # the detector is wider than the image
    for a in range(g.n_angles):
        d0, d1 = s.hit_range(a, a + 1)
        assert not touched[a, :d0].any() and not touched[a, d1:].any()


def test_batch_one_matches_large_batch_float32():
    """Batch 1 takes the CSR matrix-vector kernel, batch >= 8 embedding_bag: the same matrix."""
    A = Radon(24, n_angles=12, method="sparse")
    x = _rand(A.in_shape, 9, 3, torch.float32)
    y = _rand(A.out_shape, 9, 4, torch.float32)
    fx, aty = A(x), A.adjoint(y)
    for i in (0, 8):
        assert torch.allclose(A(x[i:i + 1]), fx[i:i + 1], rtol=1e-5, atol=1e-5)
        assert torch.allclose(A.adjoint(y[i:i + 1]), aty[i:i + 1], rtol=1e-5, atol=1e-5)


def test_fan_rays_are_the_parallel_rays_they_lie_on():
    """Analytic check of the ray geometry: fan ray (β, d) is the parallel ray at angle β + γ_d,
    offset R_s sin γ_d (exact line integrals of both)."""
    ell = [(1.0, 6.0, 3.0, 2.0, -1.0, 0.4), (0.5, 2.0, 2.0, -4.0, 3.0, 0.0)]
    g = FanBeamGeometry(20, 5, 9, 3.0, 30.0, 15.0, detector_offset=0.5)
    fan = ellipse_sinogram(ell, g, smoothness=1)[0, 0]
    gam = g.fan_angles()
    for a, beta in enumerate(g.angles):
        for d in range(g.n_detectors):
            par = ParallelBeamGeometry(20, angles=[beta + gam[d]], n_detectors=1,
                                       detector_offset=g.source_origin * math.sin(gam[d]))
            assert float(ellipse_sinogram(ell, par, smoothness=1)) == pytest.approx(float(fan[a, d]), rel=1e-12, abs=1e-12)


def test_analytic_disc():
    """A centred disc of radius r: 2 sqrt(r² - s²) (the closed form's k = 0 case)."""
    g = ParallelBeamGeometry(16, 3, 15, detector_spacing=0.8)
    s = torch.as_tensor(g.detector_positions())
    expected = 2 * torch.sqrt(torch.clamp(25.0 - s ** 2, min=0))
    got = ellipse_sinogram([(1.0, 5.0, 5.0, 0.0, 0.0, 0.3)], g)[0, 0]
    assert torch.allclose(got, expected.expand_as(got), atol=1e-12)


@pytest.mark.parametrize("kind", ["parallel", "fan"])
def test_projector_matches_analytic_sinogram(kind):
    """The analytic referee at 256²: a smooth (k = 2) Shepp-Logan ellipse phantom, sampled at the
    pixel centres, projected, against the exact line integrals: <= 1 % relative L2."""
    n, p = 256, 0.5
    ell = shepp_logan_ellipses(0.45 * n * p)
    if kind == "fan":
        g = FanBeamGeometry(n, 90, 401, 1.0, 2 * n * p, 1.5 * n * p, pixel_size=p, detector_offset=0.25)
    else:
        g = ParallelBeamGeometry(n, 90, pixel_size=p, detector_spacing=0.7, detector_offset=0.1)
    x = ellipse_image(ell, n, p, smoothness=2)
    y = Radon(geometry=g, method="matrix_free")(x)
    assert _rel(y, ellipse_sinogram(ell, g, smoothness=2)) <= 0.01


def test_matches_astra_line_fanflat():
    astra = pytest.importorskip("astra")
    from lifted_inverse.operators.astra_geometry import astra_geometries

    g = FanBeamGeometry(64, 45, 100, 1.7, 128.0, 80.0, detector_offset=0.3)
    x = ellipse_image([(1.0, 20, 8, 10, -5, 0.3), (0.5, 5, 5, -15, 12, 0.0)], 64, smoothness=1)
    vol, proj = astra_geometries(g)
    pid = astra.create_projector("line_fanflat", proj, vol)
    sid, sino = astra.create_sino(x[0, 0].numpy().astype(np.float32), pid)
    astra.data2d.delete(sid)
    astra.projector.delete(pid)
    assert _rel(Radon(geometry=g)(x)[0, 0], torch.as_tensor(sino, dtype=torch.float64)) < 0.02


# ---- FBP ------------------------------------------------------------------------------------

def test_parker_weights_are_complementary():
    delta = 0.4
    beta = np.linspace(0, np.pi + 2 * delta, 501)
    for gam in np.linspace(-0.39, 0.39, 7):
        conj = beta + np.pi + 2 * gam
        keep = conj <= np.pi + 2 * delta
        w = parker_weights(beta[keep], np.array([gam]), delta)[:, 0]
        wc = parker_weights(conj[keep], np.array([-gam]), delta)[:, 0]
        assert np.allclose(w + wc, 1.0, atol=1e-12)


def test_scans_fbp_cannot_weight_raise():
    for rng in (math.pi, 3 * math.pi):   # shorter than π + fan angle; overscan beyond 2π
        g = FanBeamGeometry(16, 20, 31, 1.0, 40.0, 20.0, angle_range=rng)
        with pytest.raises(ValueError, match="^angles:"):
            scan_weights(g)


def test_explicit_angles_short_scan_fbp_matches_uniform():
    """Explicit angles equal to a uniform short scan: the same weights and step, the same FBP."""
    uni = FanBeamGeometry(32, 90, 61, 1.0, 64.0, 32.0, angle_range=(0.3, 0.3 + 4.0))
    exp = FanBeamGeometry(32, None, 61, 1.0, 64.0, 32.0, angles=uni.angles)
    assert exp.angle_step == pytest.approx(uni.angle_step)
    y = _rand((1, 90, 61), batch=1, seed=9)
    assert torch.allclose(Radon(geometry=uni).fbp(y), Radon(geometry=exp).fbp(y), atol=1e-10)


@pytest.mark.parametrize("scan", ["full", "short"])
def test_fbp_shepp_logan(scan):
    """Noiseless 128² Shepp-Logan over 360 fan angles: FBP PSNR >= 28 dB (full 2π and Parker)."""
    n = 128
    x = shepp_logan(n).reshape(1, 1, n, n).to(torch.float64)
    spec = {"name": "ct", "geometry": "fan", "n_angles": 360}
    if scan == "short":
        g0 = operator_from_spec(spec, (1, n, n)).geometry
        spec["angle_range"] = [0.0, math.pi + 2 * g0.fan_angle()]
    A = operator_from_spec(spec, (1, n, n))
    rec = fbp(A, A(x))
    assert float(psnr(rec, x, 1.0)) >= 28.0


# ---- specs, presets -------------------------------------------------------------------------

def test_fan_spec_round_trip():
    spec = {"name": "ct", "geometry": "fan", "n_angles": 8, "angle_range": [0.1, 4.0],
            "n_detectors": 19, "detector_spacing": 1.5, "detector_offset": 0.2, "pixel_size": 0.8,
            "source_origin": 30.0, "origin_detector": 10.0, "model": "joseph"}
    A = operator_from_spec(spec, (1, 12, 14))
    assert spec_of(A) == spec
    direct = Radon(geometry=A.geometry)
    assert spec_of(direct) == spec
    B = operator_from_spec(spec_of(direct), (1, 12, 14))
    x = _rand((1, 12, 14))
    assert torch.equal(A(x), B(x))


def test_scanner_presets():
    assert set(SCANNER_NAMES) >= {"lidc", "parallel"}
    lidc = scanner_spec("lidc")
    g = geometry_from_dict(512, {k: v for k, v in lidc.items() if k not in ("name", "model")})
    assert (g.kind, g.image_shape, g.n_angles, g.n_detectors) == ("fan", (512, 512), 360, 900)
    assert (g.source_origin, g.source_detector) == (575.0, 1050.0)
    assert g.angle_range == (0.0, 2 * math.pi)
    assert sorted(SCANNERS["lidc"].photon_counts.values()) == [1000.0, 3500.0, 10000.0]
    small = operator_from_spec(scanner_spec("lidc", 64), (1, 64, 64))
    assert small.out_shape == (1, 360, 900) and small.geometry.pixel_size == pytest.approx(300 / 64)
    assert scanner_spec("parallel", 32) == spec_of(make_operator("ct", (1, 32, 32)))
    with pytest.raises(ValueError, match="^scanner:"):
        scanner_spec("ge-lightspeed")


# ---- torch.func ------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["sparse", "matrix_free"])
@pytest.mark.parametrize("kind", ["parallel", "fan"])
def test_torch_func_vjp_jvp_vmap(kind, method):
    g = (FanBeamGeometry(10, 6, 17, 1.5, 25.0, 10.0) if kind == "fan"
         else ParallelBeamGeometry(10, 6, 15))
    A = Radon(geometry=g, method=method)
    x, t = _rand(A.in_shape, 2, 5), _rand(A.in_shape, 2, 6)
    v = _rand(A.out_shape, 2, 7)
    y, pullback = vjp(A, x)
    assert torch.allclose(y, A(x), atol=1e-12)
    assert torch.allclose(pullback(v)[0], A.adjoint(v), atol=1e-12)
    _, tangent = jvp(A, (x,), (t,))
    assert torch.allclose(tangent, A(t), atol=1e-12)
    _, pullback_t = vjp(A.adjoint, v)
    assert torch.allclose(pullback_t(x)[0], A(x), atol=1e-12)
    stacked = torch.stack((x, t))
    assert torch.allclose(vmap(A)(stacked), torch.stack((A(x), A(t))), atol=1e-12)
