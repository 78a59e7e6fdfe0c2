"""The trainer end to end: the run folder, checkpoint faults, divergence, precision and EMA options (exact resume after
hard kills and a full disk: test_fault_injection.py)."""
import textwrap
from pathlib import Path

import pytest
import torch

from blindsr.core import CheckpointError
from blindsr.models import CHECKPOINT_FORMAT, load_model
from blindsr.methods import DASRMethod
from blindsr.train import DivergenceError, load_checkpoint, read_training_log, save_checkpoint

SETUP = textwrap.dedent("""
    import random
    import numpy as np
    import torch
    from blindsr.core import seed_everything
    from blindsr.data import HRImageFolder
    from blindsr.degradations import DASRDegradation
    from blindsr.methods import DASRMethod
    from blindsr.models import create_model
    from blindsr.train import TrainConfig, Trainer

    def textures(n=6, size=48):
        g = torch.Generator().manual_seed(0)
        low = torch.rand(n, 3, 6, 6, generator=g)
        return list(torch.nn.functional.interpolate(low, size=size, mode='bicubic', align_corners=False).clamp(0, 1))

    class GlobalRNGDASR(DASRMethod):
        "DASR whose step draws from the global torch, Python and NumPy generators (as dropout would)."
        def step(self, batch, ctx):
            loss, logs = super().step(batch, ctx)
            return loss * (1 + 0.1 * torch.rand(()) + 0.01 * random.random() + 0.01 * float(np.random.rand())), logs

    def make_trainer(out_dir, method_cls=None, global_rng=False, **cfg_kw):
        cfg = dict(epochs_encoder=1, epochs_joint=2, steps_per_epoch=3, batch_size=2, lr_joint=1e-3,
                   val_every=1, ckpt_every_steps=2, progress=False, seed=3)
        cfg.update(cfg_kw)
        data = HRImageFolder(images=textures(), patch_size=16, n_patches=2, seed=3)
        deg = DASRDegradation(scale=2, sigma=(0.2, 2.0), noise=(0, 10))
        hr = textures(2, 16)
        val = [(f'v{i}', h, deg(h[None, None], generator=torch.Generator().manual_seed(i))[0][0, 0]) for i, h in enumerate(hr)]
        seed_everything(cfg['seed'])   # the initial weights, and the global generators a method may draw from
        model = create_model('blindsr', scale=2, n_feats=8, n_groups=1, n_blocks=1, width=8)
        method = method_cls or (GlobalRNGDASR if global_rng else DASRMethod)
        return Trainer(method(model, degradation=deg, K=8), data, TrainConfig(**cfg), out_dir, val_pairs=val, log_every=1)
""")
exec(SETUP)   # the same setup runs here and in the processes test_fault_injection.py kills (defines make_trainer)


def test_run_folder_and_inference_export(tmp_path):
    t = make_trainer(tmp_path / 'run')
    out = t.fit()
    names = {p.name for p in (tmp_path / 'run').iterdir()}
    assert {'log.csv', 'loss_curve.png', 'model_inference.pt', 'checkpoints'} <= names
    assert {p.name for p in (tmp_path / 'run' / 'checkpoints').iterdir()} == {'last.pt', 'previous.pt', 'best.pt'}
    assert b'\r' not in (tmp_path / 'run' / 'log.csv').read_bytes()                   # '\n' line ends
    prev, last = (load_checkpoint(tmp_path / 'run' / 'checkpoints' / n) for n in ('previous.pt', 'last.pt'))
    assert (prev['step'], last['step']) == (8, 9)                                     # the last.pt before the last
    assert out['best_score'] > 10
    m = load_model(tmp_path / 'run' / 'model_inference.pt')
    exported = torch.load(tmp_path / 'run' / 'model_inference.pt', weights_only=True)['state_dict']
    assert not any(k.startswith('encoder.encoder_k') or k.startswith('encoder.queue') for k in exported)
    lr = torch.rand(1, 3, 10, 12)
    t.model.eval()
    with torch.no_grad():
        assert torch.equal(m(lr), t.model(lr))


