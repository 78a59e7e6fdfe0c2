"""Seed 003's kernel-attention variants: the serial (loop over windows) and parallel (grouped conv) forms agree."""
import pytest
import torch
import torch.nn as nn

from blindsr.models import create_model
from blindsr.models.kernel_attention import KA_VARIANTS, KernelAttention, window_kernels


def _pair(variant, dim=12, seed=0):
    torch.manual_seed(seed)
    par, ser = KernelAttention(dim, variant, 'parallel'), KernelAttention(dim, variant, 'serial')
    sd = par.state_dict()
    if isinstance(ser.se, nn.ModuleList):   # the serial form owns one SE per window: give each the shared one's weights
        sd = {k: v for k, v in sd.items() if not k.startswith('se.')}
        sd.update({f'se.{i}.{k}': v for i in range(len(ser.se)) for k, v in par.se.state_dict().items()})
    ser.load_state_dict(sd)
    return par, ser


@pytest.mark.parametrize('variant', sorted(KA_VARIANTS))
@pytest.mark.parametrize('size', [(16, 16), (19, 26)])
def test_serial_and_parallel_agree_forward_and_backward(variant, size):
    par, ser = _pair(variant)
    x = torch.randn(3, 12, *size, requires_grad=True)
    a = par(x); ga, = torch.autograd.grad(a.square().sum(), x)
    b = ser(x); gb, = torch.autograd.grad(b.square().sum(), x)
    assert a.shape == x.shape
    assert (a - b).abs().max() < 1e-5 and (ga - gb).abs().max() < 1e-4


def test_serial_kav5_has_one_se_per_window_and_they_matter():
    par, ser = _pair('v5')
    assert isinstance(ser.se, nn.ModuleList) and len(ser.se) == 4 and not isinstance(par.se, nn.ModuleList)
    with torch.no_grad():
        ser.se[2].fc[0].weight.add_(0.5)          # windows no longer share: the serial output moves, the parallel cannot
        x = torch.randn(2, 12, 16, 16)
        assert (par(x) - ser(x)).abs().max() > 1e-4


def test_kernels_come_from_the_windows():
    x = torch.zeros(1, 2, 12, 12); x[..., 6:, :6] = 1.0                 # only the bottom-left window is bright
    k = window_kernels(x, 2, 3)
    assert torch.equal(k[0, 2], torch.ones(2, 3, 3)) and k[0, [0, 1, 3]].abs().sum() == 0


@pytest.mark.parametrize('name', ['psrt_kav1', 'psrt_kav5', 'psrt_kav7', 'psrt_kav11'])
def test_psrt_variants_train_a_step_at_any_size(name):
    m = create_model(name, embed_dim=8, heads=2)
    rgb, up = torch.rand(2, 3, 20, 28), torch.rand(2, 31, 20, 28)
    out = m(rgb, up)
    assert out.shape == up.shape
    out.mean().backward()
    assert all(p.grad is not None for n, p in m.named_parameters() if n.startswith('ka.'))
