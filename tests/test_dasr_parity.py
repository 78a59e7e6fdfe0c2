"""Parity of blindsr.models.dasr with the official DASR code (LongguangWang/DASR, ../shared/golden/dasr).

The golden checkpoint is the official x4 BlindSR (random init, seed 0) in the release format (`model_600.pt`: key
encoder and queue removed); `dasr_official_x4_io.npz` holds the official model's outputs on a 48x48 LR crop.
Tolerance on the [0, 255] scale: 1e-4 (measured on this CPU with 1, 2 and 4 threads: sr 4.6e-5, fea 0, compress64
1.8e-7; float32 rounding of values up to ~160). Our API takes [0, 1]: the golden `lr` is divided by 255 and the SR
multiplied back (integer-valued LR, so lr / 255 * 255 is exact)."""
import numpy as np
import pytest
import torch

from blindsr.contrastive import MoCo, create_objective, official_moco_state
from blindsr.models import create_model
from blindsr.models.dasr import BlindSR, CheckpointError, load_official_dasr

TOL = 1e-4


@pytest.fixture(scope='module')
def golden(golden_dir):
    d = golden_dir / 'dasr'
    with np.load(d / 'dasr_official_x4_io.npz') as f: io = dict(f)
    return d / 'dasr_official_x4_state.pt', io


@pytest.fixture(scope='module')
def official(golden):
    return load_official_dasr(golden[0], scale=4)


def test_outputs_match_official(official, golden):
    _, io = golden
    lr = torch.from_numpy(io['lr'])
    assert lr.shape == (1, 3, 48, 48) and torch.equal(lr / 255 * 255, lr)
    assert not official.training
    with torch.no_grad():
        sr = official(lr / 255) * 255
        fea = official.representation(lr / 255)
        fea2, proj = official.encoder(lr / 255)
        comp = official.sr_net.compress(fea)
    for name, ours in [('sr', sr), ('fea', fea), ('compress64', comp), ('mlp_out', proj)]:
        ref = torch.from_numpy(io[name])
        assert ours.shape == ref.shape, name
        err = (ours - ref).abs().max().item()
        assert err <= TOL, f'{name}: max |ours - official| = {err:.3g} > {TOL}'
    assert torch.equal(fea, fea2)


def test_parameter_counts(official):
    sr_params = sum(p.numel() for p in official.sr_net.parameters())
    mean_shift = sum(b.numel() for n, b in official.sr_net.named_buffers() if n.split('.')[0] in ('sub_mean', 'add_mean'))
    assert mean_shift == 24
    assert sr_params + mean_shift == 4_690_523
    assert sum(p.numel() for p in official.encoder.parameters()) == 1_278_784
    assert sum(p.numel() for p in create_model('dasr_encoder').parameters()) == 1_278_784
    # trainable: everything but the mean-shift buffers (the key encoder is the training objective's, not the model's)
    trainable = sum(p.numel() for p in official.parameters() if p.requires_grad)
    assert trainable == 4_690_499 + 1_278_784


def test_key_encoder_starts_as_query_encoder(official):
    q, k = official.encoder.state_dict(), create_objective('infonce', official.encoder).encoder_k.state_dict()
    assert q.keys() == k.keys() and all(torch.equal(q[n], k[n]) for n in q)


def test_scale_from_file_and_mismatch(golden):
    path, _ = golden
    assert load_official_dasr(path, scale=None).scale == 4
    with pytest.raises(CheckpointError, match=r'dasr_official_x4_state\.pt: holds a x4 DASR, but scale=2'):
        load_official_dasr(path, scale=2)


def test_full_training_state_with_key_encoder_and_queue(golden, tmp_path):
    "A non-release state dict (E.encoder_k.*, E.queue (dim, K), E.queue_ptr (1,)): the model loads, and MoCo continues from it, queue transposed."
    path, _ = golden
    sd = torch.load(path, weights_only=True)
    sd.update({k.replace('encoder_q', 'encoder_k'): v + 1 for k, v in sd.items() if k.startswith('E.encoder_q.')})
    queue = torch.nn.functional.normalize(torch.randn(256, 8192), dim=0)
    sd['E.queue'], sd['E.queue_ptr'] = queue, torch.tensor([96])
    p = tmp_path / 'full_state.pt'
    torch.save(sd, p)
    m = load_official_dasr(p)
    moco = MoCo(m.encoder)
    moco.load_state_dict(official_moco_state(p))
    assert torch.equal(moco.queue.keys, queue.t()) and int(moco.queue.ptr) == 96
    assert torch.equal(moco.encoder_k.features[0].weight, sd['E.encoder_k.E.0.weight'])
    assert torch.equal(m.encoder.features[0].weight, sd['E.encoder_q.E.0.weight'])


@pytest.mark.parametrize('content', [b'', b'garbage, not a zip or pickle', b'PK\x03\x04truncated zip'])
def test_corrupt_file_names_it(tmp_path, content):
    p = tmp_path / 'model_600.pt'
    p.write_bytes(content)
    with pytest.raises(CheckpointError, match=r'model_600\.pt: not a readable PyTorch checkpoint'):
        load_official_dasr(p)


def test_truncated_checkpoint_names_it(golden, tmp_path):
    path, _ = golden
    p = tmp_path / 'cut.pt'
    p.write_bytes(path.read_bytes()[:1_000_000])
    with pytest.raises(CheckpointError, match=r'cut\.pt'):
        load_official_dasr(p)


def test_wrong_contents_name_the_file(golden, tmp_path):
    path, _ = golden
    sd = torch.load(path, weights_only=True)
    p = tmp_path / 'wrong.pt'
    # not a dict of tensors
    torch.save([1, 2, 3], p)
    with pytest.raises(CheckpointError, match=r'wrong\.pt: expected a state dict'):
        load_official_dasr(p)
    # a key missing, a key unknown
    bad = {k: v for k, v in sd.items() if k != 'G.head.0.weight'}
    bad['G.extra.weight'] = torch.zeros(1)
    torch.save(bad, p)
    with pytest.raises(CheckpointError, match=r"wrong\.pt: .*1 missing keys \['sr_net\.head\.0\.weight'\].*1 unexpected keys \['sr_net\.extra\.weight'\]"):
        load_official_dasr(p)
    # wrong shape (e.g. a smaller model)
    bad = dict(sd); bad['G.head.0.weight'] = torch.zeros(32, 3, 3, 3)
    torch.save(bad, p)
    with pytest.raises(CheckpointError, match=r'wrong\.pt: 1 tensors have the wrong shape: \[.sr_net\.head\.0\.weight'):
        load_official_dasr(p)
    # some other network's weights
    torch.save({'conv_first.weight': torch.zeros(64, 3, 3, 3)}, p)
    with pytest.raises(CheckpointError, match=r'wrong\.pt: no upsampler weights'):
        load_official_dasr(p)
    with pytest.raises(FileNotFoundError, match=r'missing\.pt: no such checkpoint file'):
        load_official_dasr(tmp_path / 'missing.pt')


def test_dataparallel_prefix_is_stripped(golden, tmp_path):
    path, io = golden
    sd = torch.load(path, weights_only=True)
    p = tmp_path / 'dp.pt'
    torch.save({'module.' + k: v for k, v in sd.items()}, p)
    assert isinstance(load_official_dasr(p), BlindSR)
