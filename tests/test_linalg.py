"""The one power iteration (:mod:`lifted_inverse.linalg`) against dense linear algebra."""
import pytest
import torch

from lifted_inverse.linalg import power_iteration, seeded_vector
from lifted_inverse.operators import Blur, Gradient


def _gram(seed: int, m: int, n: int, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(m, n, generator=gen, dtype=dtype)
    return a, a.T @ a


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("estimate", ["rayleigh", "norm"])
def test_matches_spectral_norm_of_random_matrices(seed, estimate):
    a, gram = _gram(seed, 30, 20)
    lam, v = power_iteration(lambda x: gram @ x, seeded_vector((20,), seed), 2000, rtol=1e-14,
                             estimate=estimate)
    expected = float(torch.linalg.matrix_norm(a, ord=2)) ** 2
    assert lam == pytest.approx(expected, rel=1e-8)
    assert lam <= expected * (1 + 1e-12)  # both estimates approach λ_max from below
    assert float(v.norm()) == pytest.approx(1.0, abs=1e-12)
    # v is a top eigenvector: M v = λ v
    assert torch.allclose(gram @ v, lam * v, atol=1e-5 * lam)


def test_norm_estimate_is_the_larger_lower_bound():
    _, gram = _gram(7, 12, 12)
    v0 = seeded_vector((12,), 3)
    for iterations in (1, 2, 5):
        rq, _ = power_iteration(lambda x: gram @ x, v0, iterations, rtol=0.0, estimate="rayleigh")
        nm, _ = power_iteration(lambda x: gram @ x, v0, iterations, rtol=0.0, estimate="norm")
        assert rq <= nm <= float(torch.linalg.eigvalsh(gram)[-1]) * (1 + 1e-12)


def test_any_shape_and_float32():
    """Tensors of image shape through an operator's A*A, in float32: the operator's own norm."""
    op = Blur((2, 9, 10), "gaussian", "circular").float()
    lam, v = power_iteration(op.normal, seeded_vector((1, 2, 9, 10), 0, torch.float32), 500, rtol=1e-7)
    assert v.shape == (1, 2, 9, 10) and v.dtype == torch.float32
    dense = op.dense_matrix(dtype=torch.float64)
    assert lam == pytest.approx(float(torch.linalg.matrix_norm(dense, ord=2)) ** 2, rel=1e-4)


def test_warm_start_converges_in_fewer_steps():
    a, gram = _gram(1, 25, 25)
    expected = float(torch.linalg.matrix_norm(a, ord=2)) ** 2
    count = {"n": 0}

    def apply(x):
        count["n"] += 1
        return gram @ x

    _, v = power_iteration(apply, seeded_vector((25,), 0), 5000, rtol=1e-12)
    cold = count["n"]
    # a slightly perturbed matrix, warm-started from the previous vector vs. started cold
    gram2 = gram + 1e-3 * torch.eye(25, dtype=gram.dtype)
    count["n"] = 0
    lam_warm, _ = power_iteration(lambda x: apply(x) + 1e-3 * x, v, 5000, rtol=1e-12)
    warm = count["n"]
    assert lam_warm == pytest.approx(expected + 1e-3, rel=1e-9)
    assert torch.allclose(gram2 @ v, (gram @ v) + 1e-3 * v)
    assert warm < cold / 3


def test_early_stop_on_relative_change():
    _, gram = _gram(2, 20, 20)
    calls = []
    lam, _ = power_iteration(lambda x: calls.append(1) or gram @ x, seeded_vector((20,), 0), 10_000,
                             rtol=1e-3)
    assert 1 < len(calls) < 10_000
    # the stopping rule: the last two estimates agree to rtol, and one more step would change little
    prev, _ = power_iteration(lambda x: gram @ x, seeded_vector((20,), 0), len(calls) - 1, rtol=0.0)
    assert abs(lam - prev) <= 1e-3 * abs(lam)
    # rtol = 0 runs every iteration
    calls.clear()
    power_iteration(lambda x: calls.append(1) or gram @ x, seeded_vector((20,), 0), 17, rtol=0.0)
    assert len(calls) == 17


def test_zero_map_and_bad_arguments():
    lam, v = power_iteration(torch.zeros_like, torch.ones(3, 4), 10)
    assert lam == 0.0 and torch.allclose(v.norm(), torch.tensor(1.0))
    with pytest.raises(ValueError, match="estimate"):
        power_iteration(lambda x: x, torch.ones(3), estimate="max")
    with pytest.raises(ValueError, match="rtol"):
        power_iteration(lambda x: x, torch.ones(3), rtol=-1.0)


def test_seeded_vector_is_device_independent_and_seeded():
    assert torch.equal(seeded_vector((3, 4), 5), seeded_vector((3, 4), 5))
    assert not torch.equal(seeded_vector((3, 4), 5), seeded_vector((3, 4), 6))
    if torch.cuda.is_available():
        assert torch.equal(seeded_vector((3, 4), 5, device="cuda").cpu(), seeded_vector((3, 4), 5))


def test_gradient_norm_bound():
    """``‖∇‖² < 8`` for forward differences (the bound TV step sizes use), close to it for large images."""
    lam, _ = power_iteration(Gradient((1, 32, 32)).normal, seeded_vector((1, 1, 32, 32), 0), 3000, rtol=1e-12)
    assert 7.9 < lam < 8.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    _, gram = _gram(3, 40, 30)
    lam_cpu, _ = power_iteration(lambda x: gram @ x, seeded_vector((30,), 0), 3000, rtol=1e-13)
    g = gram.cuda()
    lam_gpu, v = power_iteration(lambda x: g @ x, seeded_vector((30,), 0, device="cuda"), 3000, rtol=1e-13)
    assert v.is_cuda and lam_gpu == pytest.approx(lam_cpu, rel=1e-10)
