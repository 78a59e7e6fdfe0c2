"""Tests of blindsr.degradations beyond the notebook's: robustness over many random draws, gradients, devices,
and samplers' statistics."""
import math
from pathlib import Path

import pytest
import torch

from blindsr.degradations import (DASRDegradation, DegradationRound, DiverseDegradation, KERNEL_FAMILIES, blur,
                                  dasr_bicubic, gaussian_noise, imresize, jpeg, quantize, resize, sample_kernels)

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
