"""End-to-end runs of the experiment notebooks through papermill, as `make demo` and batch users run them."""
import json
import re
import time

import papermill as pm
import pytest

from conftest import ROOT

EXPERIMENTS = ROOT / 'nbs' / 'experiments'


def run_experiment(name, tmp_path, **params):
    out = tmp_path / f'{name}.out.ipynb'
    pm.execute_notebook(str(EXPERIMENTS / f'{name}.ipynb'), str(out), parameters=params,
                        kernel_name='python3', cwd=str(EXPERIMENTS), progress_bar=False)
    return out


def check_parameters(name, upto='check_parameters(', **params):
    """Execute an experiment's parameter cell, then `params` (as papermill injects them), then its cells up to and
    including the first one containing `upto` (its parameter checks), in this process, in the experiments folder.

    A kernel costs ~8 s to start; the checks of every bad value are exercised this way, and one case per notebook
    still goes through papermill (`run_experiment`) to show the error reaches the user there too."""
    from blindsr.cli import notebook_code_until, run_notebook_code
    cells = notebook_code_until(EXPERIMENTS / f'{name}.ipynb', upto)
    if cells is None: raise AssertionError(f'{name}: no code cell contains {upto!r}')
    return run_notebook_code(cells, params, EXPERIMENTS, f'{name}.ipynb')


@pytest.mark.parametrize('path', sorted(EXPERIMENTS.glob('*.ipynb')), ids=lambda p: p.stem)
def test_experiments_have_a_parameters_cell(path):
    "papermill injects parameters after the cell tagged `parameters`; nbdev_clean must keep that tag."
    cells = json.loads(path.read_text())['cells']
    first = next(c for c in cells if c['cell_type'] == 'code')
    assert 'parameters' in first['metadata'].get('tags', []), f'{path.name}: first code cell is not tagged "parameters"'


def test_degradation_gallery_writes_its_figures(tmp_path):
    out = run_experiment('degradation_gallery', tmp_path, out_dir=str(tmp_path / 'figs'), seed=1)
    from blindsr.core import read_image
    for name in ('kernels', 'dasr', 'diverse'):
        f = tmp_path / 'figs' / f'degradation_{name}.png'
        assert f.stat().st_size > 10_000, f'{f.name} missing or tiny'
        img, _ = read_image(f)
        assert min(img.shape[-2:]) > 200 and img.std() > 0.05, f'{f.name} looks empty'
    assert out.exists()


def test_bad_parameter_is_reported(tmp_path):
    with pytest.raises(pm.PapermillExecutionError, match="image='no_such_image'"):
        run_experiment('degradation_gallery', tmp_path, out_dir=str(tmp_path), image='no_such_image')


TINY_DASR = dict(epochs_encoder=1, epochs_joint=1, steps_per_epoch=2, batch_size=4, lr_patch=12, n_feats=8, n_groups=1,
                 n_blocks=1, encoder_width=8, queue_size=8, analysis_sigmas=[0.0, 2.4], analysis_noises=[0.0, 10.0],
                 bn_groups=2, precision='fp32', progress=False, benchmark_sets=['Set5'])   # one set: a fast evaluation


