"""Fault injection: a tiny DASR run SIGKILLed at five seeded random moments (one in the middle of writing a checkpoint)
and resumed each time ends bit for bit as a run never interrupted; a full disk (ENOSPC) keeps the previous checkpoint,
names the file it could not write, and a restart continues exactly.

What may differ between an interrupted and an uninterrupted run, and why: log.csv's `seconds` column (wall time,
counted from each process's start) and TensorBoard's event files (wall times; a resumed run starts a new file).
Everything else compared here is equal byte for byte: last.pt, previous.pt, best.pt, model_inference.pt (weights,
optimiser, MoCo queue, EMA, RNG states, schedule) and log.csv's other columns."""
import csv
import errno
import io
import json
import os
import random
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from test_train import SETUP, make_trainer
from blindsr.train import load_checkpoint

pytestmark = pytest.mark.skipif(not os.path.isdir('/proc/self/fd'), reason='finds the file behind a descriptor in /proc')

# 12 steps, a checkpoint after every one, validation and best.pt in each joint epoch, an EMA, and a method that draws
# from the global generators (so their stored states must round-trip too)
CFG = dict(epochs_encoder=1, epochs_joint=3, ckpt_every_steps=1, ema_decay=0.9, tensorboard=False, global_rng=True)

CHILD = SETUP + textwrap.dedent("""
    import json, os, signal, sys
    from blindsr.train import open_run

    kind, at = os.environ['KILL_AT'].rsplit(':', 1); at = int(at); seen = {}
    def point(name):
        "A moment the run can die at: SIGKILL the `at`-th time it reaches `kind`."
        seen[name] = seen.get(name, 0) + 1
        if name == kind and seen[name] == at: os.kill(os.getpid(), signal.SIGKILL)

    for name in ('train_step', '_log'):
        def hooked(self, *a, _f=getattr(Trainer, name), _n=name):
            point(_n); out = _f(self, *a); point(_n + ' done'); return out
        setattr(Trainer, name, hooked)

    class HalfWay:
        "A checkpoint's temporary file whose write can die half-way."
        def __init__(self, f): self.f = f
        def __enter__(self): return self
        def __exit__(self, *exc): return self.f.__exit__(*exc)
        def __getattr__(self, k): return getattr(self.f, k)
        def write(self, data):
            half = len(data) // 2
            self.f.write(data[:half]); self.f.flush(); point('checkpoint half written')
            return half + self.f.write(data[half:])

    real_fdopen, real_replace = os.fdopen, os.replace
    def fdopen(fd, *a, **k):
        f = real_fdopen(fd, *a, **k)
        return HalfWay(f) if '.pt.' in os.readlink(f'/proc/self/fd/{fd}') else f
    def replace(src, dst):
        is_ckpt = str(dst).endswith('.pt')
        if is_ckpt: point('checkpoint written, not renamed')
        real_replace(src, dst)
        if is_ckpt: point('checkpoint renamed')
    os.fdopen, os.replace = fdopen, replace

    run, ckpt = open_run(sys.argv[1], {'test': 'fault injection'})
    t = make_trainer(run, **json.loads(sys.argv[2]))
    if ckpt is not None: t.resume(ckpt)
    t.fit()
""")

KINDS = ('train_step', 'train_step done', '_log done', 'checkpoint half written', 'checkpoint written, not renamed',
         'checkpoint renamed')   # each comes at least once a step, so a kill at its 1st or 2nd time always comes


def _child(run, kill_at='none:0'):
    env = {**os.environ, 'KILL_AT': kill_at, 'OMP_NUM_THREADS': '1', 'PYTHONWARNINGS': 'default'}
    return subprocess.run([sys.executable, '-c', CHILD, str(run), json.dumps(CFG)], capture_output=True, text=True,
                          timeout=300, env=env)


def _diff(a, b, where='') -> list:
    "Where two checkpoint contents differ (tensors bit for bit)."
    if isinstance(a, dict) and isinstance(b, dict):
        return [f'{where} keys'] if a.keys() != b.keys() else [d for k in a for d in _diff(a[k], b[k], f'{where}/{k}')]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return [f'{where} length'] if len(a) != len(b) else [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff(x, y, f'{where}/{i}')]
    if torch.is_tensor(a) or torch.is_tensor(b):
        same = torch.is_tensor(a) and torch.is_tensor(b) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
        return [] if same else [where]
    return [] if a == b else [where]


def _log_rows(path) -> list:
    "log.csv's rows without the wall-time column; its line ends are '\\n'."
    text = path.read_bytes()
    assert b'\r' not in text, f'{path} has \\r\\n line ends'
    return [{k: v for k, v in r.items() if k != 'seconds'} for r in csv.DictReader(io.StringIO(text.decode()))]


def _same_run(a, b):
    "The run folders `a` and `b` hold the same run: checkpoints and export byte for byte, the same log rows."
    assert sorted(p.name for p in (a / 'checkpoints').iterdir()) == sorted(p.name for p in (b / 'checkpoints').iterdir())
    for name in ('checkpoints/last.pt', 'checkpoints/previous.pt', 'checkpoints/best.pt', 'model_inference.pt'):
        if (a / name).read_bytes() != (b / name).read_bytes():
            diff = _diff(torch.load(a / name, weights_only=True), torch.load(b / name, weights_only=True))
            raise AssertionError(f'{name} differs: {diff[:8] or "same content, other bytes"}')
    rows_a, rows_b = _log_rows(a / 'log.csv'), _log_rows(b / 'log.csv')
    assert rows_a == rows_b
    keys = [(r['step'], r['phase']) for r in rows_b]
    assert len(keys) == len(set(keys)), 'a step logged twice'


