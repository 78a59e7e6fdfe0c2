"""Training parity of blindsr's MoCo (DASR's phase 1, the encoder alone) with the official DASR code, from a stored trace.

tests/data/dasr_official_moco_trace.npz was written by `tools/dasr_encoder_parity.py --write-trace` with the official
`MoCo(Encoder)` of LongguangWang/DASR (commit 51524af): 15 steps, batch 8, LR patches 32x32, queue K=64 (it wraps
after 8 steps), m=0.999, T=0.07, Adam(lr 1e-3, betas (0.9, 0.999)), started from blindsr's initial state (torch seeded
0, `create_model('dasr_encoder', width=64)`; queue from `MoCo(..., generator=Generator().manual_seed(0))`, transposed
to the official (dim, K)) and fed the batches blindsr makes (two 128x128 patches per item of `embedded_dataset('train')`
in `EpochSampler` order, `DASRDegradation` x4, iso sigma ~ U[0.2, 4], noise-free, generator `seeded_generator(0, step)`;
the official encoder on the 0-255 scale). Here the same state and batches are rebuilt with blindsr code alone (the
official code is not needed) and blindsr's MoCo is trained the same way.

Why float64: in float32 the two implementations part after a few steps, and so do two runs of the *official* code
whose initial weights differ by one ulp (measured over these 15 steps: blindsr vs official 9.7e-3 max |loss diff|,
official vs one-ulp-nudged official 1.3e-2). Adam divides by sqrt(v) + 1e-8, and gradients that are zero up to float32
rounding (conv biases in front of BatchNorm) get steps of up to lr from rounding noise. In float64 that noise is far
below eps and the runs stay together, so the float64 replay is the exact check; float32 is checked on the first two steps.
blindsr's `MoCo.criterion` casts the logits to float32 (for autocast runs); the float64 replay uses the same loss
functions (`info_nce_loss`, `contrastive_accuracy`) without that cast.

Tolerances (measured on this CPU, torch 2.13, with 1 and 2 threads):
* float64 per-step InfoNCE: 1e-9 absolute. Measured max |blindsr - official| 2.3e-14; the one-ulp-nudged official
  run moves 6.8e-13 away, the size of rounding differences on other hardware;
* float64 final state: first conv of the query and key encoders 1e-8 (measured 7e-15; the largest difference of any
  weight in the tool's lockstep is 1.8e-10, a conv bias in front of BatchNorm, nudged official 3.2e-10); per-tensor
  sums and norms of every weight and BatchNorm buffer 1e-6 (measured 6.2e-10, 5.1e-11); queue sums 1e-9 (1.1e-13);
* float32 steps 0 and 1: 1e-4 (measured 0 and 2.0e-6; nudged official 3.0e-6);
* top-1 accuracy: equal at every step (the smallest official margin between the positive logit and the best negative
  is 0.037, far above the differences above).
A wrong momentum (0.99) or temperature (0.1) or a missing momentum update changes the losses by more than 1e-6 within
two steps: `test_trace_detects_wrong_hyperparameters` checks that the comparison can fail.
"""
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from blindsr.contrastive import MoCo, contrastive_accuracy, info_nce_loss
from blindsr.core import seeded_generator
from blindsr.data import EMBEDDED_SPLIT, EpochSampler, embedded_dataset
from blindsr.degradations import DASRDegradation
from blindsr.models import create_model

TRACE = Path(__file__).parent / 'data' / 'dasr_official_moco_trace.npz'
REGENERATE = ("regenerate the trace with: python tools/dasr_encoder_parity.py --official <DASR export> --out /tmp/x "
              "--write-trace tests/data/dasr_official_moco_trace.npz --trace-only")
LOSS_TOL_64, WEIGHT_TOL_64, STAT_TOL_64, QUEUE_TOL_64, LOSS_TOL_32 = 1e-9, 1e-8, 1e-6, 1e-9, 1e-4


