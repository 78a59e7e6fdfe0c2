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


def test_train_hisr_selects_on_validation_and_reads_the_test_once(tmp_path, golden_dir):
    "The leak test: best.pt is chosen by its score on the validation rows (recomputed here), never on the test rows."
    from blindsr.evaluate import validation_score
    from blindsr.hsi import check_split, region_data
    run, figs = tmp_path / 'run', tmp_path / 'figs'
    out = run_experiment('train_hisr', tmp_path, out_dir=str(run), figures_dir=str(figs), **TINY_HISR)
    m = json.loads((run / 'metrics.json').read_text())
    split = m['split']
    assert split['kind'] == 'regions' and split['train'] == [0, 128] and split['val'] == [144, 184] and split['test'] == [200, 256]
    check_split(split)                                        # disjoint, guard bands of 16 rows
    assert m['steps'] == 4 and m['evaluated_epoch'] == m['best_epoch'] in (1, 2) and m['evaluated_step'] == 2 * m['best_epoch']
    cube = read_cave_scene(golden_dir / 'psrt' / 'balloons_ms.npy')
    _, val, test = region_data(cube, {**split, 'train': tuple(split['train']), 'val': tuple(split['val']), 'test': tuple(split['test'])})
    best = load_model(run / 'checkpoints' / 'best.pt')
    psnr_fn = lambda o, t: hsi_metrics(o, t, 4, 'psrt')['psnr'].mean().item()
    assert validation_score(best, val, psnr_fn) == pytest.approx(m['best_val_score'], abs=1e-4)   # selected on validation ...
    assert validation_score(best, test, psnr_fn) != pytest.approx(m['best_val_score'], abs=1e-2)  # ... not on the test rows
    log = (run / 'log.csv').read_text().splitlines()
    vals = [float(r.split(',')[6]) for r in log[1:] if ',val,' in r]
    assert max(vals) == pytest.approx(m['best_val_score'], abs=1e-3)   # log.csv keeps 4 decimals
    trained = [r for r in m['summary'] if r['method'] == 'trained']
    assert {r['convention'] for r in trained} == {'psrt', 'udl'}
    table = (run / 'table.md').read_text()
    assert f"Evaluated checkpoint: epoch {m['best_epoch']} (step {m['evaluated_step']})" in table and 'the test part read once' in table
    assert 'under-trained' in table                           # 4 steps from random weights: worse than bicubic, and said so
    assert (figs / 'train_hisr_psrt.png').stat().st_size > 20_000
    assert f"weights of epoch {m['best_epoch']}" in out.read_text()   # the printed line naming the evaluated epoch


def test_a_configuration_selecting_on_the_test_data_is_refused(tmp_path):
    from blindsr.hsi import CAVE_SCENES, SplitLeakError, cave_split, check_split, region_split
    with pytest.raises(ValueError, match='validation would select on the test data'):
        check_parameters('train_hisr', out_dir=str(tmp_path / 'run'), **{**TINY_HISR, 'val_scenes': ['balloons']})
    with pytest.raises(ValueError, match='validation would select on the test data'):
        check_parameters('train_hisr', out_dir=str(tmp_path / 'run'), **{**TINY_HISR, 'test_scenes': ['beads'], 'val_scenes': ['beads', 'cd']})
    assert not (tmp_path / 'run').exists()
    with pytest.raises(SplitLeakError, match='in both val and test'):
        cave_split(CAVE_SCENES, val=['cd'])
    sp = region_split(256, 128, 40, 16)
    for bad in ({**sp, 'val': (192, 232)}, {**sp, 'val': (120, 160)}, {**sp, 'guard': 24}):
        with pytest.raises(SplitLeakError):
            check_split(bad)
    with pytest.raises(SplitLeakError, match='no val part'):
        check_split({'kind': 'scenes', 'train': ['a'], 'val': [], 'test': ['b']})


def test_train_hisr_on_a_cave_folder_keeps_validation_out_of_the_test(tmp_path, golden_dir):
    "The CAVE protocol on a folder of four tiny scenes: validation from the training scenes, the test scenes named."
    cube = np.load(golden_dir / 'psrt' / 'balloons_ms.npy')
    d = tmp_path / 'cave'
    d.mkdir()
    for i, n in enumerate(('balloons', 'beads', 'cd', 'face', 'watercolors')):
        np.save(d / f'{n}.npy', cube[48 * i:48 * i + 64, :64])
    run = tmp_path / 'run'
    run_experiment('train_hisr', tmp_path, data_dir=str(d), test_scenes=['balloons', 'cd'], out_dir=str(run),
                   **{**TINY_HISR, 'steps': 2, 'steps_per_epoch': 1})
    m = json.loads((run / 'metrics.json').read_text())
    assert m['split'] == {'kind': 'scenes', 'train': ['beads'], 'val': ['face', 'watercolors'], 'test': ['balloons', 'cd']}
    assert {r['scene'] for r in m['per_scene']} == {'balloons', 'cd'}   # the test scenes, and only they, are scored


