"""Tests of blindsr.degradations beyond the notebook's: robustness over many random draws, gradients, devices,
and samplers' statistics."""
import functools
import math
from pathlib import Path

import pytest
import torch

from blindsr.degradations import (DASRDegradation, DegradationRound, DiverseDegradation, KERNEL_FAMILIES,
                                  anisotropic_gaussian_kernel, blur, dasr_bicubic, gaussian_noise, imresize,
                                  isotropic_gaussian_kernel, jpeg, quantize, resize, sample_kernels)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize('size', [(16, 24), (33, 33), (64, 80)])
def test_diverse_many_seeds_small_images(size):
    "Strong down-scaling twice can leave a few pixels: every draw must still give a finite LR of the right size."
    hr = torch.rand(3, 3, *size)
    for seed in range(15):
        for deg in (DiverseDegradation(4), DiverseDegradation.bsrgan_like(2), DiverseDegradation.realesrgan(3)):
            lr, params = deg(hr, generator=torch.Generator().manual_seed(seed))
            assert lr.shape == (3, 3, size[0] // deg.scale, size[1] // deg.scale)
            assert torch.isfinite(lr).all() and torch.equal(quantize(lr), lr)
            assert all(v.shape[0] == 3 for v in params.values())


def test_diverse_patches_share_degradation():
    "Identical patches of one image get identical steps; only the noise draws differ, so with noise off they match."
    quiet = DegradationRound(noise_prob=0.0)
    deg = DiverseDegradation(2, rounds=(quiet, quiet), shuffle_prob=1.0)
    patch = torch.rand(3, 1, 3, 40, 40)
    lr, _ = deg(patch.expand(-1, 2, -1, -1, -1), generator=torch.Generator().manual_seed(0))
    assert torch.equal(lr[:, 0], lr[:, 1])


def test_diverse_params_replay():
    hr = torch.rand(2, 3, 48, 48)
    quiet = DegradationRound(noise_prob=0.0)
    deg = DiverseDegradation(4, rounds=(quiet, quiet))
    params = deg.sample_params(2, torch.Generator().manual_seed(5))
    assert torch.equal(deg(hr, params=params)[0], deg(hr, params=params)[0])


def test_dasr_training_ranges_and_labels():
    for scale, high in ((2, 2.0), (3, 3.0), (4, 4.0)):
        deg = DASRDegradation(scale)
        assert deg.sigma == (0.2, high)
        p = deg.sample_params(2000, torch.Generator().manual_seed(0))
        assert 0.2 <= float(p['sigma'].min()) and float(p['sigma'].max()) <= high
        assert float(p['sigma'].max()) > high - 0.05 and torch.all(p['noise'] == 0)
    p = DASRDegradation(4, 'aniso', noise=(0, 25)).sample_params(2000, torch.Generator().manual_seed(0))
    assert 0 <= float(p['theta'].min()) and float(p['theta'].max()) <= math.pi
    assert 0.2 <= float(p['lambda1'].min()) and float(p['lambda2'].max()) <= 4.0
    assert 0 <= float(p['noise'].min()) and float(p['noise'].max()) <= 25 and float(p['noise'].std()) > 5


def test_dasr_sfold_and_noise_level():
    hr = torch.full((2, 3, 64, 64), 0.5)
    lr, _ = DASRDegradation(4, 'iso', sigma=0.0, noise=25.0, downsample='s-fold')(hr, generator=torch.Generator().manual_seed(0))
    assert lr.shape == (2, 3, 16, 16)
    assert abs(float((lr - 0.5).std()) * 255 - 25) < 2.5


def test_sample_kernels_family_frequencies():
    probs = (0.405, 0.225, 0.108, 0.027, 0.108, 0.027, 0.1)
    _, p = sample_kernels(4000, KERNEL_FAMILIES, probs, size_choices=(7, 9, 21), generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(p['family'], minlength=len(KERNEL_FAMILIES)).double() / 4000
    assert torch.allclose(freq, torch.tensor(probs, dtype=torch.float64), atol=0.03)
    assert set(p['size'].tolist()) == {7, 9, 21}


def test_blur_and_imresize_are_differentiable():
    x = torch.rand(2, 1, 9, 9, dtype=torch.float64, requires_grad=True)
    k = torch.rand(2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, k: blur(x, k), (x, k))
    assert torch.autograd.gradcheck(lambda x: imresize(x, 0.5), (x,))
    assert torch.autograd.gradcheck(lambda x: imresize(x, 1.7), (x,))


def test_imresize_anisotropic_scale_and_size():
    x = torch.rand(2, 3, 30, 40, dtype=torch.float64)
    y = imresize(x, scale=(0.5, 2.0))
    assert y.shape == (2, 3, 15, 80)
    # one axis at a time equals both at once (separability)
    torch.testing.assert_close(y, imresize(imresize(x, scale=(0.5, 1.0)), scale=(1.0, 2.0)))
    assert imresize(x, size=(7, 11)).shape == (2, 3, 7, 11)
    for kernel in ('linear', 'box', 'lanczos2', 'lanczos3'):
        c = imresize(torch.full((1, 1, 12, 12), 0.7, dtype=torch.float64), 0.37, kernel=kernel)
        torch.testing.assert_close(c, torch.full_like(c, 0.7))


def test_error_messages_name_the_parameter():
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match='scale must be'): imresize(x, -1)
    with pytest.raises(ValueError, match='size must be'): resize(x, size=(0, 4))
    with pytest.raises(ValueError, match='quality'): jpeg(x, torch.tensor([10, 101]))
    with pytest.raises(ValueError, match='sigma must be one number or one value per sample'):
        gaussian_noise(x, torch.ones(3))
    with pytest.raises(ValueError, match='noise must be'): DASRDegradation(4, noise=-1)
    with pytest.raises(ValueError, match='mode must be'): DASRDegradation(4, mode='motion')
    with pytest.raises(ValueError, match='resize_range'): DegradationRound(resize_range=(1.2, 2.0))
    with pytest.raises(ValueError, match='kernel_probs'): DegradationRound(kernel_probs=(1.0,))
    with pytest.raises(ValueError, match='kernel_size'): DiverseDegradation(4, kernel_size=15)
    with pytest.raises(ValueError, match='factor must be > 0'): dasr_bicubic(x, 0)
    with pytest.raises(ValueError, match='x must be a float tensor'): blur(x.to(torch.uint8), torch.ones(3, 3) / 9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')
def test_cuda_follows_input_and_matches_cpu():
    hr = torch.rand(2, 2, 3, 64, 64)
    deg = DASRDegradation(4, 'aniso', noise=(0, 25))
    cpu, p_cpu = deg(hr, generator=torch.Generator().manual_seed(0))
    gpu, p_gpu = deg(hr.cuda(), generator=torch.Generator().manual_seed(0))   # CPU generator drives GPU data
    assert gpu.is_cuda and p_gpu['kernel'].is_cuda
    assert (gpu.cpu() - cpu).abs().max() <= 1 / 255 + 1e-6
    lr, p = DiverseDegradation(4)(hr.cuda(), generator=torch.Generator(device='cuda').manual_seed(0))
    assert lr.is_cuda and lr.shape == (2, 2, 3, 16, 16)
    torch.testing.assert_close(imresize(hr.cuda(), 0.25).cpu(), imresize(hr, 0.25), atol=1e-5, rtol=0)


# --- blur's methods ('direct', 'separable', 'fft', 'auto') against the plain grouped convolution --------------------

def _grouped_reference(x, k, padding='reflect'):
    "blur as it was before it had methods: one grouped conv with the kernels as given, in x's dtype."
    B, (H, W), (kh, kw) = x.shape[0], x.shape[-2:], k.shape[-2:]
    c = x[0].numel() // (H * W)
    pad = (kw // 2, (kw - 1) // 2, kh // 2, (kh - 1) // 2)
    xp = torch.nn.functional.pad(x.reshape(1, B * c, H, W), pad, mode=padding)
    return torch.nn.functional.conv2d(xp, k.to(x.dtype).expand(B, kh, kw).repeat_interleave(c, 0)[:, None],
                                      groups=B * c).reshape(x.shape)


def _kernels(kind, batch, size, dtype=torch.float32):
    g = torch.Generator().manual_seed(size * 10 + batch)
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(batch, generator=g, dtype=torch.float64)
    if kind == 'iso': return isotropic_gaussian_kernel(u(0.2, 4.0), size, dtype=dtype)
    return anisotropic_gaussian_kernel(u(0.2, 4.0), u(0.2, 4.0), u(0.1, 3.0), size, dtype=dtype)


@pytest.mark.parametrize('padding', ['reflect', 'replicate', 'circular', 'constant'])
@pytest.mark.parametrize('kind', ['iso', 'aniso'])
@pytest.mark.parametrize('batch,size', [(1, 21), (4, 21), (3, 7), (2, 20), (4, 6)])
def test_blur_methods_match_grouped_conv(padding, kind, batch, size):
    "Every method equals the grouped conv to float32 rounding on [0, 1] images: iso, aniso, batch of 1, odd/even sizes."
    x = torch.rand(batch, 2, 3, 40, 36, generator=torch.Generator().manual_seed(1))
    k = _kernels(kind, batch, size)
    ref = _grouped_reference(x, k, padding)
    methods = ['auto', 'direct', 'fft'] + (['separable'] if kind == 'iso' else [])
    for method in methods:
        torch.testing.assert_close(blur(x, k, padding, method), ref, atol=1e-5, rtol=0, msg=method)
    # float64 images and kernels (made in float64: float32 kernels are rank 1 only to float32 rounding)
    x64, k64 = x.double(), _kernels(kind, batch, size, torch.float64)
    ref64 = _grouped_reference(x64, k64, padding)
    for method in methods:
        torch.testing.assert_close(blur(x64, k64, padding, method), ref64, atol=1e-12, rtol=0, msg=method)


@pytest.mark.parametrize('dtype,atol', [(torch.bfloat16, 4e-3), (torch.float16, 5e-4)])
def test_blur_half_types_are_computed_in_float32_on_cpu(dtype, atol):
    "bfloat16 / float16 in, same dtype out, within half an output ulp of the float32 result of the rounded input."
    x = torch.rand(4, 6, 32, 32, generator=torch.Generator().manual_seed(2)).to(dtype)
    for kind in ('iso', 'aniso'):
        k = _kernels(kind, 4, 21)
        ref = _grouped_reference(x.float(), k)
        for method in ['auto', 'direct', 'fft'] + (['separable'] if kind == 'iso' else []):
            y = blur(x, k, method=method)
            assert y.dtype == dtype
            torch.testing.assert_close(y.float(), ref, atol=atol, rtol=0, msg=method)


def test_blur_dasr_batch_paths():
    "DASR's (4, 2, 3, 192, 192) batch on [0, 255]: auto takes separable for iso and FFT for aniso, both within 1e-3."
    from blindsr.degradations import _auto_method
    x = torch.rand(4, 2, 3, 192, 192, generator=torch.Generator().manual_seed(3)) * 255
    for mode, method in (('iso', 'separable'), ('aniso', 'fft')):
        k = DASRDegradation(4, mode).sample_params(4, torch.Generator().manual_seed(0))['kernel']
        assert _auto_method(k, 24, (192, 192), 'cpu')[0] == method
        ref = _grouped_reference(x, k)
        err = (blur(x, k) - ref).abs().max().item()
        assert err <= 1e-3, (mode, err)      # float32 rounding on [0, 255]: the grouped conv itself is ~3e-4 from exact


def test_blur_fft_in_chunks(monkeypatch):
    "The FFT path transforms a few samples at a time; uneven chunks give the same result."
    from blindsr import degradations
    x = torch.rand(5, 3, 30, 30, dtype=torch.float64)
    k = _kernels('aniso', 5, 21, torch.float64)
    ref = _grouped_reference(x, k)
    monkeypatch.setattr(degradations, '_FFT_CHUNK', 2 * 3 * 50 * 50)   # two samples per chunk: 2 + 2 + 1
    torch.testing.assert_close(blur(x, k, method='fft'), ref, atol=1e-12, rtol=0)


def test_blur_negligible_entries_and_rank1_test():
    from blindsr.degradations import _negligible_zeroed, _rank1_factors
    tiny = torch.finfo(torch.float32).tiny
    k = DASRDegradation(4, 'aniso').sample_params(64, torch.Generator().manual_seed(0))['kernel']
    assert bool(((k > 0) & (k < tiny)).any())                    # DASR's draws do hold subnormal entries
    k0 = _negligible_zeroed(k)
    assert not bool(((k0 > 0) & (k0 < tiny)).any())
    x = torch.rand(64, 3, 24, 24, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(blur(x, k, method='direct'), _grouped_reference(x, k), atol=1e-6, rtol=0)
    # rank 1: every isotropic Gaussian, and axis-aligned anisotropic ones; not rotated, generalized, plateau or sinc
    iso = DASRDegradation(4, 'iso').sample_params(256, torch.Generator().manual_seed(0))['kernel']
    assert _rank1_factors(iso) is not None and _rank1_factors(isotropic_gaussian_kernel(0.0)) is not None
    assert _rank1_factors(anisotropic_gaussian_kernel(0.5, 3.0, 0.0)) is not None
    assert _rank1_factors(anisotropic_gaussian_kernel(0.5, 3.0, 0.7)) is None
    for family in ('generalized_iso', 'plateau_iso', 'sinc'):
        kf, p = sample_kernels(32, family, generator=torch.Generator().manual_seed(0))
        assert _rank1_factors(kf) is None, family
    assert _rank1_factors(torch.tensor([[[1., -1.], [1., -1.]]])) is None   # sums to zero: not factored this way
    col, row = _rank1_factors(iso)
    torch.testing.assert_close(col * row, iso, atol=2e-7, rtol=0)   # within an ulp of the largest entries
    assert _rank1_factors(iso.double()) is None      # float32 kernels are rank 1 to float32 rounding only


def test_blur_methods_gradients():
    x = torch.rand(2, 1, 12, 12, dtype=torch.float64, requires_grad=True)
    k = isotropic_gaussian_kernel(torch.tensor([0.8, 1.5]), 5, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, k: blur(x, k, method='fft'), (x, k))
    assert torch.autograd.gradcheck(lambda x: blur(x, k.detach(), method='separable'), (x,))
    kd = k.detach().clone().requires_grad_()
    blur(x.detach(), kd, method='direct').sum().backward()
    assert bool((kd.grad != 0).all())                           # the zeroed entries still get their gradient


def test_blur_method_errors():
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match='method must be one of'): blur(x, torch.ones(3, 3) / 9, method='winograd')
    with pytest.raises(ValueError, match='needs rank-1 kernels'):
        blur(x, anisotropic_gaussian_kernel(0.5, 3.0, 0.7), method='separable')


def test_dasr_lr_unchanged_by_the_blur_method(monkeypatch):
    "The whole DASR degradation with auto (separable / FFT) vs the direct conv: 8-bit LR within one grey level."
    from blindsr import degradations
    hr = torch.rand(4, 2, 3, 96, 96, generator=torch.Generator().manual_seed(5))
    for mode in ('iso', 'aniso'):
        deg = DASRDegradation(4, mode, noise=(0, 25))
        params = deg.sample_params(4, torch.Generator().manual_seed(1))
        lr_auto, _ = deg(hr, params=params, generator=torch.Generator().manual_seed(2))
        with monkeypatch.context() as m:
            m.setattr(degradations, 'blur', functools.partial(blur, method='direct'))
            lr_direct, _ = deg(hr, params=params, generator=torch.Generator().manual_seed(2))
        diff = ((lr_auto - lr_direct) * 255).round().abs()
        assert diff.max() <= 1 and (diff > 0).float().mean() <= 1e-3, (mode, diff.max(), (diff > 0).float().mean())
