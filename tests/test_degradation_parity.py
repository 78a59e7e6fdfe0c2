"""Parity of blindsr.degradations with the official DASR code and BasicSR's MATLAB imresize (../shared/golden).

Tolerances, on the [0, 255] scale unless noted:
* kernels: 1e-6 (the reference's own float32 arithmetic is accurate to ~5e-7 for anisotropic kernels, whose
  covariance it inverts in float32; ours are computed in float64);
* DASR's bicubic module alone and the blur + bicubic stage given the reference kernel: 1e-4;
* the whole float chain with our own kernels: 3e-4. The reference's float32 kernels differ from the exact ones by
  up to 5e-7, which a blur of 0-255 values turns into ~1e-4; the reference's own float32 result is up to 2.1e-4
  away from a float64 evaluation of the same operations, so 1e-4 end to end would test float32 noise, not the method.
  The measured maximum is 2.0e-4 (lr_x4_aniso30);
* 8-bit LR images: at most 0.1% of the pixels one grey level off, none more;
* BasicSR imresize ([0, 1] scale): 1e-5.
"""
import math

import numpy as np
import pytest
import torch

from blindsr.degradations import (DASRDegradation, anisotropic_gaussian_kernel, blur, dasr_bicubic, imresize,
                                  isotropic_gaussian_kernel)

# name -> (scale, DASRDegradation arguments); the x3 case runs on the crop named by x3_hr_crop_hw
LR_CASES = {
    'lr_x4_iso12': (4, dict(mode='iso', sigma=1.2)),
    'lr_x2_iso06': (2, dict(mode='iso', sigma=0.6)),
    'lr_x3_iso16': (3, dict(mode='iso', sigma=1.6)),
    'lr_x4_bicubic': (4, dict(mode='iso', sigma=0.0)),
    'lr_x4_aniso30': (4, dict(mode='aniso', lambda1=0.2, lambda2=4.0, theta=math.radians(30))),
}


@pytest.fixture(scope='module')
def dasr(golden_dir):
    with np.load(golden_dir / 'dasr' / 'dasr_degradation.npz') as f: return dict(f)


@pytest.fixture(scope='module')
def basicsr(golden_dir):
    with np.load(golden_dir / 'basicsr' / 'basicsr_reference.npz') as f: return dict(f)


def _hr255(dasr, name):
    "The HR image as (1, 3, H, W) float32 on [0, 255], cropped as the reference did for `name`."
    hr = torch.from_numpy(dasr['hr']).permute(2, 0, 1)[None].float()
    if name == 'lr_x3_iso16':
        h, w = (int(v) for v in dasr['x3_hr_crop_hw'])
        hr = hr[..., :h, :w]
    return hr


def test_isotropic_kernels(dasr):
    k = isotropic_gaussian_kernel(torch.from_numpy(dasr['iso_sigmas']))
    assert k.shape == dasr['iso_kernels'].shape
    np.testing.assert_allclose(k.numpy(), dasr['iso_kernels'], rtol=0, atol=1e-6)


def test_anisotropic_kernels(dasr):
    theta_deg, l1, l2 = (torch.from_numpy(c) for c in dasr['aniso_params'].T)   # golden stores degrees
    k = anisotropic_gaussian_kernel(l1, l2, torch.deg2rad(theta_deg))
    np.testing.assert_allclose(k.numpy(), dasr['aniso_kernels'], rtol=0, atol=1e-6)


def test_anisotropic_axis_convention(dasr):
    "theta = 0, l1 = 0.2, l2 = 4: stretched vertically (l2 is the std along rows)."
    k = anisotropic_gaussian_kernel(0.2, 4.0, 0.0)[0]
    assert k[:, 10].sum() > 0.99 and k[10, :].sum() < 0.2


def test_bicubic_module_alone(dasr):
    out = dasr_bicubic(_hr255(dasr, 'bicubic'), 4)[0]
    ref = dasr['bicubic_x4_float']
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-4)


@pytest.mark.parametrize('name', LR_CASES)
def test_lr_kernel(dasr, name):
    scale, kw = LR_CASES[name]
    _, params = DASRDegradation(scale, **kw)(_hr255(dasr, name)[..., :24, :24] / 255)
    if name + '_kernel' in dasr:
        np.testing.assert_allclose(params['kernel'][0].numpy(), dasr[name + '_kernel'], rtol=0, atol=1e-6)
    else:
        assert name == 'lr_x4_bicubic' and float(params['sigma'][0]) == 0   # no blur


@pytest.mark.parametrize('name', LR_CASES)
def test_lr_uint8(dasr, name):
    scale, kw = LR_CASES[name]
    lr, _ = DASRDegradation(scale, **kw)(_hr255(dasr, name) / 255)
    ours = (lr[0] * 255).round().to(torch.int64).permute(1, 2, 0).numpy()
    ref = dasr[name].astype(np.int64)
    assert ours.shape == ref.shape
    diff = np.abs(ours - ref)
    assert diff.max() <= 1, f"{name}: a pixel is {diff.max()} grey levels off"
    assert (diff > 0).mean() <= 1e-3, f"{name}: {(diff > 0).sum()} of {diff.size} values differ"


@pytest.mark.parametrize('name', LR_CASES)
def test_prequant_given_reference_kernel(dasr, name):
    "The blur + DASR-bicubic stage on [0, 255], fed the kernel the reference used: 1e-4."
    scale, _ = LR_CASES[name]
    x = _hr255(dasr, name)
    if name + '_kernel' in dasr: x = blur(x, torch.from_numpy(dasr[name + '_kernel']))
    out = dasr_bicubic(x, scale)[0]
    np.testing.assert_allclose(out.numpy(), dasr[name + '_prequant_chw'], rtol=0, atol=1e-4)


@pytest.mark.parametrize('name', LR_CASES)
def test_prequant_end_to_end(dasr, name):
    "The same stage with our own kernels: 3e-4 (see the module docstring for why not 1e-4)."
    scale, kw = LR_CASES[name]
    hr = _hr255(dasr, name)
    _, params = DASRDegradation(scale, **kw)(hr[..., :24, :24] / 255)
    x = hr if name == 'lr_x4_bicubic' else blur(hr, params['kernel'])
    out = dasr_bicubic(x, scale)[0]
    np.testing.assert_allclose(out.numpy(), dasr[name + '_prequant_chw'], rtol=0, atol=3e-4)


@pytest.mark.parametrize('key,scale,crop', [('imresize_d2_full512', 1 / 2, None), ('imresize_d3_full512', 1 / 3, None),
                                            ('imresize_d4_full512', 1 / 4, None),
                                            ('imresize_u4_crop64_topleft', 4, 64)])
def test_basicsr_imresize(basicsr, key, scale, crop):
    x = torch.from_numpy(basicsr['imresize_input_hr']).permute(2, 0, 1)[None].float() / 255
    if crop: x = x[..., :crop, :crop]
    out = imresize(x, scale)[0].permute(1, 2, 0).numpy()
    ref = basicsr[key]
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)