def test_fine_tuning_a_ka_variant_starts_at_the_official_model(tmp_path, golden_dir):
    "init = the official weights, psrt_kav11 with the shuffle: the 'starting weights' row is the official PSRT on the test rows."
    w = golden_dir / 'psrt' / 'psrt_cave_x4_state.pt'
    run = tmp_path / 'run'
    run_experiment('train_hisr', tmp_path, model='psrt_kav11', model_kwargs={'shuffle': True}, init=str(w), out_dir=str(run),
                   **{k: v for k, v in TINY_HISR.items() if k != 'model_kwargs'})
    m = json.loads((run / 'metrics.json').read_text())
    S = {(r['convention'], r['method']): r for r in m['summary']}
    from blindsr.hsi import region_data, region_split
    _, _, test = region_data(read_cave_scene(golden_dir / 'psrt' / 'balloons_ms.npy'), region_split(256, 128, 40, 16))
    name, gt, (rgb, up) = test[0]
    with torch.no_grad(): official = load_model(w)(rgb[None], up[None])[0]
    assert S['psrt', 'start']['psnr'] == pytest.approx(hsi_metrics(official, gt, 4, 'psrt')['psnr'], abs=1e-5)
    assert S['psrt', 'start']['psnr'] > S['psrt', 'bicubic']['psnr'] + 10
    assert 'starting weights (init)' in (run / 'table.md').read_text()


def test_hisr_finetune_report_on_a_tiny_grid(tmp_path, golden_dir):
    "Two variants x two seeds from the official weights: the table, the paired intervals and the verdict words."
    budget = dict(steps=2, steps_per_epoch=1, batch_size=2, patch_size=32, lr=1e-4, weight_decay=1e-4, grad_clip=10.0,
                  val_metric='psnr', precision='fp32', progress=False)
    run_experiment('hisr_finetune', tmp_path, variants={'psrt': {'model': 'psrt'}, 'kav11': {'model': 'psrt_kav11', 'model_kwargs': {'shuffle': True}}},
                   seeds=[0, 1], comparisons=[['kav11', 'psrt'], ['psrt', 'official']], budget=budget, out_dir=str(tmp_path / 'grid'))
    md = (tmp_path / 'grid' / 'hisr_finetune.md').read_text()
    assert 'Budget: every variant 2 steps of batch 2' in md and 'seeds [0, 1], paired' in md
    assert '| official PSRT weights (step 0 of every shuffle variant)' in md and '| bicubic (hsi_up): floor' in md
    rows = [l for l in md.splitlines() if l.startswith('| kav11 - psrt') or l.startswith('| psrt - official')]
    assert len(rows) == 2 and all(any(v in r for v in ('better', 'worse', 'undecided')) for r in rows)
    assert 'What one scene can show' in md and (tmp_path / 'grid' / 'hisr_finetune.png').stat().st_size > 10_000
    runs = sorted(p.parent.name + '/' + p.parent.parent.name for p in (tmp_path / 'grid').glob('*/seed*/metrics.json'))
    assert len(runs) == 4


def test_hisr_finetune_without_the_official_weights_says_so(tmp_path):
    "init='random' (what a machine without the official weights gets): the report says in bold that it is not fine-tuning."
    budget = dict(steps=1, steps_per_epoch=1, batch_size=2, patch_size=32, lr=1e-4, weight_decay=1e-4, grad_clip=10.0,
                  val_metric='psnr', precision='fp32', progress=False)
    run_experiment('hisr_finetune', tmp_path, variants={'psrt': {'model': 'psrt'}}, init='random',
                   seeds=[0, 1], comparisons=[['psrt', 'official']], budget=budget, out_dir=str(tmp_path / 'grid'))
    md = (tmp_path / 'grid' / 'hisr_finetune.md').read_text()
    assert '**With init=random: every variant started from random weights.' in md and 'from random weights (AdamW' in md
    assert '| random weights (step 0 of psrt): untrained floor' in md and 'official PSRT weights' not in md


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