def test_train_dasr_writes_its_run_folder(tmp_path, benchmarks_dir):
    "The demo's run folder; a second execution continues the finished run; changed parameters are refused."
    run = tmp_path / 'run'
    figs = tmp_path / 'figs'
    sets = {'Set5': str(benchmarks_dir / 'Set5' / 'HR')}
    run_experiment('train_dasr', tmp_path, out_dir=str(run), figures_dir=str(figs), benchmark_dirs=sets, **TINY_DASR)
    assert {'parameters.json', 'metrics.json', 'table.md', 'figures', 'checkpoints', 'log.csv',
            'model_inference.pt'} <= {p.name for p in run.iterdir()}
    params = json.loads((run / 'parameters.json').read_text())
    assert params['n_feats'] == 8 and params['epochs_joint'] == 1
    metrics = json.loads((run / 'metrics.json').read_text())
    assert metrics['steps'] == 4
    rows = metrics['table2']
    assert {r['method'] for r in rows} == {'Bicubic', 'DASR (this run)'}
    assert sorted({r['sigma'] for r in rows}) == [0.0, 1.2, 2.4, 3.6]
    assert all(10 < r['psnr'] < 50 for r in rows)
    assert -10 < metrics['probe']['sigma_r2'] <= 1 and 0 <= metrics['probe']['noise_accuracy'] <= 1
    assert -10 < metrics['probe_untrained']['sigma_r2'] <= 1 and metrics['probe_untrained'] != metrics['probe']   # the floor beside it
    table = (run / 'table.md').read_text()
    assert 'the untrained encoder (floor): sigma R²' in table
    assert table.index('Bicubic') < table.index('DASR (this run)') and 'Set5 σ=2.4' in table
    for name in ('grid', 'representation', 'comparison', 'loss_curve'):
        assert (run / 'figures' / f'train_dasr_{name}.png').stat().st_size > 5_000
        assert (figs / f'train_dasr_{name}.png').exists()
    # the TensorBoard events of the run, read with TensorBoard's own reader: the log's numbers, crops, the projector
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ev = EventAccumulator(str(run / 'tensorboard')); ev.Reload()
    from blindsr.train import read_training_log
    log = read_training_log(run / 'log.csv')
    assert [e.step for e in ev.Scalars('train/loss')] == [s for s, ph in zip(log['step'], log['phase']) if ph != 'val']
    assert [round(e.value, 3) for e in ev.Scalars('val/psnr')] == [round(v, 3) for v, ph in zip(log['val_psnr'], log['phase']) if ph == 'val']
    assert len(ev.Tags()['images']) == 3                                       # three validation crops
    meta = next((run / 'tensorboard').glob('*/representation*/metadata.tsv')).read_text().splitlines()
    assert {'image_name', 'sigma', 'noise'} <= set(meta[0].split('\t')) and len(meta) > 8

    # running it again continues the finished run (no training) and refuses changed parameters
    run_experiment('train_dasr', tmp_path, out_dir=str(run), benchmark_dirs=sets, **TINY_DASR)
    assert json.loads((run / 'metrics.json').read_text())['steps'] == 4
    with pytest.raises(ValueError, match='other parameters'):
        check_parameters('train_dasr', upto='open_run(', out_dir=str(run), benchmark_dirs=sets, **{**TINY_DASR, 'n_feats': 16})
    with pytest.raises(ValueError, match='already holds'):
        check_parameters('train_dasr', upto='open_run(', out_dir=str(run), benchmark_dirs=sets, resume=None, **TINY_DASR)


def test_train_dasr_validates_on_its_own_photographs_and_selects_on_them(tmp_path, benchmarks_dir):
    """Validation reads the embedded validation photographs at every Table-2 width, never the benchmarks (the test
    sets); select='best_val' evaluates the EMA checkpoint of the best validation epoch; rep_norm reaches the model."""
    run = tmp_path / 'run'
    params = {**TINY_DASR, 'epochs_encoder': 0, 'epochs_joint': 3, 'select': 'best_val', 'rep_norm': True, 'analysis_sigmas': [0.0, 3.6]}
    params['benchmark_sets'] = ['Set5', 'NoSuchSet']   # Set5 ships with blindsr; a set not found is named in the table
    out = run_experiment('train_dasr', tmp_path, out_dir=str(run), **params)
    text = out.read_text()
    table = (run / 'table.md').read_text()
    assert '**Benchmarks not found: NoSuchSet**; evaluated on Set5 only.' in table and 'Set5 σ=0' in table
    assert json.loads((run / 'metrics.json').read_text())['benchmarks_missing'] == ['NoSuchSet']
    assert 'validation: 2 embedded photographs x widths [0.0, 1.2, 2.4, 3.6]' in text
    from blindsr.train import read_training_log
    log = read_training_log(run / 'log.csv')
    val = [(e, v) for e, ph, v in zip(log['epoch'], log['phase'], log['val_psnr']) if ph == 'val']
    assert [e for e, _ in val] == [1, 2, 3]
    metrics = json.loads((run / 'metrics.json').read_text())
    best_epoch = int(max(val, key=lambda ev: ev[1])[0])
    assert metrics['select'] == 'best_val' and metrics['evaluated_epoch'] == best_epoch
    assert abs(metrics['best_val_psnr'] - max(v for _, v in val)) < 1e-3
    assert f'evaluating the checkpoint of epoch {best_epoch}' in text
    from blindsr.models import load_model
    assert load_model(run / 'model_inference.pt').sr_net.rep_norm is True


