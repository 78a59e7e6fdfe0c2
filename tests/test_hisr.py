"""HISR end to end: the hsi metrics and simulation against the golden data, and train_hisr.ipynb through papermill."""
import json

import numpy as np
import pytest
import torch

from blindsr.hsi import FusionPatches, fusion_pairs, hsi_metrics, read_cave_scene, simulate_fusion_inputs
from blindsr.methods import FusionMethod
from blindsr.models import create_model, load_model
from blindsr.train import TrainConfig, Trainer
from test_experiments import check_parameters, run_experiment


@pytest.fixture(scope='module')
def golden(golden_dir):
    d = golden_dir / 'psrt'
    with np.load(d / 'psrt_cave_x4_balloons.npz') as f: g = {k: f[k] for k in f.files}
    gt = torch.from_numpy(np.load(d / 'balloons_ms.npy').astype(np.float64) / 65535)
    return g, gt


def test_simulation_reproduces_the_official_inputs(golden):
    g, gt = golden
    sim = simulate_fusion_inputs(gt.permute(2, 0, 1))
    for k in ('rgb', 'lrhsi', 'hsi_up'):
        err = np.abs(sim[k].permute(1, 2, 0).float().numpy() - g[k]).max()
        assert err < 1e-6, (k, err)


@pytest.mark.parametrize('convention', ['psrt', 'udl'])
def test_metrics_match_the_official_evaluations(golden, convention):
    "SAM, ERGAS, PSNR (+ RMSE / SSIM) of the official output and of hsi_up, to 1e-4 relative (measured: <= 6e-6)."
    g, gt = golden
    gt32 = gt.float().permute(2, 0, 1).contiguous()
    for name, x in (('out', torch.from_numpy(g['out'])), ('up', torch.from_numpy(g['hsi_up']).permute(2, 0, 1).contiguous())):
        m = hsi_metrics(x, gt32, 4, convention)
        assert set(m) == ({'sam', 'ergas', 'psnr', 'rmse'} if convention == 'psrt' else {'sam', 'ergas', 'psnr', 'ssim'})
        for k, v in m.items():
            ref = float(g[f'{name}_{convention}_{k}'])
            assert abs(v - ref) <= 1e-4 * abs(ref), (name, k, v, ref)


def test_paired_training_keeps_the_best_epoch_by_a_lower_is_better_metric(tmp_path, golden):
    "The trainer on fusion patches: AdamW, clipping, SAM (lower is better) picks best.pt, whose epoch is reported."
    _, gt = golden
    cube = gt.permute(2, 0, 1)[:, :64, :64].float()
    val = fusion_pairs({'v': gt.permute(2, 0, 1)[:, 64:96, :32].float()})
    cfg = TrainConfig(epochs_encoder=0, epochs_joint=3, steps_per_epoch=2, batch_size=2, lr_joint=1e-3, optimizer='adamw',
                      weight_decay=1e-4, grad_clip=10.0, progress=False)
    scores = []
    def sam_fn(out, target):
        v = hsi_metrics(out, target, 4, 'psrt')['sam'].item(); scores.append(v); return v
    torch.manual_seed(0)
    t = Trainer(FusionMethod(create_model('psrt', embed_dim=8, heads=2)), FusionPatches({'c': cube}, 32), cfg, tmp_path,
                val_pairs=val, val_metric=sam_fn, val_higher_is_better=False)
    assert isinstance(t.optimizer, torch.optim.AdamW)
    out = t.fit()
    assert len(scores) == 3 and out['best_score'] == min(scores) and out['best_epoch'] == scores.index(min(scores)) + 1
    m = load_model(tmp_path / 'checkpoints' / 'best.pt')
    assert m.checkpoint_info['epoch'] == out['best_epoch']


TINY_HISR = dict(model_kwargs={'embed_dim': 8, 'heads': 2}, patch_size=32, batch_size=2, steps=4, steps_per_epoch=2,
                 progress=False)


