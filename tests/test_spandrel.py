"""Third-party weights through spandrel (blindsr.models.spandrel): networks built by spandrel's own architecture
classes at random initialisation, saved as the files one finds on the web, then loaded by `load_model` and run by
`blindsr upscale` with its tiling; and the errors for a file neither blindsr nor spandrel knows."""
import subprocess
import sys

import numpy as np
import pytest
import torch

import blindsr  # noqa: F401  (before spandrel: blindsr makes torchvision importable)
from blindsr.core import CheckpointError, read_image, write_image
from blindsr.models import INFERENCE_FORMAT, create_model, describe_checkpoint, load_model, model_from_checkpoint
from test_cli import run

spandrel = pytest.importorskip('spandrel')
from spandrel.architectures.Compact import Compact  # noqa: E402
from spandrel.architectures.ESRGAN import ESRGAN  # noqa: E402
from spandrel.architectures.SwinIR import SwinIR  # noqa: E402

def _esrgan():
    net = ESRGAN(in_nc=3, out_nc=3, num_filters=16, num_blocks=1, scale=4)
    with torch.no_grad(): net.model[-1].bias += 0.5   # outputs around mid-gray, not clamped to black (it adds no input back)
    return net


# name: (spandrel's network, how the file wraps its state dict, scale, the architecture's name in spandrel)
NETS = {
    'esrgan': (_esrgan, None, 4, 'ESRGAN'),
    'swinir': (lambda: SwinIR(upscale=2, embed_dim=12, depths=[1], num_heads=[1], window_size=8, img_size=16,
                              upsampler='pixelshuffledirect'), 'params_ema', 2, 'SwinIR'),
    'compact': (lambda: Compact(num_feat=8, num_conv=2, upscale=4), 'params', 4, 'RealESRGAN Compact'),
}


@pytest.fixture(scope='module')
def nets(tmp_path_factory):
    "name -> (the checkpoint file, spandrel's network it holds)."
    d = tmp_path_factory.mktemp('spandrel')
    out = {}
    for i, (name, (make, wrap, _, _)) in enumerate(NETS.items()):
        torch.manual_seed(i)
        net = make().eval()
        with torch.no_grad():   # random init gives near-constant outputs; larger weights make the comparisons real
            for p in net.parameters(): p.mul_(1.5)
        sd = net.state_dict()
        torch.save({wrap: sd} if wrap else sd, d / f'{name}.pth')
        out[name] = (d / f'{name}.pth', net)
    return out


def psnr(a, b):
    return 10 * torch.log10(1 / ((a - b) ** 2).mean()).item()


@pytest.mark.parametrize('name', list(NETS))
def test_load_model_computes_what_spandrel_computes(nets, name):
    path, ref = nets[name]
    _, _, scale, arch = NETS[name]
    m = load_model(path)
    assert type(m).__name__ == 'SpandrelNet' and m.scale == scale and not m.training
    assert describe_checkpoint(m.checkpoint_info) == f"loaded {path} (spandrel: {arch} x{scale} weights)"
    torch.manual_seed(9)
    x = torch.rand(1, 3, 20, 24)
    with torch.no_grad(): got, want = m(x), ref(x)
    assert got.shape == (1, 3, 20 * scale, 24 * scale)
    assert want.std() > 0.02, 'the reference output is nearly constant: the comparison would prove little'
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    own = spandrel.ModelLoader().load_from_file(path)   # spandrel's own loading and call (pads, clamps)
    torch.testing.assert_close(got.clamp(0, 1), own(x), atol=1e-5, rtol=0)


# tiles of 24 LR pixels, 8 of overlap and 8 of context; and for SwinIR also tiles of 20 / 6 / 5, whose crops would
# start off its 8-pixel window grid: upscale aligns crop starts to the network's `multiple_of` (with random weights a
# shifted window partition changes every output pixel of the window). bf16 (the compact net supports it) must change
# the output, a little.
@pytest.mark.parametrize('name,options,bar', [('esrgan', [], 40), ('swinir', ['--channels-last'], 40),
                                              ('swinir', ['--tile', 20, '--overlap', 6, '--pad', 5], 40),
                                              ('compact', ['--precision', 'bf16'], 30)])
