"""Noise models: statistics, reproducibility, errors."""
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