def test_sigkill_at_random_moments_then_resume_is_bit_exact(tmp_path):
    "(c, d) five SIGKILLs (the first in the middle of the first checkpoint write), each resumed: the uninterrupted run, bit for bit."
    straight = tmp_path / 'straight'
    done = _child(straight)
    assert done.returncode == 0, done.stderr[-3000:]
    state = load_checkpoint(straight / 'checkpoints' / 'last.pt')
    assert state['step'] == 12 and torch.isfinite(state['training']['objective']['queue.keys']).all()   # MoCo's queue is compared too

    rng = random.Random(21)
    plan = [('checkpoint half written', 1)] + [(rng.choice(KINDS), rng.randint(1, 2)) for _ in range(4)]
    killed = tmp_path / 'killed'
    for i, (kind, at) in enumerate(plan):
        proc = _child(killed, f'{kind}:{at}')
        assert proc.returncode == -signal.SIGKILL, (kind, at, proc.returncode, proc.stderr[-3000:])
        if i == 0:   # killed inside the very first save: no checkpoint, a half-written temporary file, logged rows
            ckpts = killed / 'checkpoints'
            assert not (ckpts / 'last.pt').exists() and [p.name[:9] for p in ckpts.iterdir()] == ['.last.pt.']
            assert len(_log_rows(killed / 'log.csv')) == 1
        if i == 1: assert 'removed 1 unfinished write(s)' in proc.stderr and '.last.pt.' in proc.stderr
    last = _child(killed)
    assert last.returncode == 0, last.stderr[-3000:]
    assert not list(killed.rglob('*.tmp'))
    _same_run(straight, killed)


def _checkpoint_writes_fail(monkeypatch, from_write: int, seen: list):
    "From the `from_write`-th write of a checkpoint on, its fsync fails with ENOSPC (the disk is full)."
    real = os.fsync
    def fsync(fd):
        if '.pt.' in os.readlink(f'/proc/self/fd/{fd}'):
            seen.append(fd)
            if len(seen) >= from_write: raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)
    monkeypatch.setattr(os, 'fsync', fsync)


def test_enospc_keeps_the_previous_checkpoint_and_names_the_file(tmp_path, monkeypatch):
    "(c, d) a full disk at the 3rd checkpoint: the 2nd stays intact, the error names last.pt; resumed, the run ends exact."
    straight = make_trainer(tmp_path / 'straight', epochs_joint=1, tensorboard=False)
    straight.fit()
    run = tmp_path / 'run'
    saved = {}
    t = make_trainer(run, epochs_joint=1, tensorboard=False)
    t.callbacks.append(lambda tr, path: saved.update({path.name: path.read_bytes()}))
    with monkeypatch.context() as m:
        _checkpoint_writes_fail(m, 3, [])
        with pytest.raises(OSError, match=r'could not write the checkpoint .*last\.pt .*: No space left on device') as e:
            t.fit()
    assert e.value.errno == errno.ENOSPC
    last = run / 'checkpoints' / 'last.pt'
    assert last.read_bytes() == saved['last.pt'] and load_checkpoint(last)['step'] == 3   # the previous checkpoint, intact
    assert not list(run.rglob('*.tmp'))
    make_trainer(run, epochs_joint=1, tensorboard=False).resume(last).fit()
    for name in ('checkpoints/last.pt', 'checkpoints/best.pt', 'model_inference.pt'):
        assert (run / name).read_bytes() == (tmp_path / 'straight' / name).read_bytes(), name
    assert _log_rows(run / 'log.csv') == _log_rows(tmp_path / 'straight' / 'log.csv')


def test_enospc_before_the_first_checkpoint_restarts_with_a_new_log(tmp_path, monkeypatch):
    "(c) the first checkpoint cannot be written: a restart (no checkpoint) starts log.csv afresh, not after the old rows."
    straight = make_trainer(tmp_path / 'straight', epochs_joint=1, tensorboard=False)
    straight.fit()
    run = tmp_path / 'run'
    with monkeypatch.context() as m:
        _checkpoint_writes_fail(m, 1, [])
        with pytest.raises(OSError, match=r'could not write the checkpoint .*last\.pt') as e:
            make_trainer(run, epochs_joint=1, tensorboard=False).fit()
    assert e.value.errno == errno.ENOSPC and not (run / 'checkpoints' / 'last.pt').exists()
    assert [r['step'] for r in _log_rows(run / 'log.csv')] == ['1', '2']       # logged before the save failed
    make_trainer(run, epochs_joint=1, tensorboard=False).fit()
    assert _log_rows(run / 'log.csv') == _log_rows(tmp_path / 'straight' / 'log.csv')
    assert (run / 'checkpoints' / 'best.pt').read_bytes() == (tmp_path / 'straight' / 'checkpoints' / 'best.pt').read_bytes()
