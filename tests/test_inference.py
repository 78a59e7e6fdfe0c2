"""Tiled inference (blindsr.inference.upscale): agreement with full-image inference, one shared DASR representation,
tile plans without redundancy, peak memory within the budget at every precision."""
import json
import subprocess
import sys
import textwrap

import pytest
import torch
from skimage import data as skdata

from blindsr.inference import WORKSPACE_BYTES, auto_plan, plan_tiles, upscale
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
    assert auto_plan(net, 512, 512, 200 << 20).n_tiles > auto_plan(net, 512, 512, 1 << 30).n_tiles


def test_rcan_channel_attention_is_global_so_tiles_differ_more():
    "RCAN's channel attention pools over the whole input, so a tile's statistics are not the image's: a known limit."
    torch.manual_seed(0)
    net = create_model('rcan_x2', n_groups=2, n_blocks=4).eval()
    lr = _photo()
    with torch.no_grad(): full = net(lr[None])[0]
    small, large = _psnr(upscale(net, lr, tile=64), full), _psnr(upscale(net, lr, tile=128), full)
    assert 35 < small < large                       # larger tiles see statistics closer to the whole image's


def test_default_plans_of_paper_dasr_waste_at_most_a_quarter():
    "Issue 20: processed / image pixels <= 1.25 at 512², 1024² and 1920x1080 under the default budget; 1.0 when one tile fits."
    net = create_model('dasr_x4').eval()
    for h, w in [(512, 512), (1024, 1024), (1080, 1920)]:
        plan = auto_plan(net, h, w)
        assert plan.redundancy <= 1.25, plan
    assert auto_plan(net, 300, 300).redundancy == 1.0
    for h, w in [(97, 131), (640, 480), (1080, 1920)]:        # the plan covers the image exactly, crops inside it
        p = plan_tiles(h, w, max_area=20_000, align=8)
        assert sum(p.rows[-1]) == h and sum(p.cols[-1]) == w and p.largest_crop <= 20_000
        assert all(0 <= b < e <= h for b, e in p.row_crops) and all(0 <= b < e <= w for b, e in p.col_crops)


def test_non_square_auto_plan_matches_untiled():
    torch.manual_seed(0)
    net = create_model('dasr_x4', n_feats=16, n_groups=1, n_blocks=2).eval()
    lr = _photo(200)[:, :, :136]
    with torch.no_grad(): full = net(lr[None])[0]
    budget = 4 * 3 * 200 * 136 * 17 + WORKSPACE_BYTES + (4 << 20)
    plan = auto_plan(net, 200, 136, budget)
    assert plan.n_tiles > 1, plan
    assert _psnr(upscale(net, lr, memory_budget=budget), full) >= 50


_RSS_PROBE = textwrap.dedent('''
    import json, re, sys, torch
    from blindsr.inference import upscale
    from blindsr.models import create_model
    precision, cl, budget = sys.argv[1], sys.argv[2] == '1', float(sys.argv[3])
    def status(key): return int(re.search(key + r':\\s+(\\d+)', open('/proc/self/status').read()).group(1)) * 1024
    torch.manual_seed(0)
    net = create_model('dasr_x4', n_groups=1, n_blocks=2).eval()   # paper-size upsampler (the peak), a shorter body
    img = torch.rand(3, 256, 256)
    upscale(net, img[:, :40, :40], precision=precision, channels_last=cl)    # warm-up: kernels, caches
    base = status('VmRSS')
    out = upscale(net, img, precision=precision, channels_last=cl, memory_budget=budget)
    print(json.dumps({'grown': status('VmHWM') - base, 'shape': list(out.shape)}))
''')


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='reads peak RSS from /proc/self/status (Linux)')
@pytest.mark.parametrize('precision,channels_last', [('fp32', False), ('bf16', False), ('bf16', True)])
def test_peak_memory_stays_within_the_budget(precision, channels_last):
    "Issue 20: the budget bounds what the upscale adds to the process's peak RSS at every precision (DASR x4, 64 channels)."
    budget = 300 << 20
    r = subprocess.run([sys.executable, '-c', _RSS_PROBE, precision, str(int(channels_last)), str(budget)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res['shape'] == [3, 1024, 1024]
    assert res['grown'] <= budget, f"{precision}{' + channels-last' if channels_last else ''}: grew {res['grown'] / 2 ** 20:.0f} MB over a {budget / 2 ** 20:.0f} MB budget"
