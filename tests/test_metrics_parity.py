"""Parity of `blindsr.metrics` with BasicSR's `calculate_psnr` / `calculate_ssim` (golden values in
../shared/golden/basicsr, computed by BasicSR 8d56e3a with crop_border=4)."""
import numpy as np
import pytest
import torch

from blindsr.metrics import psnr, ssim

PAIRS = ('a', 'b')
PSNR_TOL, SSIM_TOL = 1e-4, 1e-5


@pytest.fixture(scope='module')
def ref(golden_dir):
    return dict(np.load(golden_dir / 'basicsr' / 'basicsr_reference.npz'))


def _chw(a, as_float=True):
    "RGB uint8 HWC array -> CHW tensor: float32 in [0,1] (what a model outputs) or uint8."
    t = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)
    return t.float() / 255 if as_float else t


@pytest.mark.parametrize('pair', PAIRS)
@pytest.mark.parametrize('space', ('y', 'rgb'))
@pytest.mark.parametrize('as_float', (True, False), ids=('float01', 'uint8'))
def test_parity(ref, pair, space, as_float):
    sr, hr = _chw(ref[f'pair_{pair}_sr_rgb'], as_float), _chw(ref[f'pair_{pair}_hr_rgb'], as_float)
    y = space == 'y'
    p = psnr(sr, hr, crop_border=4, test_y_channel=y).item()
    s = ssim(sr, hr, crop_border=4, test_y_channel=y).item()
    ep, es = float(ref[f'pair_{pair}_psnr_{space}']), float(ref[f'pair_{pair}_ssim_{space}'])
    assert abs(p - ep) < PSNR_TOL, (p, ep)
    assert abs(s - es) < SSIM_TOL, (s, es)


@pytest.mark.parametrize('pair', PAIRS)
def test_not_bgr(ref, pair):
    "The reference file also holds the values for RGB fed where BGR was expected; we must not match those."
    sr, hr = _chw(ref[f'pair_{pair}_sr_rgb']), _chw(ref[f'pair_{pair}_hr_rgb'])
    p = psnr(sr, hr, crop_border=4, test_y_channel=True).item()
    s = ssim(sr, hr, crop_border=4, test_y_channel=True).item()
    assert abs(p - float(ref[f'pair_{pair}_psnr_y_WRONG_rgb_fed_as_bgr'])) > 1e-2
    assert abs(s - float(ref[f'pair_{pair}_ssim_y_WRONG_rgb_fed_as_bgr'])) > 1e-4


def test_batched_parity(ref):
    "Both pairs in one batch give the per-image values; reduction='mean' their average."
    sr = torch.stack([_chw(ref[f'pair_{p}_sr_rgb']) for p in PAIRS])
    hr = torch.stack([_chw(ref[f'pair_{p}_hr_rgb']) for p in PAIRS])
    for fn, tol in ((psnr, PSNR_TOL), (ssim, SSIM_TOL)):
        exp = torch.tensor([float(ref[f'pair_{p}_{fn.__name__}_y']) for p in PAIRS], dtype=torch.float64)
        got = fn(sr, hr, crop_border=4, test_y_channel=True)
        assert got.shape == (2,) and got.dtype == torch.float64
        assert (got - exp).abs().max() < tol
        assert abs(fn(sr, hr, crop_border=4, test_y_channel=True, reduction='mean') - exp.mean()) < tol