def test_checkpoint_faults_name_the_file(tmp_path):
    t = make_trainer(tmp_path / 'run', epochs_joint=0, epochs_encoder=1)
    t.fit()
    last = tmp_path / 'run' / 'checkpoints' / 'last.pt'
    good = last.read_bytes()
    last.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match='last.pt: not a readable PyTorch checkpoint'):
        make_trainer(tmp_path / 'run').resume(last)
    save_checkpoint(last, {'format': CHECKPOINT_FORMAT, 'model_spec': {'name': 'other', 'kwargs': {}}})
    with pytest.raises(CheckpointError, match='last.pt: written for model'):
        make_trainer(tmp_path / 'run').resume(last)
    with pytest.raises(FileNotFoundError, match='nothere.pt'):
        load_model(tmp_path / 'nothere.pt')


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    t = make_trainer(tmp_path / 'run', epochs_joint=0)
    t.fit()
    last = tmp_path / 'run' / 'checkpoints' / 'last.pt'
    before = last.read_bytes()
    import blindsr.core as core
    monkeypatch.setattr(core.os, 'replace', lambda *a: (_ for _ in ()).throw(OSError('disk full (injected)')))
    with pytest.raises(OSError, match='injected'):
        t.save('last')
    assert last.read_bytes() == before
    assert sorted(p.name for p in last.parent.iterdir()) == ['last.pt', 'previous.pt']   # no temporary file left


class Spiky(DASRMethod):
    "DASR whose loss at step `at` (0-based, once) is multiplied by 1e4: a bad batch."
    at = None
    def step(self, batch, ctx):
        loss, logs = super().step(batch, ctx)
        if ctx.step == self.at: self.at, loss = None, loss * 1e4
        return loss, logs


class NaNBatch(DASRMethod):
    "DASR fed NaN pixels at step `at` (0-based): the forward turns BatchNorm statistics and MoCo's queue to NaN."
    at = None
    def step(self, batch, ctx):
        return super().step(batch * float('nan') if ctx.step == self.at else batch, ctx)


def _largest_weight(state: dict) -> float:
    "The largest magnitude among the weights (BatchNorm statistics left out)."
    return max(float(v.abs().max()) for k, v in state.items() if v.is_floating_point() and '.running_' not in k)


def test_exploding_learning_rate_stops_before_the_weights_are_saved(tmp_path):
    "(a) lr 1e6: the weight check stops the step that exploded, so no checkpoint, best.pt or export holds its weights."
    t = make_trainer(tmp_path / 'first', lr_encoder=1e6)
    with pytest.raises(DivergenceError, match=r'in step 1 the weight norm grew to .*; no checkpoint was saved before it') as e:
        t.fit()
    assert e.value.checkpoint is None and 'last.pt' not in str(e.value)
    for refused in (t.export_inference, t.save, t.fit):
        with pytest.raises(DivergenceError, match='unusable'): refused()
    assert not (tmp_path / 'first' / 'checkpoints').exists() and not (tmp_path / 'first' / 'model_inference.pt').exists()

    t = make_trainer(tmp_path / 'late', lr_joint=1e6)           # phase 1 trains; the first joint step explodes
    with pytest.raises(DivergenceError, match=r'in step 4 the weight norm grew .*; the trainer went back to the last good checkpoint .*last.pt \(step 3\)') as e:
        t.fit()
    good = load_checkpoint(e.value.checkpoint)
    assert e.value.step == 4 and good['step'] == 3 == t.step and _largest_weight(good['model']) < 1e3
    assert {k: torch.equal(v, good['model'][k]) for k, v in t.model.state_dict().items()} == {k: True for k in good['model']}
    assert not (tmp_path / 'late' / 'checkpoints' / 'best.pt').exists() and not (tmp_path / 'late' / 'model_inference.pt').exists()
    assert _largest_weight(torch.load(t.export_inference(), weights_only=True)['state_dict']) < 1e3   # the good weights, asked for


def test_loss_spike_goes_back_before_the_checkpoint_that_produced_it(tmp_path):
    "(a) a loss 1e4x its running median: the checkpoint of the step before holds the weights that gave it; previous.pt is the good one."
    t = make_trainer(tmp_path / 'stop', method_cls=Spiky, ckpt_every_steps=1, diverge_warmup=2)
    t.method.at = 5
    with pytest.raises(DivergenceError, match=r'in step 6 the loss .* rose above 50x its running median .*; .*previous.pt \(step 4\)'):
        t.fit()
    assert t.step == 4 and load_checkpoint(tmp_path / 'stop' / 'checkpoints' / 'last.pt')['step'] == 5

    r = make_trainer(tmp_path / 'roll', method_cls=Spiky, ckpt_every_steps=1, diverge_warmup=2, diverge_rollbacks=1)
    r.method.at = 5
    with pytest.warns(UserWarning, match=r'in step 6 the loss .*; rolled back to .*previous.pt \(step 4\) with the learning rate x0.5 \(rollback 1 of 1\)'):
        out = r.fit()
    assert out['steps'] == 9 and [(d['step'], Path(d['checkpoint']).name) for d in out['divergences']] == [(6, 'previous.pt')]
    log = read_training_log(r.log_path)
    rows = list(zip(log['step'], log['phase']))
    assert len(set(rows)) == len(rows) and [s for s, p in rows if p != 'val'] == list(range(1, 10))   # no step twice
    assert [lr for s, p, lr in zip(log['step'], log['phase'], log['lr']) if p == 'joint'] == [1e-3] + [5e-4] * 5
    assert load_checkpoint(tmp_path / 'roll' / 'checkpoints' / 'last.pt')['monitor']['rollbacks'] == 1