def test_train_dasr_bad_parameter_through_papermill(tmp_path):
    "What was once found only after the data was decoded (fp16 on a CPU) reaches the user through papermill first."
    with pytest.raises(pm.PapermillExecutionError, match=r"parameter precision='fp16' needs a CUDA device, not cpu"):
        run_experiment('train_dasr', tmp_path, out_dir=str(tmp_path / 'run'), **{**TINY_DASR, 'precision': 'fp16', 'device': 'cpu'})
    assert not (tmp_path / 'run').exists()


def _no_gpu_device():
    "A device this machine does not have: 'cuda' without a GPU, a CUDA index past the count with one."
    import torch
    return 'cuda:99' if torch.cuda.is_available() else 'cuda'


# every parameter of train_dasr with values it must refuse, (name, value[, other parameters]); '{tmp}' is a temporary
# folder, '{file}' an existing file that is no image and no checkpoint
DASR_INVALID = [
    ('scale', 5), ('scale', '4'), ('blur', 'gauss'), ('sigma_range', (3.0, 1.0)), ('sigma_range', [-1.0, 2.0]),
    ('lambda_range', (0.2,)), ('noise_range', 'none'), ('degradation', 'jpeg'), ('diverse_preset', 'bsrgan'),
    ('epochs_encoder', -1), ('epochs_encoder', 1.5), ('epochs_joint', -1), ('epochs_joint', 0, dict(epochs_encoder=0)),
    ('steps_per_epoch', 0), ('steps_per_epoch', None), ('batch_size', 0), ('lr_patch', 4),
    ('lr_patch', 65),                                   # trains (x4: 260 <= 300), but the probe at the end needs 520 pixels
    ('lr_encoder', 0.0), ('lr_encoder_decay_every', 0), ('lr_joint', -1.0), ('lr_joint_decay_every', 0), ('ema_decay', 1.0),
    ('init_from', '{tmp}/no_such_model.pt'), ('init_from', '{file}'), ('sr_batch_size', 0), ('sr_batch_size', 5),
    ('n_feats', 0), ('n_groups', 0), ('n_blocks', 0), ('encoder_arch', 'no_such_arch'), ('encoder_arch', ''),
    ('encoder_stage', 0), ('encoder_stage', 9, dict(encoder_arch='resnet18')), ('encoder_weights', '{tmp}/no_such_weights.pt'),
    ('encoder_weights', '{file}', dict(encoder_arch='resnet18', encoder_stage=1)), ('encoder_width', 0), ('queue_size', 0),
    ('queue_size', 2), ('n_pos', 0), ('pos_side', 'middle'), ('representation', 'blind'), ('objective', 'simclr'),
    ('images_per_degradation', 0), ('images_per_degradation', 3), ('positive', 'other'), ('hard_negatives', 'yes'),
    ('tolerance', -0.1), ('estimator_weight', -1), ('multi_crop', [[4, 2]]), ('multi_crop', [[12, 1]]), ('positives', 'mean'),
    ('rep_norm', 1), ('fusion', 'film'), ('bn_groups', 0), ('bn_groups', 3), ('moco_momentum', 1.0), ('data_dir', '{tmp}/nowhere'),
    ('skip_unreadable', 'yes'), ('benchmark_dirs', {'x': '{tmp}/nowhere'}), ('benchmark_dirs', {}), ('benchmark_sets', 'Set5'),
    ('out_dir', ''), ('out_dir', '{file}/run'), ('figures_dir', '{file}'), ('figures_dir', 3), ('seed', -1),
    ('device', _no_gpu_device()), ('device', 'not_a_device'), ('device', ''), ('precision', 'fp8'),
    ('precision', 'fp16', dict(device='cpu')), ('channels_last', 'yes'), ('num_workers', -1), ('select', 'best'),
    ('resume', '{tmp}/no_such_last.pt'), ('resume', '{file}'), ('analysis_sigmas', [1.0]), ('analysis_noises', [-5.0]),
    ('tsne', 'no'), ('progress', 2),
]


