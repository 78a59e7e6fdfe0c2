"""Parity of blindsr.models.classic with BasicSR (XPixelGroup/BasicSR, commit 8d56e3a; ../shared/golden/basicsr).

The golden files hold BasicSR's EDSR, RCAN and MSRResNet (x4, seed 0, eval mode) in BasicSR's own key names and their
outputs on one (1, 3, 32, 32) input in [0, 1]. Tolerance 1e-5 on the [0, 1] scale (the acceptance criterion)."""
import numpy as np
import pytest
import torch

from blindsr.core import CheckpointError
from blindsr.models import create_model
from blindsr.models.classic import EDSR, MSRResNet, RCAN, load_basicsr

TOL = 1e-5
PARAMS = {'edsr': 1_517_571, 'rcan': 707_475, 'msrresnet': 1_517_571}   # the golden README's counts


@pytest.fixture(scope='module')
def golden(golden_dir):
    d = golden_dir / 'basicsr'
    with np.load(d / 'basicsr_archs_io.npz') as f: io = dict(f)
    return d, io


@pytest.mark.parametrize('family', ['edsr', 'rcan', 'msrresnet'])
def test_outputs_match_basicsr(golden, family):
    d, io = golden
    model = load_basicsr(family, d / f'basicsr_{family}_x4_state.pt')
    assert not model.training and model.scale == 4
    assert sum(p.numel() for p in model.parameters()) == PARAMS[family]
    with torch.no_grad(): out = model(torch.from_numpy(io['x']))
    ref = torch.from_numpy(io[family])
    assert out.shape == ref.shape == (1, 3, 128, 128)
    err = (out - ref).abs().max().item()
    assert err <= TOL, f'{family}: max |ours - BasicSR| = {err:.3g} > {TOL}'


def test_sizes_are_read_from_the_weights(golden):
    d, _ = golden
    rcan = load_basicsr('rcan', d / 'basicsr_rcan_x4_state.pt')
    assert (len(rcan.body), len(rcan.body[0].residual_group)) == (2, 2)
    assert isinstance(load_basicsr('msrresnet_x4', d / 'basicsr_msrresnet_x4_state.pt'), MSRResNet)
    with pytest.raises(CheckpointError, match='scale=4 but scale=2'):
        load_basicsr('edsr_x2', d / 'basicsr_edsr_x4_state.pt')
    with pytest.raises(CheckpointError, match="does not match BasicSR's rcan"):
        load_basicsr('rcan', d / 'basicsr_edsr_x4_state.pt')


def test_basicsr_release_wrappers(tmp_path):
    "Released BasicSR files wrap the weights in 'params' / 'params_ema' (EMA preferred); DataParallel adds 'module.'."
    torch.manual_seed(0)
    a, b = EDSR(3, n_feats=16, n_blocks=2), EDSR(3, n_feats=16, n_blocks=2)
    torch.save({'params': a.state_dict(), 'params_ema': b.state_dict()}, tmp_path / 'w.pth')
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(load_basicsr('edsr', tmp_path / 'w.pth')(x), b.eval()(x))
        assert torch.equal(load_basicsr('edsr', tmp_path / 'w.pth', key='params')(x), a.eval()(x))
    torch.save({'module.' + k: v for k, v in a.state_dict().items()}, tmp_path / 'dp.pth')
    assert load_basicsr('edsr', tmp_path / 'dp.pth').scale == 3
    with pytest.raises(CheckpointError, match="no 'params_x' entry"):
        load_basicsr('edsr', tmp_path / 'w.pth', key='params_x')
    (tmp_path / 'empty.pth').write_bytes(b'')
    with pytest.raises(CheckpointError, match='empty.pth: not a readable'):
        load_basicsr('edsr', tmp_path / 'empty.pth')


@pytest.mark.parametrize('name', ['srresnet_x2', 'msrresnet_x3', 'edsr_baseline_x4', 'edsr_x2', 'rcan_x3'])
def test_registered_paper_configurations_run(name):
    "Paper-size networks of every family build and run at every registered scale (tiny input, one forward)."
    model = create_model(name).eval()
    s = int(name[-1])
    with torch.no_grad(): assert model(torch.rand(1, 3, 6, 7)).shape == (1, 3, 6 * s, 7 * s)


def test_paper_sizes():
    n = lambda m: sum(p.numel() for p in m.parameters())
    assert abs(n(create_model('edsr_x4')) / 1e6 - 43.1) < 0.1            # EDSR paper: 43M
    assert abs(n(create_model('rcan_x4')) / 1e6 - 15.6) < 0.1            # RCAN paper: ~16M
    assert abs(n(create_model('srresnet_x4')) / 1e6 - 1.55) < 0.05        # SRResNet: 1.5M
    assert isinstance(create_model('rcan'), RCAN)
