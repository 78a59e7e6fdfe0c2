"""The model registry, shared layers and the DASR networks (shapes, API, gradients, state dicts)."""
import io

import pytest
import torch
import torch.nn.functional as F

import blindsr.models as registry
from blindsr.models import create_model, is_model, list_models, register_model
from blindsr.models.dasr import DAConv, DASR, BlindSR
from blindsr.models.encoders import DegradationEncoder
from blindsr.models.layers import ChannelAttention, MeanShift, ResBlock, Upsampler
from blindsr.contrastive import MoCo, create_objective
from blindsr.methods import ContrastiveSR

SMALL = dict(n_feats=16, n_groups=2, n_blocks=2, width=8)


# -- registry --------------------------------------------------------------------------------------

def test_registry_lists_dasr_models():
    assert {'dasr_encoder', 'blindsr', 'dasr_x2', 'dasr_x3', 'dasr_x4'} <= set(list_models())
    assert list_models('dasr_x*') == ['dasr_x2', 'dasr_x3', 'dasr_x4']
    assert is_model('dasr_x4') and not is_model('dasr_x5')


def test_unknown_name_suggests_close_matches():
    with pytest.raises(ValueError, match=r"unknown model name 'dasr_x5'; did you mean 'dasr_x.'"):
        create_model('dasr_x5')
    with pytest.raises(ValueError, match=r"unknown model name 'zzz'"):
        create_model('zzz')


def test_register_and_conflicts():
    @register_model('test_only_identity')
    def _a(): return torch.nn.Identity()
    try:
        assert isinstance(create_model('test_only_identity'), torch.nn.Identity)
        with pytest.raises(ValueError, match="already taken"):
            register_model('test_only_identity')(lambda: None)
    finally:
        del registry._REGISTRY['test_only_identity']


def test_create_model_kwargs_reach_the_factory():
    m = create_model('blindsr', scale=3, **SMALL)
    assert isinstance(m, BlindSR) and m.scale == 3 and m.encoder.fea_dim == 32
    assert create_model('dasr_encoder', width=4).fea_dim == 16


# -- layers ----------------------------------------------------------------------------------------

def test_meanshift_loads_official_conv_keys():
    official = torch.nn.Conv2d(3, 3, 1)   # the official MeanShift is a frozen Conv2d: keys weight (3,3,1,1), bias (3,)
    with torch.no_grad():
        official.weight.copy_(torch.eye(3).view(3, 3, 1, 1) / 2); official.bias.copy_(torch.tensor([1., 2., 3.]))
    ms = MeanShift()
    ms.load_state_dict(official.state_dict())
    x = torch.rand(1, 3, 4, 4)
    torch.testing.assert_close(ms(x), official(x))
    assert list(ms.parameters()) == []


def test_upsampler_scales_and_errors():
    for s in (2, 3, 4, 8):
        assert Upsampler(s, 4)(torch.zeros(1, 4, 3, 5)).shape == (1, 4, 3 * s, 5 * s)
    for bad in (5, 6, 7, 0, 1.5):
        with pytest.raises(ValueError, match='power of two'): Upsampler(bad, 4)
    with pytest.raises(ValueError, match='power of two'): DASR(scale=5)


def test_resblock_and_channel_attention():
    x = torch.randn(2, 8, 5, 5)
    assert ResBlock(8, bn=True)(x).shape == x.shape
    assert ChannelAttention(8, reduction=2)(x).shape == x.shape


# -- DASR ------------------------------------------------------------------------------------------

def test_daconv_equals_per_sample_depthwise_conv():
    torch.manual_seed(0)
    da = DAConv(channels=6, rep_dim=8, kernel_size=5, reduction=2)
    x, rep = torch.randn(3, 6, 9, 7), torch.randn(3, 8)
    ker = da.predicted_kernels(rep)
    assert ker.shape == (3, 6, 5, 5)
    f1 = torch.cat([da.conv(F.leaky_relu(F.conv2d(x[i:i + 1], ker[i][:, None], padding=2, groups=6), 0.1)) for i in range(3)])
    torch.testing.assert_close(da(x, rep), f1 + da.ca(x, rep), rtol=1e-5, atol=1e-5)
    # images do not leak into each other
    out2 = da(torch.cat([x[:1], torch.zeros_like(x[1:])]), rep)
    torch.testing.assert_close(out2[:1], da(x, rep)[:1], rtol=1e-5, atol=1e-5)


