"""DDP on the CPU: two gloo processes under torchrun against one process on the same global batch.

What is allowed to differ (see nbs/30_train.ipynb): BatchNorm running statistics (each rank updates its own, from its
own BatchNorm group) and floating-point rounding of the sums over ranks. Everything else is compared: weights, the
MoCo queue and pointer, the optimizer state, the logged losses, the step; and a DDP run stopped after phase 1 and
resumed under DDP ends where the uninterrupted DDP run does."""
import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT

sys.path.insert(0, str(Path(__file__).parent))
from ddp_common import Textures, config, method   # noqa: E402

BN_STATS = ('running_mean', 'running_var', 'num_batches_tracked')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


@pytest.fixture(scope='module')
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('ddp')
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(ROOT)}
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
           '--master_port', str(free_port()), str(ROOT / 'tests' / 'ddp_worker.py'), str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=170)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
    return out


@pytest.fixture(scope='module')
def single_run(tmp_path_factory):
    from blindsr.train import Trainer
    out = tmp_path_factory.mktemp('single')
    torch.set_num_threads(1)
    try: Trainer(method(), Textures(), config(1), out).fit()
    finally: torch.set_num_threads(os.cpu_count() or 1)
    return out


def checkpoint(run: Path) -> dict:
    return torch.load(run / 'checkpoints' / 'last.pt', map_location='cpu', weights_only=True)


def tensors(ckpt: dict) -> dict:
    "The model's tensors and the MoCo objective's (key encoder, queue, pointer) of a checkpoint, by name."
    return {**{f'model.{k}': v for k, v in ckpt['model'].items()},
            **{f'objective.{k}': v for k, v in ckpt['training']['objective'].items()}}


def log_rows(run: Path) -> list:
    with open(run / 'log.csv', newline='') as f: return list(csv.DictReader(f))


def test_collectives_and_rank_agreement(ddp_run):
    c = json.loads((ddp_run / 'checks.json').read_text())
    assert c['world_size'] == 2
    assert c['gather'] == [0.0, 0.0, 1.0, 1.0]            # rank order
    assert c['avg_grad'] == pytest.approx(1.5)            # (1 + 2) / 2
    assert c['mean'] == pytest.approx(0.5)
    assert c['queues_equal'] and c['key_encoders_equal'] and c['weights_equal']
    assert c['resumed_step'] == 4


def test_ddp_matches_one_process(ddp_run, single_run):
    d, s = checkpoint(ddp_run / 'full'), checkpoint(single_run)
    assert d['step'] == s['step'] == 4
    md, ms = tensors(d), tensors(s)
    assert md.keys() == ms.keys()
    compared = 0
    for k in ms:
        if k.endswith(BN_STATS): continue                  # per-rank BatchNorm statistics: allowed to differ
        torch.testing.assert_close(md[k], ms[k], rtol=1e-4, atol=2e-5, msg=lambda m: f'{k}: {m}')
        compared += 1
    assert compared > 50
    assert int(md['objective.queue.ptr']) == int(ms['objective.queue.ptr']) == 32 % 32   # 4 steps x 8 keys in a K=32 queue
    od, os_ = d['optimizer']['state'], s['optimizer']['state']
    assert od.keys() == os_.keys()                         # the same parameters have Adam state (phase 1: SR net idle)
    for i in os_:
        assert int(od[i]['step']) == int(os_[i]['step'])
        torch.testing.assert_close(od[i]['exp_avg'], os_[i]['exp_avg'], rtol=1e-3, atol=1e-6)
    ld, ls = log_rows(ddp_run / 'full'), log_rows(single_run)
    assert [r['step'] for r in ld] == [r['step'] for r in ls]
    for a, b in zip(ld, ls):
        for k in ('loss', 'loss_sr', 'loss_contrast', 'contrast_acc'):
            assert float(a[k]) == pytest.approx(float(b[k]), rel=1e-4, abs=1e-6), (k, a, b)


def test_bn_statistics_are_rank_0s(ddp_run, single_run):
    "The one stated difference: BatchNorm running statistics come from rank 0's group only."
    md, ms = checkpoint(ddp_run / 'full')['model'], checkpoint(single_run)['model']
    k = next(k for k in ms if k.startswith('encoder.') and k.endswith('running_mean'))
    assert not torch.allclose(md[k], ms[k])


def test_ddp_resume_matches_uninterrupted(ddp_run):
    a, b = checkpoint(ddp_run / 'full'), checkpoint(ddp_run / 'part')
    assert a['step'] == b['step'] == 4
    ta, tb = tensors(a), tensors(b)
    for k in ta:
        torch.testing.assert_close(ta[k], tb[k], rtol=0, atol=1e-6, msg=lambda m: f'{k}: {m}')
    assert [r['step'] for r in log_rows(ddp_run / 'full')] == [r['step'] for r in log_rows(ddp_run / 'part')]


def test_torchrun_runs_train_dasr_end_to_end(tmp_path):
    "The README's command: torchrun --nproc_per_node 2 --no-python blindsr experiment nbs/experiments/train_dasr.ipynb ..."
    from test_experiments import TINY_DASR
    blindsr = Path(sys.executable).parent / 'blindsr'
    params = [a for k, v in {**TINY_DASR, 'out_dir': str(tmp_path / 'run')}.items() for a in ('-p', k, json.dumps(v))]
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', str(free_port()),
           '--no-python', str(blindsr), 'experiment', str(ROOT / 'nbs' / 'experiments' / 'train_dasr.ipynb'),
           str(tmp_path / 'train_dasr.ipynb'), *params]
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'}, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
    run = tmp_path / 'run'
    assert (tmp_path / 'train_dasr.ipynb').exists() and not list(tmp_path.glob('*rank*'))   # one executed notebook
    rows = log_rows(run)
    assert [r['phase'] for r in rows if r['phase'] != 'val'] == ['encoder', 'joint']       # logged once (rank 0)
    assert {'model_inference.pt', 'table.md', 'metrics.json'} <= {f.name for f in run.iterdir()}
    assert torch.load(run / 'checkpoints' / 'last.pt', weights_only=True)['step'] == 4


def test_experiment_command_errors(tmp_path):
    from blindsr.cli import main
    assert main(['experiment', str(tmp_path / 'none.ipynb'), str(tmp_path / 'o.ipynb')]) == 2
    nb = tmp_path / 'nofit.ipynb'
    nb.write_text(json.dumps({'cells': [{'cell_type': 'code', 'source': ['x = 1'], 'metadata': {}}], 'metadata': {},
                              'nbformat': 4, 'nbformat_minor': 5}))
    from blindsr.cli import notebook_code_until_training
    with pytest.raises(ValueError, match='no code cell calls .fit'):
        notebook_code_until_training(nb)
