import time

import pytest
import torch

from lifted_inverse.datasets import builtin_image, random_ellipses, shepp_logan
from lifted_inverse.metrics import psnr
from lifted_inverse.operators import Blur, GaussianNoise, Gradient, Identity, Radon, gaussian_kernel
from lifted_inverse.operators.base import Scaled
from lifted_inverse.reconstruction import (
    default_alpha,
    fbp,
    rms_column_norm,
    tikhonov_cg,
    tv_denoise,
    tv_pdhg,
)
from lifted_inverse.reconstruction.tv import _tv


@pytest.fixture(scope="module")
def ct_problem():
    x = shepp_logan(128)[None].double()
    radon = Radon(128, n_angles=60)
    noise = GaussianNoise(0.01, relative=True, seed=0)
    clean = radon(x)
    y = noise(clean)
    std = 0.01 * float(clean.pow(2).mean().sqrt())
    return x, radon, y, std


def test_ct_acceptance_tv_beats_fbp(ct_problem):
    """60 angles, 1% relative noise, 128x128 Shepp-Logan: TV-PDHG >= FBP + 2 dB."""
    x, radon, y, std = ct_problem
    t0 = time.perf_counter()
    x_fbp = fbp(radon, y)
    t1 = time.perf_counter()
    res = tv_pdhg(radon, y, default_alpha(radon, std, "tv"), nonneg=True, max_iter=200, tol=1e-5)
    t2 = time.perf_counter()
    tik = tikhonov_cg(radon, y, default_alpha(radon, std, "tikhonov"), regulariser="gradient",
                      max_iter=60, tol=1e-6)
    t3 = time.perf_counter()
    p_fbp, p_tv, p_tik = (float(psnr(v, x, 1.0)) for v in (x_fbp, res.x, tik.x))
    print(f"\nCT PSNR: FBP {p_fbp:.2f} dB ({t1 - t0:.2f} s), TV {p_tv:.2f} dB ({t2 - t1:.2f} s, "
          f"{res.iterations} it), Tikhonov {p_tik:.2f} dB ({t3 - t2:.2f} s, {tik.iterations} it)")
    assert p_tv >= p_fbp + 2.0
    assert p_tik > p_fbp - 3.0  # a sane quadratic baseline, not a broken solve
    assert float(res.x.min()) >= 0.0
    e = res.history["energy"]
    assert e[-1] < 0.2 * e[0] and min(e[-20:]) >= 0.999 * min(e)  # settled


def test_denoise_acceptance_camera():
    """Camera 128x128, sigma = 0.1: TV >= noisy + 5 dB."""
    x = builtin_image("camera", 128)[None].double()
    y = GaussianNoise(0.1, seed=0)(x)
    res = tv_denoise(y, default_alpha(Identity(x.shape[1:]), 0.1, "tv"), max_iter=300)
    p_noisy, p_tv = float(psnr(y, x, 1.0)), float(psnr(res.x, x, 1.0))
    print(f"\ncamera: noisy {p_noisy:.2f} dB, TV {p_tv:.2f} dB ({res.iterations} it)")
    assert p_tv >= p_noisy + 5.0
    gap = torch.tensor(res.history["gap"])
    assert bool((gap >= -1e-9).all())
    assert gap[-1] < 1e-3 * res.history["energy"][-1] and gap[-1] < 0.01 * gap[0]


def test_tikhonov_cg_matches_dense_solve_batched():
    op = Blur((1, 8, 8), gaussian_kernel(3, 1.0), "zero")
    g = torch.Generator().manual_seed(0)
    y = torch.randn(3, 1, 8, 8, generator=g, dtype=torch.float64)
    alpha = torch.tensor([0.01, 0.1, 1.0], dtype=torch.float64)
    for reg, R in (("identity", Identity((1, 8, 8))), ("gradient", Gradient((1, 8, 8)))):
        res = tikhonov_cg(op, y, alpha, regulariser=reg, max_iter=500, tol=1e-12)
        assert res.converged
        A, Rm = op.dense_matrix(), R.dense_matrix()
        for b in range(3):
            M = A.T @ A + alpha[b] * Rm.T @ Rm
            ref = torch.linalg.solve(M, A.T @ y[b].reshape(-1))
            assert torch.allclose(res.x[b].reshape(-1), ref, atol=1e-8), (reg, b)
    x, hist = res  # unpacks as (x, history)
    assert x.shape == y.shape and len(hist["residual"]) == res.iterations