def test_non_finite_loss_leaves_the_trainer_at_its_last_good_state(tmp_path):
    "(b) NaN pixels: the forward set BatchNorm statistics and the queue to NaN; the trainer is back at the good checkpoint."
    t = make_trainer(tmp_path / 'run', method_cls=NaNBatch)
    t.method.at = 4                                        # last.pt of step 4 holds the weights that met the NaN
    with pytest.raises(DivergenceError, match=r'in step 5 the loss became nan; the trainer went back to the last good '
                                              r'checkpoint .*previous.pt \(step 3\)') as e:
        t.fit()
    good = load_checkpoint(e.value.checkpoint)
    state = t.model.state_dict()
    assert t.step == 3 and all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert all(torch.equal(v, good['model'][k]) for k, v in state.items())
    queue = t.method.training_state()['objective']
    assert all(torch.equal(v, good['training']['objective'][k]) for k, v in queue.items() if torch.is_tensor(v))
    assert _largest_weight(torch.load(t.export_inference(), weights_only=True)['state_dict']) < 1e3

    t = make_trainer(tmp_path / 'early', method_cls=NaNBatch)
    t.method.at = 0
    with pytest.raises(DivergenceError, match=r'in step 1 the loss became nan; no checkpoint was saved before it') as e:
        t.fit()
    assert 'last.pt' not in str(e.value)
    with pytest.raises(DivergenceError, match='unusable'): t.export_inference()
    assert not (tmp_path / 'early' / 'model_inference.pt').exists()


def test_resume_removes_what_interrupted_writes_left(tmp_path):
    "(c) the temporary files of a save killed half-way are removed, with a warning naming them."
    t = make_trainer(tmp_path / 'run', epochs_joint=0)
    t.fit()
    ckpts = tmp_path / 'run' / 'checkpoints'
    (ckpts / '.last.pt.k3x9a1.tmp').write_bytes(b'half a checkpoint')
    (tmp_path / 'run' / '.log.csv.q0w2e4.tmp').write_text('step,')
    with pytest.warns(UserWarning, match=r'removed 2 unfinished write\(s\) .*\.log\.csv\.q0w2e4\.tmp, checkpoints/\.last\.pt\.k3x9a1\.tmp'):
        make_trainer(tmp_path / 'run', epochs_joint=0).resume(ckpts / 'last.pt')
    assert not list(tmp_path.rglob('*.tmp'))


def test_bad_config_is_rejected_before_training(tmp_path):
    with pytest.raises(ValueError, match='TrainConfig.lr_joint'):
        make_trainer(tmp_path / 'x', lr_joint=-1)
    with pytest.raises(ValueError, match="precision='fp16' needs a CUDA device"):
        make_trainer(tmp_path / 'x', precision='fp16', device='cpu')


def test_bf16_autocast_and_ema(tmp_path):
    t = make_trainer(tmp_path / 'run', precision='bf16', ema_decay=0.9, epochs_joint=1)
    out = t.fit()
    assert t.step == 6 and out['best_score'] > 10
    ema_model = t.inference_model()
    assert not torch.equal(ema_model.sr_net.head[0].weight, t.model.sr_net.head[0].weight)
    m = load_model(tmp_path / 'run' / 'model_inference.pt')
    assert torch.equal(m.sr_net.head[0].weight, ema_model.sr_net.head[0].weight)


def _papermill_notebook(path, parameters: str, body: str):
    "Write a papermill notebook: a `parameters` cell, then `body` (dedented)."
    import nbformat
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(parameters)
    params.metadata['tags'] = ['parameters']
    nb.cells = [params, nbformat.v4.new_code_cell(textwrap.dedent(body))]
    nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'python3', 'language': 'python'}
    nbformat.write(nb, str(path))
    return path


def _toy_experiment(path):
    "A papermill notebook that records its parameters and writes metrics.json, or fails when told to."
    return _papermill_notebook(path, "out_dir = 'x'\nseed = 0\nscale = 1\nfail = False", """
        import json, pathlib
        run = pathlib.Path(out_dir); run.mkdir(parents=True, exist_ok=True)
        (run / 'parameters.json').write_text(json.dumps({'seed': seed, 'scale': scale, 'fail': fail}))
        assert not fail, 'told to fail'
        (run / 'metrics.json').write_text(json.dumps({'value': seed * scale}))""")


