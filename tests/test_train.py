"""The trainer end to end: exact resume after a hard kill, checkpoint faults, precision and EMA options."""
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from blindsr.core import CheckpointError
from blindsr.models import CHECKPOINT_FORMAT, load_model
from blindsr.train import load_checkpoint, read_training_log, save_checkpoint

SETUP = textwrap.dedent("""
    import torch
    from blindsr.data import HRImageFolder
    from blindsr.degradations import DASRDegradation
    from blindsr.methods import DASRMethod
    from blindsr.models import create_model
    from blindsr.train import TrainConfig, Trainer

    def textures(n=6, size=48):
        g = torch.Generator().manual_seed(0)
        low = torch.rand(n, 3, 6, 6, generator=g)
        return list(torch.nn.functional.interpolate(low, size=size, mode='bicubic', align_corners=False).clamp(0, 1))

    def make_trainer(out_dir, **cfg_kw):
        cfg = dict(epochs_encoder=1, epochs_joint=2, steps_per_epoch=3, batch_size=2, lr_joint=1e-3,
                   val_every=1, ckpt_every_steps=2, progress=False, seed=3)
        cfg.update(cfg_kw)
        data = HRImageFolder(images=textures(), patch_size=16, n_patches=2, seed=3)
        deg = DASRDegradation(scale=2, sigma=(0.2, 2.0), noise=(0, 10))
        hr = textures(2, 16)
        val = [(f'v{i}', h, deg(h[None, None], generator=torch.Generator().manual_seed(i))[0][0, 0]) for i, h in enumerate(hr)]
        torch.manual_seed(cfg['seed'])   # the initial weights
        model = create_model('blindsr', scale=2, n_feats=8, n_groups=1, n_blocks=1, width=8)
        return Trainer(DASRMethod(model, degradation=deg, K=8), data, TrainConfig(**cfg), out_dir, val_pairs=val, log_every=1)
""")
exec(SETUP)   # the same setup runs here and in the subprocess that is killed (defines make_trainer)


def _same_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, f'{len(diff)} tensors differ, e.g. {diff[:3]}'


def test_resume_after_hard_kill_is_exact(tmp_path):
    "N steps in one go == N/2 steps, SIGKILL, resume for the rest: identical weights, queue and optimizer on CPU."
    straight = make_trainer(tmp_path / 'straight')
    straight.fit()
    total = straight.step
    assert total == 9

    killed = tmp_path / 'killed'
    script = SETUP + textwrap.dedent(f"""
        import os, signal
        def kill_at_4(trainer, path):
            if trainer.step == 4 and path.name == 'last.pt':
                os.kill(os.getpid(), signal.SIGKILL)   # a hard kill right after the mid-epoch checkpoint
        t = make_trainer({str(killed)!r}); t.callbacks.append(kill_at_4); t.fit()
    """)
    proc = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert load_checkpoint(killed / 'checkpoints' / 'last.pt')['step'] == 4

    resumed = make_trainer(killed).resume(killed / 'checkpoints' / 'last.pt')
    assert resumed.step == 4
    resumed.fit()
    assert resumed.step == total
    _same_state(straight.model.state_dict(), resumed.model.state_dict())
    so, ro = straight.optimizer.state_dict()['state'], resumed.optimizer.state_dict()['state']
    for k in so: _same_state(so[k], ro[k])
    assert straight.best_score == resumed.best_score
    # the log was cut back to the checkpoint and continued: same steps as the straight run
    assert read_training_log(straight.log_path)['step'] == read_training_log(resumed.log_path)['step']


def test_run_folder_and_inference_export(tmp_path):
    t = make_trainer(tmp_path / 'run')
    out = t.fit()
    names = {p.name for p in (tmp_path / 'run').iterdir()}
    assert {'log.csv', 'loss_curve.png', 'model_inference.pt', 'checkpoints'} <= names
    assert {p.name for p in (tmp_path / 'run' / 'checkpoints').iterdir()} == {'last.pt', 'best.pt'}
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
    assert sorted(p.name for p in last.parent.iterdir()) == ['last.pt']


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