def _filled(v, tmp, file):
    if isinstance(v, str): return v.replace('{tmp}', str(tmp)).replace('{file}', str(file))
    if isinstance(v, dict): return {k: _filled(x, tmp, file) for k, x in v.items()}
    return v


def test_the_train_dasr_sweep_covers_every_parameter():
    swept = {case[0] for case in DASR_INVALID}
    assert swept == _parameter_names('train_dasr'), (f'not swept: {_parameter_names("train_dasr") - swept}; '
                                                     f'not parameters: {swept - _parameter_names("train_dasr")}')


@pytest.mark.parametrize('case', DASR_INVALID, ids=lambda c: f'{c[0]}={c[1]!r}'[:40])
def test_train_dasr_rejects_every_bad_parameter_before_any_data(tmp_path, case):
    """Each invalid value stops the notebook in its checks (before the run folder is opened, so before any data is read
    or any training), with a ValueError or TypeError naming the parameter."""
    name, value, extra = (*case, {})[:3]
    (tmp_path / 'not_an_image_nor_a_checkpoint.txt').write_text('hello')
    file = tmp_path / 'not_an_image_nor_a_checkpoint.txt'
    params = {**TINY_DASR, 'out_dir': str(tmp_path / 'run'), **_filled(extra, tmp_path, file), name: _filled(value, tmp_path, file)}
    with pytest.raises((ValueError, TypeError)) as e:
        check_parameters('train_dasr', upto='open_run(', **params)
    assert re.search(rf'\b{name}=', str(e.value)), f'{name}: the message does not name the parameter: {e.value}'
    assert not (tmp_path / 'run').exists()


def test_train_dasr_valid_parameters_pass_the_checks(tmp_path):
    "The sweep's baseline passes: each failure above is its one bad value."
    ns = check_parameters('train_dasr', upto='open_run(', **{**TINY_DASR, 'out_dir': str(tmp_path / 'run')})
    assert (tmp_path / 'run' / 'parameters.json').exists() and ns['ckpt'] is None


@pytest.mark.parametrize('name', ['train_encoder', 'train_pcl', 'train_hisr'])
def test_other_train_notebooks_check_device_and_precision_first(tmp_path, name):
    for bad, msg in [(dict(device=_no_gpu_device()), "parameter device='cuda"), (dict(device='not_a_device'), "parameter device="),
                     (dict(device='cpu', precision='fp16'), "parameter precision='fp16' needs a CUDA device"),
                     (dict(out_dir=str(tmp_path / 'f.txt' / 'run')), 'parameter out_dir=')]:
        (tmp_path / 'f.txt').write_text('a file')
        with pytest.raises(ValueError, match=re.escape(msg)):
            check_parameters(name, upto='open_run(', **{'out_dir': str(tmp_path / 'run'), **bad})
        assert not (tmp_path / 'run').exists()