def _dying_experiment(path):
    "A papermill notebook that records when it ran, and whose kernel is killed (SIGKILL) at its first attempt if told."
    return _papermill_notebook(path, "out_dir = 'x'\nseed = 0\ndie_once = False\nwarm = None", """
        import json, os, pathlib, signal, time
        run = pathlib.Path(out_dir); run.mkdir(parents=True, exist_ok=True)
        (run / 'parameters.json').write_text(json.dumps({'seed': seed, 'die_once': die_once, 'warm': warm}))
        t0 = time.time(); time.sleep(2)
        if die_once and not (run / 'died').exists():
            (run / 'died').write_text('once'); os.kill(os.getpid(), signal.SIGKILL)
        (run / 'metrics.json').write_text(json.dumps({'start': t0, 'end': time.time(), 'warm': warm,
                                                      'threads': os.environ.get('OMP_NUM_THREADS')}))""")


def test_run_grid_submitit_local_parallel_retries_killed_runs(tmp_path):
    "submitit's local executor, 2 jobs at a time; a run whose kernel is killed is tried again, and without retries reported."
    from blindsr.train import run_grid
    nb = _dying_experiment(tmp_path / 'dying.ipynb')
    res = run_grid(nb, {'ok': {}, 'dies': {'die_once': True}}, [0, 1], tmp_path / 'grid', executor='local', workers=2,
                   threads_per_run=1, retries=1, per_seed=lambda s: {'warm': f'w{s}'}, poll_seconds=0.2)
    assert all(r['status'] == 'ran' for r in res.values()), res
    assert [res[('dies', s)]['attempts'] for s in (0, 1)] == [2, 2] and res[('ok', 0)]['attempts'] == 1
    assert res[('ok', 1)]['warm'] == 'w1' and res[('ok', 0)]['threads'] == '1'
    first = sorted((r['start'], r['end']) for r in res.values())
    assert any(b[0] < a[1] for a, b in zip(first, first[1:])), 'no two runs overlapped: not parallel'
    assert (tmp_path / 'grid' / '.submitit').is_dir()                            # submitit's job logs
    again = run_grid(nb, {'ok': {}, 'dies': {'die_once': True}}, [0, 1], tmp_path / 'grid', executor='local',
                     per_seed=lambda s: {'warm': f'w{s}'})
    assert all(r['status'] == 'reused' for r in again.values())
    (tmp_path / 'grid' / 'dies' / 'seed0' / 'died').unlink(); (tmp_path / 'grid' / 'dies' / 'seed0' / 'metrics.json').unlink()
    once = run_grid(nb, {'dies': {'die_once': True}}, [0], tmp_path / 'grid', executor='local', retries=0,
                    per_seed=lambda s: {'warm': f'w{s}'}, poll_seconds=0.2)
    assert once[('dies', 0)]['status'] == 'failed' and once[('dies', 0)]['attempts'] == 1 and once[('dies', 0)]['error']


def test_run_grid_runs_reuses_and_records_failures(tmp_path):
    "Every variant x seed in its folder, two at a time; finished runs reused; a failure recorded while the others go on."
    from blindsr.train import run_grid
    nb = _toy_experiment(tmp_path / 'toy.ipynb')
    variants = {'double': {'scale': 2}, 'broken': {'fail': True}}
    res = run_grid(nb, variants, [0, 1], tmp_path / 'grid', workers=2, threads_per_run=1)
    assert list(res) == [('double', 0), ('broken', 0), ('double', 1), ('broken', 1)]   # seeds outermost
    assert [res[('double', s)]['value'] for s in (0, 1)] == [0, 2] and res[('double', 1)]['status'] == 'ran'
    assert res[('broken', 0)]['status'] == 'failed' and 'told to fail' in res[('broken', 0)]['error']
    assert (tmp_path / 'grid' / 'double' / 'seed1.ipynb').exists()                    # the executed notebook
    again = run_grid(nb, variants, [0, 1], tmp_path / 'grid')
    assert again[('double', 1)]['status'] == 'reused' and again[('double', 1)]['wall_seconds'] > 0
    ran, reused = res[('double', 1)], again[('double', 1)]
    assert ran['started'] < ran['ended'] and (reused['started'], reused['ended']) == (ran['started'], ran['ended'])   # when it ran, kept
    assert again[('broken', 1)]['status'] == 'failed'                                  # a failed run is tried again
    changed = run_grid(nb, {'double': {'scale': 3}}, [1], tmp_path / 'grid')           # other parameters: run again
    assert changed[('double', 1)]['status'] == 'ran' and changed[('double', 1)]['value'] == 3
    with pytest.raises(ValueError, match='does not exist'):
        run_grid(tmp_path / 'missing.ipynb', variants, [0], tmp_path / 'grid')