class MoCoExactLoss(MoCo):
    "blindsr's MoCo with the loss taken in the logits' own precision (MoCo.criterion casts to float32; see the text above)."
    def criterion(self, logits, labels):
        return info_nce_loss(logits, labels), contrastive_accuracy(logits.detach(), labels)


@pytest.fixture(scope='module')
def trace():
    with np.load(TRACE) as f: t = {k: f[k] for k in f.files}
    return {k: v.item() if v.ndim == 0 and v.dtype.kind in 'iufb' else v for k, v in t.items()}


def lr_batches(t) -> list:
    "The traced LR batches (B, 2, 3, P, P) on the 0-255 scale, rebuilt with blindsr's data and degradation code."
    n_images = len(EMBEDDED_SPLIT['train'])   # repeated so that no crop pair is drawn twice
    ds = embedded_dataset('train', patch_size=t['lr_patch'] * t['scale'], n_patches=int(t['n_patches']), seed=t['seed'],
                          repeat=math.ceil(t['steps'] * t['batch'] / n_images))
    order = EpochSampler(len(ds), t['batch'], t['steps'], t['seed']).indices()
    degradation = DASRDegradation(t['scale'], 'iso', sigma=tuple(t['sigma_range']), noise=t['noise'], kernel_size=t['kernel_size'])
    out = []
    for step in range(t['steps']):
        hr = torch.stack([ds[i] for i in order[step * t['batch']:(step + 1) * t['batch']]])
        with torch.no_grad(): lr, _ = degradation(hr, generator=seeded_generator(t['seed'], step))
        out.append((lr * 255).round())
    return out


@pytest.fixture(scope='module')
def batches(trace): return lr_batches(trace)


def initial_state(t, dtype, **overrides):
    "blindsr's encoder and MoCo as the trace started them (`overrides`: K, m or T, to check that the comparison fails)."
    torch.manual_seed(t['seed'])
    encoder = create_model('dasr_encoder', width=t['width']).train()
    cls = MoCoExactLoss if dtype == torch.float64 else MoCo
    kw = {'K': t['K'], 'm': t['m'], 'T': t['T'], **overrides}
    moco = cls(encoder, generator=torch.Generator().manual_seed(t['seed']), **kw).train()
    return encoder.to(dtype), moco.to(dtype)


def replay(t, batches, dtype=torch.float64, steps=None, **overrides) -> dict:
    "Train blindsr's MoCo on the traced batches for `steps` steps; per-step loss and top-1, and the final state."
    encoder, moco = initial_state(t, dtype, **overrides)
    opt = torch.optim.Adam(encoder.parameters(), lr=t['adam_lr'], betas=tuple(t['adam_betas']), eps=t['adam_eps'])
    losses, accs = [], []
    for lr255 in batches[:steps]:
        x = lr255.to(dtype) / 255            # blindsr's encoder takes [0, 1] and multiplies by 255 itself
        _, loss, acc = moco(encoder, x[:, 0], x[:, 1])
        opt.zero_grad(); loss.backward(); opt.step()
        losses.append(loss.item()); accs.append(acc.item())
    return dict(loss=np.array(losses), acc=np.array(accs), q=encoder.state_dict(), k=moco.encoder_k.state_dict(), queue=moco.queue)


@pytest.fixture(scope='module')
def run64(trace, batches): return replay(trace, batches, torch.float64)


def test_trace_recipe(trace):
    assert (trace['batch'], trace['K'], trace['lr_patch'], trace['steps'], trace['width']) == (8, 64, 32, 15, 64)
    assert trace['K'] % trace['batch'] == 0 and trace['steps'] * trace['batch'] > trace['K']   # the queue wraps
    assert str(trace['dtype']) == 'float64' and str(trace['official_commit']) == '51524af'