def _image_folder(root, n=3, hw=(64, 72)):
    "n PNG photographs of `hw` in `root`, the second cut short (an interrupted copy: its header intact)."
    import torch
    from blindsr.core import write_image
    root.mkdir(parents=True)
    for i in range(n): write_image(root / f'img{i}.png', torch.rand(3, *hw, generator=torch.Generator().manual_seed(i)))
    whole = (root / 'img1.png').read_bytes()
    (root / 'img1.png').write_bytes(whole[:len(whole) // 2])
    return root / 'img1.png'


@pytest.mark.parametrize('name,extra', [('train_dasr', TINY_DASR), ('train_encoder', dict(lr_patch=12, test_sets=[])),
                                        ('train_pcl', dict(hr_patch=48, backbone_kwargs={'n_blocks': 1, 'n_feats': 8},
                                                           benchmark_sets=['Set5']))])
def test_unreadable_training_image_stops_before_training_or_is_skipped(tmp_path, name, extra):
    "A truncated file in data_dir: named before any training; skip_unreadable=True trains on the rest and lists it in the run folder."
    from blindsr.core import ImageFileError
    cut = _image_folder(tmp_path / 'hr')
    params = dict(extra, data_dir=str(tmp_path / 'hr'), out_dir=str(tmp_path / 'run'))
    with pytest.raises(ImageFileError, match=re.escape(f'1 of 3 images cannot be read: {cut} (truncated or corrupt image data')
                       + '.*pass skip_unreadable=True'):
        check_parameters(name, upto='record_skipped(', **params)
    assert not (tmp_path / 'run' / 'checkpoints').exists()
    with pytest.warns(UserWarning, match='skipped'):
        ns = check_parameters(name, upto='record_skipped(', **params, skip_unreadable=True)
    assert ns['train_data'].names == ['img0', 'img2']
    assert (tmp_path / 'run' / 'skipped_images.txt').read_text().startswith(f'{cut}\ttruncated or corrupt image data')


def test_train_dasr_patch_larger_than_the_images_names_lr_patch(tmp_path):
    "Found from the files' headers (nothing decoded), and said in the parameter's terms."
    _image_folder(tmp_path / 'hr', hw=(40, 72))
    with pytest.raises(ValueError, match=re.escape('parameter lr_patch=12 (HR patches are LR x scale 4): ') + '.*img0.png: image is '
                       + re.escape('40x72 (HxW), smaller than the 48x48 patch')):
        check_parameters('train_dasr', upto='record_skipped(', **{**TINY_DASR, 'data_dir': str(tmp_path / 'hr'),
                                                                  'out_dir': str(tmp_path / 'run')})


def test_train_dasr_multi_crop_and_positives(tmp_path):
    "The seed-000 switches reach the run: 3 averaged positives with cross-attention fusion; multi-crop with a timm encoder."
    for name, extra in [('pos_xattn', dict(n_pos=3, positives='average', fusion='xattn', channels_last=True)),
                        ('crop_resnet', dict(multi_crop=[[12, 1], [8, 2]], encoder_arch='resnet18', encoder_stage=1))]:
        run = tmp_path / name
        run_experiment('train_dasr', tmp_path, out_dir=str(run), **{**TINY_DASR, 'tsne': False, **extra})
        params = json.loads((run / 'parameters.json').read_text())
        # channels_last is a speed option, not in parameters.json: a run may resume in another memory layout
        assert all(params[k] == v for k, v in extra.items() if k != 'channels_last') and 'channels_last' not in params
        assert json.loads((run / 'metrics.json').read_text())['steps'] == 4


def test_train_dasr_research_objectives_and_diverse_degradation(tmp_path):
    "BYOL, SupCon with query-side positives, the spatial encoder + fusion, and DiverseDegradation recorded in the run."
    for name, extra in [('byol', dict(objective='byol', degradation='diverse')),
                        ('supcon_query_spatial', dict(objective='supcon', n_pos=3, pos_side='query', encoder_arch='spatial',
                                                      fusion='spatial'))]:
        run = tmp_path / name
        run_experiment('train_dasr', tmp_path, out_dir=str(run), **{**TINY_DASR, 'tsne': False, **extra})
        params = json.loads((run / 'parameters.json').read_text())
        assert all(params[k] == v for k, v in extra.items())
        assert json.loads((run / 'metrics.json').read_text())['steps'] == 4
        deg = json.loads((run / 'degradation.json').read_text())
        if extra.get('degradation') == 'diverse':
            assert deg['class'] == 'DiverseDegradation' and len(deg['rounds']) == 2 and deg['rounds'][0]['blur_prob'] == 1.0
            assert deg['final_jpeg_range'] == [30, 95]
        else:
            assert deg['class'] == 'DASRDegradation' and deg['sigma'] == [0.2, 4.0]


def test_train_dasr_controls_oracle_and_constant(tmp_path, benchmarks_dir):
    "The controls of the representation: the same SR network told the true sigma, or given one learned vector."
    from blindsr.models import load_model
    sets = {'Set5': str(benchmarks_dir / 'Set5' / 'HR')}
    for rep, label in [('oracle', 'DASR told the true sigma (oracle)'), ('constant', 'DASR, constant representation')]:
        run = tmp_path / rep
        run_experiment('train_dasr', tmp_path, out_dir=str(run), benchmark_dirs=sets, representation=rep, **TINY_DASR)
        metrics = json.loads((run / 'metrics.json').read_text())
        assert metrics['representation'] == rep and metrics['steps'] == 2 and metrics['probe'] is None   # no encoder phase
        assert {r['method'] for r in metrics['table2']} == {'Bicubic', label}
        assert all(10 < r['psnr'] < 50 for r in metrics['table2'])
        assert 'No probe' in (run / 'table.md').read_text()
        model = load_model(run / 'model_inference.pt')
        assert type(model).__name__ == ('OracleSR' if rep == 'oracle' else 'BlindSR')
        if rep == 'oracle': assert model.names == ('sigma',)           # the noise-free training tells only sigma
        else: assert sum(p.numel() for p in model.encoder.parameters()) == 4 * TINY_DASR['encoder_width']


@pytest.mark.parametrize('extra,msg', [(dict(representation='oracle', degradation='diverse'), "parameter representation='oracle'"),
                                       (dict(representation='constant', epochs_joint=0), 'parameter epochs_joint=0'),
                                       (dict(representation='constant', encoder_arch='resnet18'), "parameter representation='constant'"),
                                       (dict(representation='blind'), "parameter representation='blind'")])
def test_train_dasr_controls_reject_bad_parameters(tmp_path, extra, msg):
    with pytest.raises(ValueError, match=msg):
        check_parameters('train_dasr', out_dir=str(tmp_path / 'run'), **{**TINY_DASR, **extra})
    assert not (tmp_path / 'run').exists()


def test_representation_sr_grid_between_floor_and_ceiling(tmp_path, benchmarks_dir):
    "The SR grid: constant, a learned encoder and the oracle over paired seeds, compared with both ends; runs reused."
    params = dict(variants={'constant': {'representation': 'constant'}, 'estimator': {'objective': 'estimator'},
                            'oracle': {'representation': 'oracle'}},
                  seeds=[0, 1], budget={**TINY_DASR, 'tsne': False, 'benchmark_dirs': {'Set5': str(benchmarks_dir / 'Set5' / 'HR')}},
                  out_dir=str(tmp_path / 'grid'), workers=2)
    run_experiment('representation_sr', tmp_path, **params)
    md = (tmp_path / 'grid' / 'representation_sr.md').read_text()
    assert '| constant (floor)' in md and '| oracle (ceiling)' in md and '| bicubic |' in md
    assert "share of the oracle's gain" in md and ('undecided' in md or 'higher' in md or 'lower' in md)
    assert 'Set5 σ=2.4' in md and 'seeds [0, 1] (paired)' in md
    assert (tmp_path / 'grid' / 'representation_sr.png').stat().st_size > 10_000
    summary = json.loads((tmp_path / 'grid' / 'summary.json').read_text())
    assert set(summary['comparisons']) == {'constant / Set5', 'estimator / Set5', 'oracle / Set5'}
    assert summary['comparisons']['estimator / Set5']['vs_floor']['n'] == 2
    stamp = (tmp_path / 'grid' / 'oracle' / 'seed1' / 'metrics.json').stat().st_mtime
    run_experiment('representation_sr', tmp_path, **params)                 # finished runs are reused
    assert (tmp_path / 'grid' / 'oracle' / 'seed1' / 'metrics.json').stat().st_mtime == stamp


def test_ablation_grid_in_parallel_report_and_reuse(tmp_path):
    """A 2-variant x 2-seed tiny grid from a shared warm start, through submitit's local executor, 2 runs at a time:
    every run lands in its folder, the report has the margin over bicubic, the claim with its paired interval and
    verdict, and the CL curves; a second execution reuses the runs."""
    budget = {**TINY_DASR, 'tsne': False, 'scale': 4, 'objective': 'infonce', 'ema_decay': 0.9}
    params = dict(variants={'baseline': {}, 'npos3': {'n_pos': 3}}, seeds=[0, 1], budget=budget,
                  warm_start={'representation': 'constant', 'epochs_joint': 1}, comparisons=[['npos3', 'baseline', 'higher']],
                  out_dir=str(tmp_path / 'abl'), report_dir=str(tmp_path / 'report'), executor='local', workers=2, threads_per_run=1)
    run_experiment('ablation', tmp_path, **params)
    for v in ('warm_start', 'baseline', 'npos3'):
        for s in (0, 1):
            assert (tmp_path / 'abl' / v / f'seed{s}' / 'metrics.json').exists()
    warm = json.loads((tmp_path / 'abl' / 'npos3' / 'seed1' / 'metrics.json').read_text())['warm_start']
    assert warm['from'].endswith('warm_start/seed1/model_inference.pt') and warm['loaded'] > 0    # each seed's own warm start
    assert (tmp_path / 'abl' / '.submitit').is_dir()
    md = (tmp_path / 'report' / 'ablation.md').read_text()
    assert 'through executor `local` with 2 worker(s)' in md and json.dumps(budget) in md
    assert '## The budget against bicubic' in md and 'Above bicubic at every width in every seed: **' in md
    claim = next(l for l in md.splitlines() if l.startswith('| 5 positives') or l.startswith('| npos3 better'))
    assert re.search(r'\*\*(holds|refuted|undecided)\*\*', claim) and re.search(r'[+-]\d\.\d\d \[[+-]\d\.\d\d, [+-]\d\.\d\d\]', claim)
    rows = [l for l in md.splitlines() if re.match(r'\| (npos3|baseline) \| [01] \|', l)]
    assert len(rows) == 4                                                # per-run table: 2 variants x 2 seeds
    summary = json.loads((tmp_path / 'abl' / 'summary.json').read_text())
    c = summary['claims'][0]
    assert (c['variant'], c['reference'], c['PSNR Set5']['n']) == ('npos3', 'baseline', 2)
    assert c['final CL'] is not None and c['verdict'] in ('holds', 'refuted', 'undecided')
    for f in ('ablation.png', 'ablation_cl.png'): assert (tmp_path / 'report' / f).stat().st_size > 10_000
    run_experiment('ablation', tmp_path, **{**params, 'executor': 'subprocess', 'workers': 1})
    assert '6 runs read back from earlier executions' in (tmp_path / 'report' / 'ablation.md').read_text()
    with pytest.raises(ValueError, match="may not set"):
        check_parameters('ablation', upto='may not set', **{**params, 'variants': {'bad': {'seed': 3}}})
    with pytest.raises(ValueError, match="needs executor='slurm'"):
        check_parameters('ablation', upto='may not set', **{**params, 'slurm': {'partition': 'gpu'}})


def test_grid_resumes_a_run_killed_mid_way(tmp_path):
    """A run of a sweep is killed (its kernel, SIGKILL) after its first checkpoint: the sweep runs it again, the run
    continues from that checkpoint instead of starting over, and the other runs are not disturbed."""
    import threading
    import psutil
    from blindsr.train import load_checkpoint, run_grid
    budget = {**TINY_DASR, 'tsne': False, 'objective': 'infonce', 'epochs_joint': 3, 'steps_per_epoch': 3}
    victim = tmp_path / 'grid' / 'a' / 'seed0'
    killed = {}
    def kill_when_checkpointed():
        deadline = time.time() + 300
        while time.time() < deadline and not (victim / 'checkpoints' / 'last.pt').exists(): time.sleep(0.05)
        for p in psutil.process_iter(['cmdline']):
            if str(victim.parent / 'seed0.ipynb') in ' '.join(p.info['cmdline'] or []):   # the run's papermill process
                for child in p.children(recursive=True): child.kill(); killed['pid'] = child.pid   # its kernel
        killed['step'] = load_checkpoint(victim / 'checkpoints' / 'last.pt')['step'] if killed else None
    watcher = threading.Thread(target=kill_when_checkpointed); watcher.start()
    res = run_grid(EXPERIMENTS / 'train_dasr.ipynb', {'a': {}, 'b': {'n_pos': 2}}, [0], tmp_path / 'grid', base=budget,
                   executor='local', workers=2, threads_per_run=1, retries=1, poll_seconds=0.2)
    watcher.join()
    assert killed.get('pid'), 'the run finished before it could be killed'
    assert res[('a', 0)]['status'] == 'ran' and res[('a', 0)]['attempts'] == 2 and res[('b', 0)]['attempts'] == 1
    executed = (victim.parent / 'seed0.ipynb').read_text()
    assert f"resumed from" in executed and f"at step {killed['step']} of" in executed       # continued, not restarted
    steps = [int(r.split(',')[0]) for r in (victim / 'log.csv').read_text().splitlines()[1:] if r.split(',')[2] != 'val']
    assert steps == sorted(set(steps)) and res[('a', 0)]['steps'] == 12                        # no step logged twice, all 12 trained


def _parameter_names(name):
    import ast
    cells = json.loads((EXPERIMENTS / f'{name}.ipynb').read_text())['cells']
    first = next(c for c in cells if c['cell_type'] == 'code')
    return {t.id for node in ast.parse(''.join(first['source'])).body for t in getattr(node, 'targets', [])}


def test_ablation_extra_names_only_real_parameters():
    "The second grid's file sets ablation parameters, and its variants set train_dasr parameters (a typo would fail late)."
    import yaml
    cfg = yaml.safe_load((EXPERIMENTS / 'ablation_extra.yaml').read_text())
    assert set(cfg) <= _parameter_names('ablation')
    train = _parameter_names('train_dasr')
    for name, over in cfg['variants'].items():
        assert set(over) <= train, f'{name}: {set(over) - train} are not train_dasr parameters'
    assert all(a in cfg['variants'] and b in cfg['variants'] and claim in ('higher', 'lower') for a, b, claim in cfg['comparisons'])


def test_tiled_inference_figure(tmp_path, benchmarks_dir, golden_dir):
    "The seams figure on a small crop with the official DASR weights: blended tiles match the full image, naive ones do not."
    run_experiment('tiled_inference', tmp_path, figures_dir=str(tmp_path / 'figs'), hr_crop=192, tile=24, overlap=8,
                   pad=8, view=32, weights=str(golden_dir / 'dasr' / 'dasr_official_x4_state.pt'),
                   image=str(benchmarks_dir / 'Set14' / 'HR' / 'baboon.png'))
    table = (tmp_path / 'figs' / 'tiled_inference.md').read_text()
    naive, blended = [float(re.search(rf'\| {k}[^|]* \| ([\d.]+) \|', table).group(1)) for k in ('naive tiles', 'blended tiles')]
    assert blended >= 50 > naive, table
    assert (tmp_path / 'figs' / 'tiled_inference_seams.png').stat().st_size > 20_000


def test_tiled_inference_parameters():
    for name, value, msg in (('tile', 4, 'tile=4'), ('overlap', 64, 'overlap=64'), ('hr_crop', 130, 'multiple of 4'),
                             ('weights', 'nope.pt', "weights='nope.pt'")):
        with pytest.raises(ValueError, match=re.escape(msg)):
            check_parameters('tiled_inference', **{name: value})
