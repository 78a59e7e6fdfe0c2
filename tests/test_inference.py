"""Tiled inference (blindsr.inference.upscale): agreement with full-image inference, one shared DASR representation."""
import pytest
import torch
from skimage import data as skdata

from blindsr.inference import auto_tile, upscale
from blindsr.metrics import psnr
from blindsr.models import create_model


def _photo(size=256):
    return torch.from_numpy(skdata.astronaut()[100:100 + size, 100:100 + size].copy()).permute(2, 0, 1).float() / 255


def _psnr(a, ref): return psnr(a, ref, data_range=(ref.max() - ref.min()).item()).item()   # peak: the reference's range


@pytest.mark.parametrize('name', ['dasr_x4', 'edsr_baseline_x4', 'msrresnet_x3', 'srresnet_x2'])
def test_tiled_matches_untiled_above_50_db(name):
    "The acceptance criterion: 256 x 256 input, 64-pixel tiles, PSNR(tiled, untiled) >= 50 dB."
    torch.manual_seed(0)
    net = create_model(name).eval()
    lr = _photo()
    with torch.no_grad(): full = net(lr[None])[0]
    tiled = upscale(net, lr, tile=64)
    assert tiled.shape == full.shape
    assert _psnr(tiled, full) >= 50
    assert _psnr(upscale(net, lr, tile=64, blend=False), full) < 50   # naive tiles do not


def test_dasr_tiles_share_one_representation():
    torch.manual_seed(0)
    net = create_model('blindsr', scale=2, n_feats=16, n_groups=1, n_blocks=1).eval()
    seen = []
    orig = net.sr_net.forward
    net.sr_net.forward = lambda x, rep: (seen.append(rep.clone()), orig(x, rep))[1]
    upscale(net, _photo(96), tile=32, overlap=8, pad=8)
    assert len(seen) == 16 and all(torch.equal(r, seen[0]) for r in seen)   # 4 x 4 tiles, one representation


def test_precisions_channels_last_and_errors():
    torch.manual_seed(0)
    net = create_model('edsr_baseline_x2', n_blocks=2).eval()
    lr = _photo(64)
    ref = upscale(net, lr, tile=32)
    assert _psnr(upscale(net, lr, tile=32, channels_last=True), ref) > 60
    assert _psnr(upscale(net, lr, tile=32, precision='bf16'), ref) > 30          # bf16: a few bits of mantissa
    with pytest.raises(ValueError, match="needs a CUDA device"):
        upscale(net, lr, precision='fp16', device='cpu')
    with pytest.raises(ValueError, match='fusion network'):
        upscale(create_model('psrt', embed_dim=8, heads=2), lr)
    assert auto_tile(net, memory_budget=64 << 20) < auto_tile(net, memory_budget=1 << 30)


def test_rcan_channel_attention_is_global_so_tiles_differ_more():
    "RCAN's channel attention pools over the whole input, so a tile's statistics are not the image's: a known limit."
    torch.manual_seed(0)
    net = create_model('rcan_x2', n_groups=2, n_blocks=4).eval()
    lr = _photo()
    with torch.no_grad(): full = net(lr[None])[0]
    small, large = _psnr(upscale(net, lr, tile=64), full), _psnr(upscale(net, lr, tile=128), full)
    assert 35 < small < large                       # larger tiles see statistics closer to the whole image's
