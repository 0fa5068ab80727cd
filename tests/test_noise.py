"""Noise models: statistics, reproducibility, errors."""
import math

import pytest
import torch

from lifted_inverse.operators import (
    GaussianNoise,
    PoissonNoise,
    TransmissionPoissonNoise,
    make_noise,
)


def test_gaussian_absolute_and_relative_std():
    y = torch.zeros((2, 1, 200, 200), dtype=torch.float64)
    y[1] = 5.0
    e = GaussianNoise(0.1, seed=1)(y) - y
    assert float(e[0].std()) == pytest.approx(0.1, rel=0.02)
    assert float(e[1].std()) == pytest.approx(0.1, rel=0.02)
    y[0] = 2.0
    rel = GaussianNoise(0.01, relative=True, seed=1)(y) - y
    assert float(rel[0].std()) == pytest.approx(0.02, rel=0.02)  # rms(y_0) = 2
    assert float(rel[1].std()) == pytest.approx(0.05, rel=0.02)  # rms(y_1) = 5


def test_seeded_reproducible():
    y = torch.rand((3, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    for make in (lambda: GaussianNoise(0.1, seed=4), lambda: PoissonNoise(100, seed=4),
                 lambda: TransmissionPoissonNoise(1e3, seed=4)):
        a, b = make(), make()
        first = a(y)
        assert torch.equal(first, b(y))
        assert not torch.equal(first, a(y))  # the stream continues
        a.reset()
        assert torch.equal(first, a(y))
        assert first.dtype == y.dtype


def test_poisson_mean_and_variance():
    y = torch.full((1, 1, 300, 300), 0.5, dtype=torch.float64)
    out = PoissonNoise(200, seed=2)(y)
    assert float(out.mean()) == pytest.approx(0.5, rel=0.01)
    assert float(out.var()) == pytest.approx(0.5 / 200, rel=0.05)
    with pytest.raises(ValueError, match="^y:"):
        PoissonNoise(10)(torch.tensor([[-0.1, 1.0]]))


def test_transmission_noise_unbiased_at_high_dose():
    y = torch.full((1, 1, 200, 200), 1.5, dtype=torch.float64)
    out = TransmissionPoissonNoise(1e5, seed=3)(y)
    assert float(out.mean()) == pytest.approx(1.5, abs=2e-3)
    # variance of -log(n/I0) ≈ 1/(I0 exp(-y))
    assert float(out.var()) == pytest.approx(1 / (1e5 * torch.exp(torch.tensor(-1.5)).item()), rel=0.05)
    dark = TransmissionPoissonNoise(10, seed=0)(torch.full((1, 50), 30.0))
    assert torch.isfinite(dark).all() and float(dark.max()) == pytest.approx(torch.log(torch.tensor(10.0)).item())


def test_errors_name_argument_and_to_dict():
    with pytest.raises(ValueError, match="^sigma:"):
        GaussianNoise(-0.1)
    with pytest.raises(ValueError, match="^photons:"):
        PoissonNoise(-5)
    with pytest.raises(ValueError, match="^photons:"):
        TransmissionPoissonNoise(0)
    with pytest.raises(ValueError, match="^name:"):
        make_noise("speckle", 0.1)
    with pytest.raises(ValueError, match="^y:"):
        GaussianNoise(0.1)(torch.tensor([[float("nan")]]))
    assert GaussianNoise(0.01, relative=True, seed=7).to_dict() == {
        "model": "gaussian", "sigma": 0.01, "relative": True, "seed": 7}
    assert make_noise("poisson", 50, seed=2).to_dict() == {"model": "poisson", "photons": 50.0, "seed": 2}


# ---- the low-dose CT pipeline: counts, log transform, PWLS weights -----------------------------

@pytest.mark.parametrize("photons, attenuation, depth", [(1e4, 1.0, 2.3), (5e3, 0.02, 2.8)])
def test_log_data_mean_and_variance_follow_the_delta_method(photons, attenuation, depth):
    """``p̂ = -log(n/I0)/μ``, ``n ~ Poisson(λ)``, ``λ = I0 exp(-μ p)``: mean ``p + 1/(2 μ λ)``,
    variance ``1/(μ² λ)``; and the PWLS weights ``μ² n`` are the inverse variance."""
    from lifted_inverse.operators.noise import pwls_weights, simulate_transmission

    p = depth / attenuation  # line integral in the projector's units
    lam = photons * math.exp(-depth)
    line = torch.full((1, 1, 300, 300), p, dtype=torch.float64)
    counts, post = simulate_transmission(line, photons, attenuation, seed=5)
    n = post.numel()
    se_mean = math.sqrt(1 / (attenuation ** 2 * lam) / n)
    assert abs(float(post.mean()) - (p + 1 / (2 * attenuation * lam))) < 3 * se_mean
    assert abs(float(post.mean()) - p) > 3 * se_mean  # the bias the delta method predicts is seen
    assert float(post.var()) == pytest.approx(1 / (attenuation ** 2 * lam), rel=0.03)
    assert float(counts.mean()) == pytest.approx(lam, rel=0.005)
    assert float(pwls_weights(counts, attenuation).mean() * post.var()) == pytest.approx(1.0, rel=0.03)


def test_transmission_stages_stored_and_reproducible():
    from lifted_inverse.operators.noise import log_transform, simulate_transmission

    line = torch.rand((2, 1, 6, 9), generator=torch.Generator().manual_seed(1), dtype=torch.float32) * 3
    data = simulate_transmission(line, 1e3, seed=3)
    assert data.counts.dtype == data.line_integrals.dtype == torch.float32
    assert data.counts.shape == data.line_integrals.shape == line.shape
    assert torch.equal(data.counts, torch.round(data.counts)) and float(data.counts.min()) >= 0
    assert torch.equal(data.line_integrals, log_transform(data.counts, 1e3))
    again = simulate_transmission(line, 1e3, seed=3)
    assert torch.equal(again.counts, data.counts)
    model = TransmissionPoissonNoise(1e3, seed=3)
    assert torch.equal(model.simulate(line).counts, data.counts)
    model.reset()
    assert torch.equal(model(line), data.line_integrals)
    assert TransmissionPoissonNoise(1e3, attenuation=0.5).to_dict() == {
        "model": "transmission", "photons": 1e3, "seed": 0, "attenuation": 0.5, "min_count": 1.0}
    assert make_noise("transmission", 1e3).to_dict() == {"model": "transmission", "photons": 1e3, "seed": 0}


def test_zero_counts_are_finite_and_unweighted():
    from lifted_inverse.operators.noise import log_transform, pwls_weights

    counts = torch.tensor([[0.0, 1.0, 50.0, 0.0]], dtype=torch.float64)
    post = log_transform(counts, 100.0, attenuation=2.0)
    assert torch.allclose(post, torch.tensor([[math.log(100) / 2, math.log(100) / 2, math.log(2) / 2,
                                              math.log(100) / 2]], dtype=torch.float64))
    assert float(log_transform(counts, 100.0, min_count=0.5)[0, 0]) == pytest.approx(math.log(200))
    w = pwls_weights(counts, attenuation=2.0)
    assert torch.equal(w, 4 * counts)
    normed = pwls_weights(torch.tensor([[1.0, 3.0], [10.0, 30.0]]), normalize=True)
    assert torch.allclose(normed, torch.tensor([[0.5, 1.5], [0.5, 1.5]]))


def test_transmission_errors_name_the_argument():
    from lifted_inverse.operators.noise import log_transform, pwls_weights, simulate_transmission

    line = torch.ones((1, 4))
    for call, name in [
        (lambda: simulate_transmission(line, 0), "photons"),
        (lambda: simulate_transmission(line, 10, attenuation=-1), "attenuation"),
        (lambda: simulate_transmission(line, 10, seed=1, generator=torch.Generator()), "seed"),
        (lambda: simulate_transmission(line, 10, seed=1.5), "seed"),
        (lambda: log_transform(torch.tensor([[-1.0]]), 10), "counts"),
        (lambda: log_transform(torch.ones((1, 2)), 10, min_count=0), "min_count"),
        (lambda: pwls_weights(torch.tensor([[float("nan")]])), "counts"),
        (lambda: pwls_weights(torch.zeros((1, 3)), normalize=True), "counts"),
        (lambda: TransmissionPoissonNoise(10, min_count=-1), "min_count"),
    ]:
        with pytest.raises(ValueError, match=rf"^{name}:"):
            call()