def _grads(module, x, fmt, bf16=False, *extra):
    "Output, input gradient and parameter gradients of `module(x in layout fmt, *extra)` for a fixed weighting of the output."
    xx = x.clone(memory_format=fmt).requires_grad_()
    module.zero_grad()
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16): out = module(xx, *extra)
    (out.float() * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out, xx.grad, [p.grad.clone() for p in module.parameters()]


def test_daconv_channels_last_fold_matches_nchw():
    "channels_last folds the batch in its own layout: the NCHW values and gradients, and every tensor stays channels-last."
    torch.manual_seed(0)
    da = DAConv(channels=8, rep_dim=16, reduction=4)
    x, rep = torch.randn(3, 8, 10, 12), torch.randn(3, 16)
    cl = torch.channels_last
    (o1, g1, w1), (o2, g2, w2) = _grads(da, x, torch.contiguous_format, False, rep), _grads(da, x, cl, False, rep)
    torch.testing.assert_close(o2, o1, rtol=1e-5, atol=1e-5); torch.testing.assert_close(g2, g1, rtol=1e-5, atol=1e-5)
    for a, b in zip(w1, w2): torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    assert o2.is_contiguous(memory_format=cl) and g2.is_contiguous(memory_format=cl)
    ob, gb, _ = _grads(da, x.bfloat16(), cl, True, rep)            # bf16 autocast: the NCHW bf16 result, to bf16 rounding
    on, gn, _ = _grads(da, x.bfloat16(), torch.contiguous_format, True, rep)
    assert ob.dtype == torch.bfloat16 and gb.is_contiguous(memory_format=cl)
    torch.testing.assert_close(ob.float(), o1, rtol=0, atol=0.02 * o1.abs().max().item())
    torch.testing.assert_close(ob, on); torch.testing.assert_close(gb, gn)
    with torch.no_grad():                                          # one image (inference): the same values
        torch.testing.assert_close(da(x[:1].contiguous(memory_format=cl), rep[:1]), o1[:1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_upsampler_matches_conv_and_pixel_shuffle(scale):
    "The fused conv + shuffle against the modules one by one (nn.PixelShuffle), in both layouts, fp32 and bf16."
    torch.manual_seed(0)
    up, x = Upsampler(scale, 8), torch.randn(2, 8, 5, 6)
    if scale == 4: up.to(memory_format=torch.channels_last)              # a channels-last model's weights are channels-last
    reference = torch.nn.Sequential(*up)                                  # the same modules, called one by one
    ref, gref, wref = _grads(reference, x, torch.contiguous_format)
    for fmt in (torch.contiguous_format, torch.channels_last):
        out, g, w = _grads(up, x, fmt)
        assert out.is_contiguous(memory_format=fmt) and g.is_contiguous(memory_format=fmt)
        if fmt == torch.contiguous_format: assert torch.equal(out, ref)       # pure data movement: bit for bit
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5); torch.testing.assert_close(g, gref, rtol=1e-4, atol=1e-5)
        for a, b in zip(w, wref): torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    ob, _, _ = _grads(up, x, torch.channels_last, True)
    assert ob.dtype == torch.bfloat16
    torch.testing.assert_close(ob.float(), ref, rtol=0, atol=0.02 * ref.abs().max().item())
    assert sorted(up.state_dict())[:2] == ['0.bias', '0.weight']          # the official keys


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_blindsr_shapes_and_range(scale):
    m = create_model('blindsr', scale=scale, **SMALL).eval()
    lr = torch.rand(2, 3, 12, 10)
    with torch.no_grad(): sr = m(lr)
    assert sr.shape == (2, 3, 12 * scale, 10 * scale)
    assert m.img_range == 1.0 and m.sr_net.img_range == 1.0 and m.rgb_range == 255.
    # zero residual body and tail -> output is the mean colour: input/output really are on [0, 1]
    with torch.no_grad():
        for p in m.sr_net.tail.parameters(): p.zero_()
        assert torch.allclose(m(lr), torch.tensor([0.4488, 0.4371, 0.4040])[None, :, None, None].expand_as(sr), atol=1e-6)


def test_training_step_gradients_and_queue():
    "The model and its MoCo objective in one forward (blindsr.methods.ContrastiveSR): gradients, queue."
    torch.manual_seed(0)
    m = BlindSR(scale=2, **SMALL).train()
    net = ContrastiveSR(m, MoCo(m.encoder, K=16))
    lr_q, lr_k = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    sr, loss_c, acc = net(lr_q, lr_k)
    assert sr.shape == (4, 3, 32, 32) and net.objective.queue.K == 16 and 0 <= acc <= 1
    loss = F.l1_loss(sr, torch.rand_like(sr)) + loss_c
    loss.backward()
    assert all(p.grad is not None for p in m.sr_net.parameters())
    assert all(p.grad is not None for p in m.encoder.parameters())
    assert all(p.grad is None for p in net.objective.encoder_k.parameters())
    assert int(net.objective.queue.ptr) == 4


def test_api_errors():
    m = BlindSR(scale=2, **SMALL)
    with pytest.raises(ValueError, match=r'needs \(im_q, im_k\)'): MoCo(m.encoder, K=8)(m.encoder, torch.rand(1, 3, 8, 8), None)
    with pytest.raises(ValueError, match=r'lr must be a \(B,3,h,w\)'): m.eval()(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match=r'lr must be a \(B,3,h,w\)'): m.eval()(torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match=r'lr must be a \(B,3,h,w\)'): m.train()(torch.rand(1, 3, 3, 8, 8))
    with pytest.raises(ValueError, match=r'fea must be \(1, 32\)'): m.sr_net(torch.rand(1, 3, 8, 8), torch.rand(1, 64))
    with pytest.raises(ValueError, match='n_feats must be a positive int'): DASR(n_feats=0)
    with pytest.raises(ValueError, match='width must be a positive int'): DegradationEncoder(width=0)


def test_representation_and_eval_use_the_encoder():
    m = BlindSR(scale=2, **SMALL).eval()
    lr = torch.rand(2, 3, 12, 12)
    with torch.no_grad():
        fea = m.representation(lr)
        assert fea.shape == (2, 32)
        torch.testing.assert_close(m(lr), m.sr_net(lr, fea))


def test_channels_last_and_state_dict_round_trip():
    m = BlindSR(scale=2, **SMALL).eval()
    lr = torch.rand(2, 3, 10, 10)
    with torch.no_grad():
        ref = m(lr)
        torch.testing.assert_close(m(lr.contiguous(memory_format=torch.channels_last)), ref, rtol=1e-5, atol=1e-6)
    buf = io.BytesIO(); torch.save(m.state_dict(), buf); buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    assert {'encoder.features.0.weight', 'sr_net.sub_mean.weight', 'sr_net.add_mean.bias'} <= set(sd)
    assert {k.split('.')[0] for k in sd} == {'encoder', 'sr_net'}               # the training objective is not in the model
    m2 = BlindSR(scale=2, **SMALL).eval(); m2.load_state_dict(sd)
    with torch.no_grad(): assert torch.equal(m2(lr), ref)


def test_paper_sizes_from_registry():
    counts = {}
    for name in ('dasr_x2', 'dasr_x3', 'dasr_x4'):
        m = create_model(name)
        counts[name] = sum(p.numel() for p in m.sr_net.parameters()) + 24
        assert sum(p.numel() for p in m.encoder.parameters()) == 1_278_784
        moco = create_objective('infonce', m.encoder)                        # the paper's MoCo
        assert (moco.queue.K, moco.queue.dim, moco.m, moco.T) == (8192, 256, 0.999, 0.07)
    assert counts['dasr_x4'] == 4_690_523
    # x2: one 64->256 upsampling conv instead of two; x3: one 64->576 conv
    up = 64 * 256 * 9 + 256
    assert counts['dasr_x2'] == 4_690_523 - up
    assert counts['dasr_x3'] == 4_690_523 - 2 * up + 64 * 576 * 9 + 576


def test_cross_attention_fusion_blindsr():
    "fusion='xattn' replaces every DA conv by cross-attention whose query is the representation; it trains end to end."
    from blindsr.models import create_model
    from blindsr.models.dasr import DACrossAttention
    m = create_model('blindsr', scale=2, n_feats=16, n_groups=1, n_blocks=2, width=8, fusion='xattn')
    fusions = [mod for mod in m.modules() if isinstance(mod, DACrossAttention)]
    assert len(fusions) == 4 and not any(type(mod).__name__ == 'DAConv' for mod in m.modules())
    sr, loss_c, _ = ContrastiveSR(m, MoCo(m.encoder, K=8)).train()(torch.rand(2, 3, 12, 12), torch.rand(2, 3, 12, 12))
    assert sr.shape == (2, 3, 24, 24)
    (sr.mean() + loss_c).backward()
    assert all(f.to_q.weight.grad is not None and f.to_q.weight.grad.abs().sum() > 0 for f in fusions)
    assert m.encoder.features[0].weight.grad is not None      # the SR loss reaches the encoder through the queries
    with pytest.raises(ValueError, match="fusion must be one of"):
        create_model('blindsr', scale=2, n_feats=16, n_groups=1, n_blocks=1, width=8, fusion='film')


def test_timm_encoder_in_blindsr_trains_and_saves():
    "encoder_arch picks a timm backbone (here resnet18, stage 2: 128-d); MoCo, the SR net and the state dict follow."
    from blindsr.models import create_model
    m = create_model('blindsr', scale=2, n_feats=8, n_groups=1, n_blocks=1, encoder_arch='resnet18', encoder_stage=2)
    assert m.representation(torch.rand(2, 3, 24, 24)).shape == (2, 128)
    moco = MoCo(m.encoder, K=8)
    fea, logits, labels = moco.logits(m.encoder.train(), torch.rand(2, 3, 24, 24), torch.rand(2, 3, 24, 24))
    sr = m.sr_net(torch.rand(2, 3, 24, 24), fea)
    assert sr.shape == (2, 3, 48, 48) and logits.shape == (2, 9)
    (sr.mean() + F.cross_entropy(logits, labels)).backward()
    assert m.encoder.backbone.conv1.weight.grad is not None
    assert all(p.grad is None for p in moco.encoder_k.parameters())
    again = create_model('blindsr', scale=2, n_feats=8, n_groups=1, n_blocks=1, encoder_arch='resnet18')
    again.load_state_dict(m.state_dict())
    with pytest.raises(ValueError, match="cannot build 'resnet18' with stage 9"):
        create_model('blindsr', scale=2, n_feats=8, n_groups=1, n_blocks=1, encoder_arch='resnet18', encoder_stage=9)