def test_cli_upscale_tiles_a_spandrel_network(tmp_path, nets, name, options, bar):
    path, _ = nets[name]
    scale = NETS[name][2]
    torch.manual_seed(3)
    write_image(tmp_path / 'in.png', torch.rand(3, 40, 48))
    lr = read_image(tmp_path / 'in.png')[0]             # as the CLI reads it (8-bit)
    tiling = [] if '--tile' in options else ['--tile', 24, '--overlap', 8, '--pad', 8]
    r = run('upscale', tmp_path / 'in.png', '-o', tmp_path / 'out', '-c', path, *tiling, *options, '-q')
    assert r.returncode == 0, r.stderr
    sr = read_image(tmp_path / 'out' / 'in.png')[0]
    assert sr.shape == (3, 40 * scale, 48 * scale)
    with torch.no_grad(): whole = load_model(path)(lr[None])[0].clamp(0, 1)   # untiled, fp32
    whole = torch.from_numpy(np.round(whole.numpy() * 255) / 255).float()
    assert whole.std() > 0.02
    assert psnr(sr, whole) > bar, psnr(sr, whole)
    if 'bf16' in options: assert psnr(sr, whole) < 80, psnr(sr, whole)   # fp32 tiles of this net give the untiled output exactly


def test_a_file_neither_knows_says_both_were_tried(tmp_path):
    torch.manual_seed(0)
    torch.save({'encoder.conv.weight': torch.randn(8, 3, 3, 3), 'head.fc.bias': torch.randn(8)}, tmp_path / 'mystery.pth')
    write_image(tmp_path / 'in.png', torch.rand(3, 8, 8))
    r = run('upscale', tmp_path / 'in.png', '-o', tmp_path / 'out', '-c', tmp_path / 'mystery.pth')
    assert r.returncode == 2 and not (tmp_path / 'out').exists()
    for said in ('mystery.pth: not a checkpoint of a format blindsr reads (blindsr, official DASR, BasicSR, official PSRT)',
                 f'nor of an architecture spandrel {spandrel.__version__} recognises'):
        assert said in r.stderr, r.stderr
    with pytest.raises(CheckpointError, match=r'format blindsr reads \(blindsr, .*BasicSR.*\), nor of an architecture spandrel'):
        load_model(tmp_path / 'mystery.pth')


def test_without_spandrel_the_error_says_it_is_not_installed(tmp_path, nets, monkeypatch):
    import blindsr.models.spandrel as sp
    monkeypatch.setattr(sp, '_spandrel', lambda: None)
    with pytest.raises(CheckpointError, match=r"nor of an architecture spandrel recognises \(spandrel is not installed"):
        load_model(nets['esrgan'][0])
    with pytest.raises(CheckpointError, match=r"spandrel is not installed"):
        load_model(nets['esrgan'][0], format='spandrel')


def test_names_scale_and_network_kinds_are_checked(nets):
    path = nets['swinir'][0]   # its keys look like BasicSR's EDSR: that format gives way to spandrel
    assert load_model(path, model='SwinIR', scale=2).architecture == 'SwinIR'
    with pytest.raises(CheckpointError, match=r"holds a x2 model, but scale=4 was asked for"):
        load_model(path, scale=4)
    with pytest.raises(CheckpointError, match=r"does not match BasicSR's edsr.*as spandrel weights: holds SwinIR weights \(read by spandrel\), but 'edsr'"):
        load_model(path, model='edsr')
    from spandrel.architectures.LaMa import LaMa
    with pytest.raises(CheckpointError, match=r"lama.pth: holds spandrel's LaMa, a network for inpainting .*not a single-image network"):
        model_from_checkpoint(LaMa().state_dict(), 'lama.pth')


def test_blindsr_files_do_not_import_spandrel(tmp_path):
    spec = {'name': 'edsr_baseline', 'kwargs': {'scale': 2, 'n_feats': 8, 'n_blocks': 1}}
    torch.save({'format': INFERENCE_FORMAT, 'model_spec': spec, 'state_dict': create_model(spec['name'], **spec['kwargs']).state_dict()},
               tmp_path / 'own.pt')
    code = ("import sys, blindsr.models as m; m.list_models(); net = m.load_model(sys.argv[1]); "
            "print(type(net).__name__, 'spandrel' in sys.modules)")
    r = subprocess.run([sys.executable, '-c', code, str(tmp_path / 'own.pt')], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.split() == ['EDSR', 'False'], r.stdout + r.stderr