def test_tv_generic_path_agrees_with_denoise_path():
    """K = [A; grad] with A = 1.0 * I (dual data term) must reach the ROF solution."""
    x = random_ellipses(2, 24, seed=0).double()
    y = GaussianNoise(0.1, seed=1)(x)
    ref = tv_denoise(y, 0.1, max_iter=3000, tol=1e-10).x
    gen = tv_pdhg(Scaled(Identity((1, 24, 24)), 1.0), y, 0.1, max_iter=3000, tol=1e-10, balance=1.0).x
    assert float((gen - ref).abs().max()) < 1e-3
    # and it is a minimiser: lower energy than small perturbations
    def energy(v):
        return 0.5 * ((v - y) ** 2).flatten(1).sum(1) + 0.1 * _tv(Gradient((1, 24, 24))(v))
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        d = 1e-3 * torch.randn(ref.shape, generator=g, dtype=ref.dtype)
        assert bool((energy(ref + d) >= energy(ref) - 1e-9).all())


def test_tv_nonneg_callback_and_per_sample_alpha():
    x = random_ellipses(2, 24, seed=3).double()
    y = GaussianNoise(0.2, seed=1)(x)
    seen = []
    res = tv_denoise(y, torch.tensor([0.0, 0.3], dtype=torch.float64), nonneg=True, max_iter=50,
                     tol=0.0, callback=lambda k, xk, info: seen.append((k, float(info["energy"][1]))) or k == 9)
    assert [k for k, _ in seen] == list(range(10)) and res.iterations == 10 and not res.converged
    assert float(res.x.min()) >= 0
    # alpha = 0 keeps the (clipped) data; alpha > 0 smooths
    assert torch.allclose(res.x[0], y[0].clamp_min(0), atol=1e-12)
    assert float(_tv(Gradient((1, 24, 24))(res.x[1:]))) < float(_tv(Gradient((1, 24, 24))(y[1:])))


def test_fbp_wrapper_and_errors(ct_problem):
    x, radon, y, _ = ct_problem
    assert float(psnr(fbp(radon, y, "hann"), x, 1.0)) > 20
    with pytest.raises(TypeError, match="Radon"):
        fbp(Identity((1, 128, 128)), x)
    with pytest.raises(ValueError, match="y"):
        tv_pdhg(radon, x, 0.1)
    with pytest.raises(ValueError, match="alpha"):
        tikhonov_cg(radon, y, -1.0)
    with pytest.raises(ValueError, match="regulariser"):
        tikhonov_cg(radon, y, 1.0, regulariser="l1")
    with pytest.raises(ValueError, match="max_iter"):
        tv_pdhg(radon, y, 0.1, max_iter=0)
    bad = y.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        tv_pdhg(radon, bad, 0.1)


def test_default_alpha_rule():
    assert rms_column_norm(Identity((1, 8, 8))) == 1.0
    blur = Blur((1, 16, 16), gaussian_kernel(5, 1.0), "circular")
    col = float(blur.dense_matrix().pow(2).sum(0).mean().sqrt())  # exact rms column norm
    assert rms_column_norm(blur, probes=64) == pytest.approx(col, rel=0.05)
    assert default_alpha(Identity((1, 8, 8)), 0.1, "tv") == pytest.approx(0.07)
    with pytest.raises(ValueError, match="noise_std"):
        default_alpha(blur, -0.1)


def test_float32_follows_input():
    x = random_ellipses(1, 16, seed=0)
    res = tv_denoise(x, 0.05, max_iter=5)
    assert res.x.dtype == torch.float32
    res = tikhonov_cg(Identity((1, 16, 16)), x, 0.1, max_iter=5)
    assert res.x.dtype == torch.float32


def _small_ct(seed=0, n=16, angles=10):
    x = torch.stack([shepp_logan(n), shepp_logan(n).flip(-1)]).double()
    A = Radon(n, n_angles=angles)
    y = GaussianNoise(0.01, relative=True, seed=seed)(A(x))
    return x, A, y


