"""Behaviour of `blindsr.metrics` that does not need golden data."""
import math

import pytest
import torch

from blindsr.metrics import psnr, ssim


@pytest.fixture
def imgs():
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(3, 3, 40, 40, generator=g)
    sr = (hr + 0.03 * torch.randn(hr.shape, generator=g)).clamp(0, 1)
    return sr, hr


@pytest.mark.parametrize('fn', (psnr, ssim))
def test_shapes_and_unbatched(fn, imgs):
    sr, hr = imgs
    v = fn(sr, hr, crop_border=2, test_y_channel=True)
    assert v.shape == (3,) and v.dtype == torch.float64
    for i in range(3):
        assert torch.allclose(fn(sr[i], hr[i], crop_border=2, test_y_channel=True), v[i])
    assert fn(sr[0], hr[0]).shape == ()
    assert torch.allclose(fn(sr, hr, reduction='mean'), fn(sr, hr).mean())


@pytest.mark.parametrize('fn', (psnr, ssim))
def test_data_range_and_grayscale(fn, imgs):
    sr, hr = imgs
    assert torch.allclose(fn(sr * 255, hr * 255, data_range=255), fn(sr, hr))
    g = fn(sr[:, :1], hr[:, :1])
    assert g.shape == (3,) and torch.isfinite(g).all()


def test_identical():
    x = torch.rand(2, 3, 16, 16)
    assert psnr(x, x).isinf().all()
    assert torch.allclose(ssim(x, x), torch.ones(2, dtype=torch.float64))


def test_psnr_value():
    hr = torch.full((1, 3, 8, 8), 0.5)
    assert math.isclose(psnr(hr + 2 / 255, hr).item(), 10 * math.log10(255 ** 2 / 4), rel_tol=1e-6)


@pytest.mark.parametrize('fn', (psnr, ssim))
def test_errors_name_argument(fn, imgs):
    sr, hr = imgs
    with pytest.raises(ValueError, match='same shape'): fn(sr, hr[:, :, :20])
    with pytest.raises(ValueError, match='crop_border'): fn(sr, hr, crop_border=20)
    with pytest.raises(ValueError, match='crop_border'): fn(sr, hr, crop_border=-1)
    with pytest.raises(ValueError, match='crop_border'): fn(sr, hr, crop_border=1.5)
    with pytest.raises(ValueError, match='test_y_channel'): fn(sr[:, :1], hr[:, :1], test_y_channel=True)
    with pytest.raises(ValueError, match='reduction'): fn(sr, hr, reduction='sum')
    with pytest.raises(ValueError, match='data_range'): fn(sr, hr, data_range=0)
    with pytest.raises(TypeError, match='sr'): fn(sr.numpy(), hr)
    with pytest.raises(ValueError, match='hr'): fn(sr, hr[0, 0])


def test_ssim_too_small():
    x = torch.rand(1, 3, 12, 12)
    with pytest.raises(ValueError, match='crop_border'): ssim(x, x, crop_border=1)
    assert ssim(x, x, crop_border=0).item() == pytest.approx(1.0)