def test_initial_state_and_batches_are_the_traced_ones(trace, batches):
    "If this fails, the comparison below is void: blindsr's init, queue, data or degradation changed."
    encoder, moco = initial_state(trace, torch.float32)
    param_sum = float(sum(p.detach().double().sum() for p in encoder.parameters()))
    assert param_sum == pytest.approx(trace['init_param_sum'], rel=1e-12), f"blindsr's initial encoder changed; {REGENERATE}"
    assert float(moco.queue.keys.double().sum()) == pytest.approx(trace['init_queue_sum'], rel=1e-12, abs=1e-9), \
        f"blindsr's initial queue changed; {REGENERATE}"
    sums = np.array([[int(lr[:, 0].sum()), int(lr[:, 1].sum())] for lr in batches])
    bad = np.flatnonzero((sums != np.stack([trace['lr_q_sum'], trace['lr_k_sum']], 1)).any(1))
    assert not len(bad), (f"the LR batches of steps {bad.tolist()} differ from the traced ones (blindsr.data or "
                          f"blindsr.degradations changed, or this platform rounds a pixel differently); {REGENERATE}")


def test_float64_losses_and_accuracies_match_official(trace, run64):
    err = np.abs(run64['loss'] - trace['loss'])
    assert err.max() <= LOSS_TOL_64, (f"InfoNCE differs from the official MoCo by up to {err.max():.3g} (step "
                                      f"{int(err.argmax())}): blindsr {run64['loss'].round(9)} vs official {trace['loss'].round(9)}")
    assert np.array_equal(run64['acc'], trace['acc']), f"top-1: blindsr {run64['acc']} vs official {trace['acc']}"


def test_float64_final_state_matches_official(trace, run64):
    "The query and key encoders and the queue after the last step: the momentum update and the FIFO, not only the losses."
    for side in ('q', 'k'):
        sd = run64[side]
        conv0 = sd['features.0.weight'].numpy()
        err = np.abs(conv0 - trace[f'final_{side}_conv0']).max()
        assert err <= WEIGHT_TOL_64, f"final {side} encoder's first conv differs from the official by {err:.3g}"
        for name, s, n in zip(trace['state_names'], trace[f'final_{side}_sums'], trace[f'final_{side}_norms']):
            v = sd[str(name)].double()
            assert abs(float(v.sum()) - s) <= STAT_TOL_64 and abs(float(v.norm()) - n) <= STAT_TOL_64, \
                f"final {side} encoder {name}: sum {float(v.sum())!r} / norm {float(v.norm())!r}, official {s!r} / {n!r}"
    queue = run64['queue']
    assert int(queue.ptr) == trace['final_queue_ptr']
    assert abs(float(queue.keys.sum()) - trace['final_queue_sum']) <= QUEUE_TOL_64
    assert abs(float(queue.keys.abs().sum()) - trace['final_queue_abs_sum']) <= QUEUE_TOL_64


def test_float32_first_steps_match_official(trace, batches):
    "blindsr's MoCo as it trains (float32, its own criterion) on the first two steps, before float32 rounding noise grows."
    run = replay(trace, batches, torch.float32, steps=2)
    err = np.abs(run['loss'] - trace['loss_float32'][:2])
    assert err.max() <= LOSS_TOL_32, f"float32 InfoNCE differs from the official by {err.max():.3g}: {run['loss']} vs {trace['loss_float32'][:2]}"
    assert np.array_equal(run['acc'], trace['acc_float32'][:2])


@pytest.mark.parametrize('override', [dict(m=0.99), dict(m=1.0), dict(T=0.1)], ids=['m=0.99', 'no momentum update', 'T=0.1'])
def test_trace_detects_wrong_hyperparameters(trace, batches, override):
    """The comparison can fail: a MoCo with another momentum or temperature leaves the official trace within 2 steps
    (measured at step 1: m=0.99 5.1e-2, no momentum update 5.8e-3, T=0.1 7.6e-2, far above the 1e-9 tolerance)."""
    run = replay(trace, batches, torch.float64, steps=2, **override)
    assert np.abs(run['loss'] - trace['loss'][:2]).max() > 1e3 * LOSS_TOL_64
