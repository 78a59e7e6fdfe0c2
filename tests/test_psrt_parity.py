"""Parity of blindsr.models.psrt with the official PSRT (shangqideng/PSRT, commit 9c2be90; ../shared/golden/psrt).

The official CAVE x4 weights (embed dim 32) run on the real balloons scene (256 x 256, 31 bands) must reproduce the
official output to 1e-5 (measured here: 3.3e-7)."""
import numpy as np
import pytest
import torch

from blindsr.core import CheckpointError
from blindsr.models import create_model
from blindsr.models.psrt import PSRT, load_official_psrt, patch_shuffle

TOL = 1e-5


@pytest.fixture(scope='module')
def golden(golden_dir):
    d = golden_dir / 'psrt'
    with np.load(d / 'psrt_cave_x4_balloons.npz') as f: io = {k: f[k] for k in ('rgb', 'hsi_up', 'out')}
    return d, io


def _nchw(a): return torch.from_numpy(a).permute(2, 0, 1)[None].float()


def test_official_weights_reproduce_the_official_output(golden):
    d, io = golden
    model = load_official_psrt(d / 'psrt_cave_x4_state.pt')
    assert not model.training and sum(p.numel() for p in model.parameters()) == 247_455
    with torch.no_grad(): out = model(_nchw(io['rgb']), _nchw(io['hsi_up']))[0]
    err = (out - torch.from_numpy(io['out'])).abs().max().item()
    assert err <= TOL, f'max |ours - official| = {err:.3g} > {TOL}'


def test_any_size_pads_inside_and_multiples_of_8_are_untouched(golden):
    d, io = golden
    model = load_official_psrt(d / 'psrt_cave_x4_state.pt')
    rgb, up = _nchw(io['rgb'])[..., :61, :83], _nchw(io['hsi_up'])[..., :61, :83]
    with torch.no_grad():
        out = model(rgb, up)
        assert out.shape == (1, 31, 61, 83) and torch.isfinite(out).all()
        # a size that is a multiple of 8 is not padded: same as the network body applied directly
        rgb8, up8 = rgb[..., :56, :80], up[..., :56, :80]
        f = model.head(torch.cat([up8, rgb8], 1)).permute(0, 2, 3, 1)
        for p in model.pyramids: f = p(f)
        assert torch.equal(model(rgb8, up8), model.tail(f.permute(0, 3, 1, 2)) + up8)


def test_noshuffle_differs_only_by_the_shuffle(golden):
    d, io = golden
    a = load_official_psrt(d / 'psrt_cave_x4_state.pt')
    b = create_model('psrt_noshuffle').eval()
    b.load_state_dict(a.state_dict())
    x, y = _nchw(io['rgb'])[..., :32, :32], _nchw(io['hsi_up'])[..., :32, :32]
    with torch.no_grad(): assert not torch.allclose(a(x, y), b(x, y))
    z = torch.randn(1, 16, 16, 2)
    assert torch.equal(patch_shuffle(patch_shuffle(z, 4), 4, inverse=True), z)


def test_bad_checkpoints_name_the_file(tmp_path, golden):
    with pytest.raises(FileNotFoundError, match='nope.pt'):
        load_official_psrt(tmp_path / 'nope.pt')
    torch.save({'x.weight': torch.zeros(1)}, tmp_path / 'other.pt')
    with pytest.raises(CheckpointError, match='other.pt: no .w.conv.weight.'):
        load_official_psrt(tmp_path / 'other.pt')
    torch.save(PSRT(embed_dim=16, heads=4).state_dict(), tmp_path / 'ours.pt')   # blindsr's names, not the official ones
    with pytest.raises(CheckpointError, match="ours.pt: no 'w.conv.weight'"):
        load_official_psrt(tmp_path / 'ours.pt')
    sd = torch.load(golden[0] / 'psrt_cave_x4_state.pt', weights_only=True)
    sd.pop('model.w.layers.1.layers.2.WA3.mlp.fc2.bias')
    torch.save(sd, tmp_path / 'cut.pt')
    with pytest.raises(CheckpointError, match=r'cut.pt: does not match PSRT.*1 missing'):
        load_official_psrt(tmp_path / 'cut.pt')