@pytest.mark.parametrize("nonneg", [True, False])
def test_tv_stops_on_relative_primal_dual_gap(nonneg):
    """The restricted primal-dual gap is >= 0 at every iteration, the solver stops once every
    sample's gap / E <= tol, and E there is within tol of the minimum (a long run's energy)."""
    _, A, y = _small_ct()
    tol = 1e-3
    res = tv_pdhg(A, y, 0.05, nonneg=nonneg, max_iter=5000, tol=tol)
    assert res.converged and res.iterations < 5000
    assert min(res.history["gap"]) >= -1e-9 * max(res.history["energy"])
    if nonneg:  # the certificate: E at the stop within tol of the minimum
        ref = tv_pdhg(A, y, 0.05, nonneg=nonneg, max_iter=3000, tol=1e-6)
        e_stop = res.history["energy"][-1]
        e_min = min(ref.history["energy"])
        assert e_min <= e_stop <= e_min * (1 + tol)
    assert res.history["rel_gap"][-1] <= tol
    # a capped run reports it did not converge
    capped = tv_pdhg(A, y, 0.05, nonneg=nonneg, max_iter=5, tol=tol)
    assert not capped.converged and capped.iterations == 5


def test_tv_weighted_data_term():
    """weights w: a constant c is alpha / c; w = 0 ignores those entries of y exactly."""
    _, A, y = _small_ct()
    a = tv_pdhg(A, y, 0.1, nonneg=True, max_iter=3000, tol=1e-5)
    b = tv_pdhg(A, y, 0.2, nonneg=True, max_iter=3000, tol=1e-5, weights=2.0)
    assert a.converged and b.converged
    assert b.history["energy"][-1] == pytest.approx(2 * a.history["energy"][-1], rel=2e-5)
    assert float((a.x - b.x).abs().max()) < 1e-2 * float(a.x.abs().max())
    w = torch.ones(A.out_shape, dtype=y.dtype)
    w[0, :3] = 0.0  # three angles not to be trusted
    corrupted = y.clone()
    corrupted[:, 0, :3] += 5.0
    c = tv_pdhg(A, y, 0.1, nonneg=True, max_iter=50, weights=w)
    d = tv_pdhg(A, corrupted, 0.1, nonneg=True, max_iter=50, weights=w)
    assert torch.equal(c.x, d.x)
    with pytest.raises(ValueError, match="weights"):
        tv_pdhg(A, y, 0.1, weights=-w)
    with pytest.raises(ValueError, match="weights"):
        tv_pdhg(A, y, 0.1, weights=torch.ones(3))


def test_tikhonov_stops_on_relative_residual():
    _, A, y = _small_ct()
    res = tikhonov_cg(A, y, 0.5, regulariser="gradient", max_iter=2000, tol=1e-6)
    assert res.converged and res.iterations < 2000
    b = A.adjoint(y)
    M = A.adjoint(A(res.x)) + 0.5 * Gradient(A.in_shape).adjoint(Gradient(A.in_shape)(res.x))
    rel = torch.linalg.vector_norm((b - M).flatten(1), dim=1) / torch.linalg.vector_norm(b.flatten(1), dim=1)
    assert float(rel.max()) <= 1.01e-6


def test_tv_converges_on_a_scanner_in_physical_units():
    """The default step balance follows the operator's units: on the ``lidc`` fan-beam preset
    (millimetres, ||A|| ~ 1e3) the scale rule asks for a primal/dual ratio far below 1e-3; a clip
    at 1e-3 left the gap at ~0.5 after 1500 iterations."""
    from lifted_inverse.datasets import shepp_logan
    from lifted_inverse.operators.registry import operator_from_spec
    from lifted_inverse.operators.scanners import scanner_spec
    from lifted_inverse.reconstruction import tv_pdhg

    torch.manual_seed(0)
    spec = {**scanner_spec("lidc", 32), "n_angles": 90}
    A = operator_from_spec(spec, (1, 32, 32))
    x = shepp_logan(32)[None].double()
    y = A(x)
    y = y + 0.01 * y.pow(2).mean().sqrt() * torch.randn_like(y)
    res = tv_pdhg(A, y, 75.0, nonneg=True, max_iter=1500, tol=1e-3)  # ~ the default rule
    assert res.converged, res.history["rel_gap"][-1]
