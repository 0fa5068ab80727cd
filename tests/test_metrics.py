import math

import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from lifted_inverse.datasets import builtin_image
from lifted_inverse.metrics import psnr, ssim
from lifted_inverse.plotting import plot_reconstructions


def _pair(gray=True, size=48, seed=0):
    x = builtin_image("astronaut", size, gray=gray).double()
    g = torch.Generator().manual_seed(seed)
    return (x + 0.1 * torch.randn(x.shape, generator=g, dtype=x.dtype)).clamp(0, 1), x


def test_psnr_matches_formula_and_skimage():
    y, x = _pair()
    mse = float(((y - x) ** 2).mean())
    assert float(psnr(y, x, 1.0)) == pytest.approx(10 * math.log10(1 / mse), abs=1e-10)
    assert float(psnr(y, x, 1.0)) == pytest.approx(peak_signal_noise_ratio(x.numpy(), y.numpy(), data_range=1.0), abs=1e-8)
    # data_range enters as R^2: doubling it adds 20 log10(2) dB
    assert float(psnr(y, x, 2.0) - psnr(y, x, 1.0)) == pytest.approx(20 * math.log10(2), abs=1e-10)


@pytest.mark.parametrize("gray", [True, False])
def test_ssim_matches_skimage_gaussian(gray):
    y, x = _pair(gray)
    ours = float(ssim(y, x, 1.0))
    ref = structural_similarity(y.numpy(), x.numpy(), data_range=1.0, channel_axis=0,
                                gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert ours == pytest.approx(ref, abs=1e-4)
    assert float(ssim(x, x, 1.0)) == pytest.approx(1.0, abs=1e-12)


def test_batched_per_sample_and_mean():
    y0, x0 = _pair(seed=0)
    y1, x1 = _pair(seed=1)
    yb, xb = torch.stack([y0, (x1 + 0.01).clamp(0, 1)]), torch.stack([x0, x1])
    p = psnr(yb, xb, 1.0)
    s = ssim(yb, xb, 1.0)
    assert p.shape == (2,) and s.shape == (2,)
    assert float(p[0]) == pytest.approx(float(psnr(y0, x0, 1.0)))
    assert float(p[1]) > float(p[0]) and float(s[1]) > float(s[0])
    assert float(psnr(yb, xb, 1.0, reduction="mean")) == pytest.approx(float(p.mean()))
    assert float(ssim(yb.float(), xb.float(), 1.0, reduction="mean")) == pytest.approx(float(s.mean()), abs=1e-5)


@pytest.mark.parametrize("bad", [None, 0, -1.0, float("nan"), True])
def test_data_range_is_explicit_and_checked(bad):
    y, x = _pair()
    with pytest.raises((ValueError, TypeError), match="data_range"):
        psnr(y, x, bad)
    with pytest.raises((ValueError, TypeError), match="data_range"):
        ssim(y, x, bad)
    with pytest.raises(TypeError):
        psnr(y, x)  # no default


def test_shape_errors():
    y, x = _pair()
    with pytest.raises(ValueError, match="shape"):
        psnr(y[:, :10], x, 1.0)
    with pytest.raises(ValueError, match="11x11"):
        ssim(y[:, :8, :8], x[:, :8, :8], 1.0)


def test_plot_reconstructions_writes_png(tmp_path):
    y, x = _pair()
    fig = plot_reconstructions(x, y, {"noisy copy": y, "truth": x}, tmp_path / "f.png", data_range=1.0)
    titles = [ax.get_title() for ax in fig.axes]
    assert any("PSNR" in t and "SSIM" in t for t in titles)
    assert any(f"{float(psnr(y, x, 1.0)):.2f}" in t for t in titles)
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*tmp"))
    # a sinogram-shaped measurement gets its own scale (and a colour bar axis)
    fig2 = plot_reconstructions(x, torch.randn(1, 30, 48) * 50, {"r": y}, None, data_range=1.0)
    assert len(fig2.axes) == 4
    with pytest.raises(ValueError, match="reconstructions"):
        plot_reconstructions(x, y, {"bad": y[:, :10]}, None, data_range=1.0)


def test_gt_range_convention_matches_skimage_per_sample():
    """psnr_gt_range / ssim_gt_range: R_b = max - min of each reference (dival / LION)."""
    pairs = [_pair(size=32, seed=s) for s in (0, 1)]
    ref = torch.stack([0.2 + 0.5 * p[1] for p in pairs])  # range 0.5 (times the image's own range)
    x = torch.stack([0.2 + 0.5 * p[0] for p in pairs])
    from lifted_inverse.metrics import gt_range, quality

    q = quality(x, ref)
    assert set(q) == {"psnr", "ssim", "psnr_gt_range", "ssim_gt_range"}
    for b in range(2):
        r = float(ref[b].max() - ref[b].min())
        assert float(gt_range(ref)[b]) == pytest.approx(r)
        xb, rb = x[b, 0].numpy(), ref[b, 0].numpy()
        assert float(q["psnr_gt_range"][b]) == pytest.approx(peak_signal_noise_ratio(rb, xb, data_range=r), abs=1e-8)
        assert float(q["psnr"][b]) == pytest.approx(peak_signal_noise_ratio(rb, xb, data_range=1.0), abs=1e-8)
        sk = structural_similarity(rb, xb, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                   data_range=r)
        assert float(q["ssim_gt_range"][b]) == pytest.approx(sk, abs=1e-4)
    assert bool((q["psnr_gt_range"] < q["psnr"]).all())  # range < 1 lowers the PSNR
    with pytest.raises(ValueError, match="ground_truth"):
        quality(x, torch.ones_like(ref))
    with pytest.raises(ValueError, match="data_range"):
        psnr(x, ref, torch.tensor([1.0, -1.0]))