def test_train_hisr_runs_on_the_golden_scene(tmp_path, golden_dir):
    run, figs = tmp_path / 'run', tmp_path / 'figs'
    out = run_experiment('train_hisr', tmp_path, out_dir=str(run), figures_dir=str(figs), **TINY_HISR)
    m = json.loads((run / 'metrics.json').read_text())
    assert m['steps'] == 4 and m['evaluated_epoch'] == m['best_epoch'] in (1, 2)
    conv = {(r['convention'], r['method']) for r in m['summary']}
    assert conv == {(c, x) for c in ('psrt', 'udl') for x in ('bicubic (hsi_up)', 'psrt')}
    table = (run / 'table.md').read_text()
    assert f"evaluated checkpoint: epoch {m['best_epoch']}" in table and 'balloons_bottom' in table
    assert (figs / 'train_hisr_psrt.png').stat().st_size > 20_000
    assert f"weights of epoch {m['best_epoch']}" in out.read_text()   # the printed line naming the evaluated epoch


@pytest.mark.parametrize('name,value,msg', [('model', 'edsr_x4', 'is not a fusion network'),
                                            ('val_metric', 'ssim', "must be 'psnr', 'sam' or 'ergas'"),
                                            ('patch_size', 36, 'must be a multiple of 8')])
def test_train_hisr_rejects_bad_parameters(tmp_path, name, value, msg):
    with pytest.raises(ValueError, match=msg):
        extra = {'model_kwargs': {}} if name == 'model' else {}
        check_parameters('train_hisr', out_dir=str(tmp_path / 'run'), **{**TINY_HISR, name: value, **extra})
    assert not (tmp_path / 'run').exists()


def test_cave_readers_mat_v5_v73_npy_and_udl_h5(tmp_path):
    import h5py
    import scipy.io
    from blindsr.hsi import find_cave_scenes, load_udl_h5
    cube = (np.random.default_rng(0).random((16, 20, 31)) * 65535).astype(np.uint16)      # HWC, as .mat files hold it
    ref = torch.from_numpy(cube.astype(np.float64) / 65535).permute(2, 0, 1).float()
    scipy.io.savemat(tmp_path / 'clay.mat', {'b': cube})
    with h5py.File(tmp_path / 'cd.mat', 'w') as f: f['msi'] = cube.transpose(2, 1, 0)     # v7.3: HDF5, column-major
    np.save(tmp_path / 'hairs.npy', cube.transpose(2, 0, 1))                             # CHW works too
    assert sorted(find_cave_scenes(tmp_path)) == ['cd', 'clay', 'hairs']
    for name in ('clay.mat', 'cd.mat', 'hairs.npy'):
        assert torch.allclose(read_cave_scene(tmp_path / name), ref, atol=1e-7), name
    scipy.io.savemat(tmp_path / 'bad.mat', {'b': cube.astype(np.float64)})
    with pytest.raises(ValueError, match=r'bad.mat:b: float values up to .* expected \[0, 1\]'):
        read_cave_scene(tmp_path / 'bad.mat')
    with h5py.File(tmp_path / 'train_cave.h5', 'w') as f:
        for k, c in (('GT', 31), ('HSI_up', 31), ('RGB', 3)): f[k] = np.random.rand(2, c, 8, 8).astype(np.float32)
        f['LRHSI'] = np.random.rand(2, 31, 2, 2).astype(np.float32)
    d = load_udl_h5(tmp_path / 'train_cave.h5')
    assert {k: tuple(v.shape) for k, v in d.items()} == {'GT': (2, 31, 8, 8), 'HSI_up': (2, 31, 8, 8), 'LRHSI': (2, 31, 2, 2), 'RGB': (2, 3, 8, 8)}
    with h5py.File(tmp_path / 'other.h5', 'w') as f: f['x'] = np.zeros(3)
    with pytest.raises(KeyError, match=r"other.h5: no dataset \['GT', 'HSI_up', 'RGB'\]"):
        load_udl_h5(tmp_path / 'other.h5')
