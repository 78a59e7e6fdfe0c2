"""Training parity of DASR's encoder phase (phase 1: MoCo) between blindsr and the official DASR code.

    python tools/dasr_encoder_parity.py --official /tmp/official_dasr --out DIR
        [--steps N] [--seeds 0 1 ...] [--lockstep-steps N] [--lockstep64-steps N] [--batch B] [--lr-patch P] [--K K]
        [--write-trace tests/data/dasr_official_moco_trace.npz] [--trace-only] [--skip-free-run]

`--official` is an export of https://github.com/LongguangWang/DASR (commit 51524af): its `moco/builder.py`,
`model/blindsr.py`, `utils/util.py` and `data/common.py` are imported from there, never copied into blindsr.
The official code calls `.cuda()` everywhere; this script runs everything on the CPU and makes `Tensor.cuda` a
no-op in its own process (the official files are not edited).

Two comparisons:

1. Lockstep: the official `MoCo(Encoder)` and blindsr's `MoCo(create_model('dasr_encoder'))` start from the same
   weights and queue (blindsr's, built from a seed; the official queue is (dim, K), ours (K, dim)), each with its own
   Adam (lr 1e-3, betas (0.9, 0.999), as the official trainer's phase 1), and are stepped on identical LR batches
   (one `DASRDegradation` of HR patches of the embedded training photographs; the official encoder gets them on the
   0-255 scale, ours on [0, 1]). Per step: both InfoNCE losses and top-1 accuracies, and how far the weights drift.
   Run in float32 (how both train) and in float64. Beside them runs a control: the official code from a start whose
   weights are nudged by one ulp, i.e. how far rounding alone carries two runs of the same code apart. In float32 that
   is as far as blindsr goes (Adam turns the rounding noise of gradients that are ~0, e.g. conv biases before
   BatchNorm, into steps of up to lr), so float32 can only show "as close as the official code is to itself";
   float64 shows whether the two compute the same thing.
2. Free run: each implementation with its own pipeline (official: its crops and augmentation (`data/common.py`), its
   `SRMDPreprocessing`, its MoCo and the phase-1 step of its `trainer.py`, written here around its modules; blindsr:
   `DASRMethod` + `Trainer`, encoder phase only) on the same photographs and budgets, several seeds; then linear
   probes of each final encoder's representation (sigma R^2 on held-out images, untrained encoders as the floor).

Writes DIR/parity.json (all numbers), DIR/parity.png and prints a summary. `--write-trace` also stores a small
lockstep trace of the official code that tests/test_moco_training_parity.py replays with blindsr code alone.
"""
from __future__ import annotations

import argparse
import copy
import importlib
import importlib.util
import json
import math
import random
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
if importlib.util.find_spec('blindsr') is None: sys.path.insert(0, str(ROOT))   # a checkout without blindsr installed

from blindsr.analysis import collect_representations, degradation_grid, probe_representation  # noqa: E402
from blindsr.contrastive import MoCo, contrastive_accuracy, info_nce_loss  # noqa: E402
from blindsr.core import read_image, seeded_generator  # noqa: E402
from blindsr.data import EMBEDDED_SPLIT, EpochSampler, embedded_dataset, embedded_images  # noqa: E402
from blindsr.degradations import DASRDegradation  # noqa: E402
from blindsr.methods import DASRMethod  # noqa: E402
from blindsr.models import create_model  # noqa: E402
from blindsr.models.dasr import map_official_dasr_key  # noqa: E402
from blindsr.train import Trainer, TrainConfig, read_training_log  # noqa: E402

OFFICIAL_FILES = ('moco/builder.py', 'model/blindsr.py', 'model/common.py', 'utils/util.py', 'data/common.py', 'trainer.py')
SCALE = 4
SIGMA_RANGE = (0.2, 4.0)     # the official defaults (option.py sig_min / sig_max) and blindsr's x4 training range
ADAM = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8)   # official phase 1: lr_encoder 1e-3, beta1, beta2, epsilon
PROBE_SIGMAS, PROBE_CROPS, PROBE_LR = (0.0, 1.2, 2.4, 3.6), 16, 48
TRACE_CONFIG = dict(seed=0, batch=8, K=64, lr_patch=32, steps=15, m=0.999, T=0.07, width=64)   # what the CI test replays


# ----------------------------------------------------------------------------------------------------------- official
def load_official(path) -> SimpleNamespace:
    """The official modules from an export at `path`: MoCo, Encoder, `utils.util` (SRMDPreprocessing) and
    `data/common.py` (crops, augmentation). Raises a clear error if `path` is not a DASR export."""
    path = Path(path).resolve()
    missing = [f for f in OFFICIAL_FILES if not (path / f).is_file()]
    if missing:
        raise SystemExit(f"--official {path}: not an export of LongguangWang/DASR, it lacks {', '.join(missing)} "
                         f"(export it with: git --git-dir=<fetched repo> archive HEAD | tar -x -C {path})")
    # The official code moves every tensor it makes to the GPU; here everything runs on the CPU.
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    clashes = [n for n in ('model', 'moco', 'utils') if n in sys.modules]
    if clashes: raise SystemExit(f"modules named {clashes} are already imported; the official packages cannot be loaded beside them")
    sys.path.insert(0, str(path))
    mods = {n: importlib.import_module(n) for n in ('moco.builder', 'model.blindsr', 'utils.util')}
    for n, m in mods.items():
        if not Path(m.__file__).resolve().is_relative_to(path):
            raise SystemExit(f"imported {n} from {m.__file__}, not from {path}: a package of that name shadows the official one")
    # data/__init__.py imports the official DataLoader subclass (old torch internals); its common.py is all we need
    spec = importlib.util.spec_from_file_location('official_dasr_data_common', path / 'data' / 'common.py')
    common = importlib.util.module_from_spec(spec); spec.loader.exec_module(common)
    return SimpleNamespace(MoCo=mods['moco.builder'].MoCo, Encoder=mods['model.blindsr'].Encoder,
                           util=mods['utils.util'], data_common=common, path=path)


def blindsr_encoder_key(official_key: str) -> str:
    "blindsr's `DegradationEncoder` name of an official `Encoder` key ('E.3.weight' -> 'features.3.weight')."
    mapped = map_official_dasr_key('E.encoder_q.' + official_key)
    if mapped is None or not mapped.startswith('encoder.'): raise KeyError(f"official encoder key {official_key!r} has no blindsr name")
    return mapped[len('encoder.'):]


def official_moco_from_blindsr(off, encoder: nn.Module, moco: MoCo) -> nn.Module:
    """An official MoCo holding exactly blindsr's state: query encoder = `encoder`, key encoder = `moco.encoder_k`,
    queue = `moco.queue` transposed (official (dim, K), blindsr (K, dim)). strict loading checks the one-to-one map."""
    net = off.MoCo(base_encoder=off.Encoder, dim=moco.queue.dim, K=moco.queue.K, m=moco.m, T=moco.T)
    net.to(moco.queue.keys.dtype)   # before loading: loading into float32 would round a float64 state
    sides = {'encoder_q': encoder.state_dict(), 'encoder_k': moco.encoder_k.state_dict()}
    state = {}
    for name in net.state_dict():
        side, _, rest = name.partition('.')
        if side in sides: state[name] = sides[side][blindsr_encoder_key(rest)]
    state['queue'] = moco.queue.keys.t().contiguous()
    state['queue_ptr'] = moco.queue.ptr.reshape(1)
    net.load_state_dict(state, strict=True)
    return net


def official_phase1_loss(net: nn.Module, lr255: torch.Tensor, criterion) -> tuple[torch.Tensor, torch.Tensor]:
    """The official trainer's phase-1 forward: `E(im_q=lr[:, 0], im_k=lr[:, 1])` on the 0-255 scale, CrossEntropy of
    its logits; returns (loss, logits)."""
    _, logits, labels = net(im_q=lr255[:, 0], im_k=lr255[:, 1])
    return criterion(logits, labels), logits


def top1(logits: torch.Tensor) -> float:
    "Fraction of rows whose positive (column 0) is the highest logit (what blindsr's contrastive_accuracy computes)."
    return float((logits.argmax(1) == 0).float().mean())


def min_margin(logits: torch.Tensor) -> float:
    "Smallest |positive - best negative| logit over the rows: how close a top-1 decision came to flipping."
    return float((logits[:, 0] - logits[:, 1:].max(1).values).abs().min())


# ------------------------------------------------------------------------------------------------------------ blindsr
class MoCoExactLoss(MoCo):
    """blindsr's MoCo with its loss computed in the logits' own precision. `MoCo.criterion` casts the logits to
    float32 (so that a bf16/fp16 autocast run takes its loss in float32): a no-op in float32 training, but in a float64
    replay the cast would put float32 rounding into every gradient. Everything else is `MoCo`'s own code."""
    def criterion(self, logits, labels):
        return info_nce_loss(logits, labels), contrastive_accuracy(logits.detach(), labels)


def blindsr_moco(seed: int, K: int, m: float, T: float, width: int = 64, dtype=torch.float32) -> tuple[nn.Module, MoCo]:
    """blindsr's encoder (torch seeded with `seed`) and its MoCo (queue from a generator seeded with `seed`), in
    `dtype` (float64: `MoCoExactLoss`)."""
    torch.manual_seed(seed)
    encoder = create_model('dasr_encoder', width=width).train()
    cls = MoCo if dtype == torch.float32 else MoCoExactLoss
    moco = cls(encoder, K=K, m=m, T=T, generator=torch.Generator().manual_seed(seed)).train()
    return encoder.to(dtype), moco.to(dtype)


def training_patches(seed: int, batch: int, lr_patch: int, steps: int):
    """The HR patch batches (B, 2, 3, P*4, P*4) in [0, 1] that blindsr's Trainer draws for `steps` steps: the
    embedded training photographs, repeated so that no item (crop pair) is drawn twice, in `EpochSampler` order."""
    n_images = len(EMBEDDED_SPLIT['train'])
    ds = embedded_dataset('train', patch_size=lr_patch * SCALE, n_patches=2, seed=seed, repeat=math.ceil(steps * batch / n_images))
    order = EpochSampler(len(ds), batch, steps, seed).indices()
    for s in range(steps): yield torch.stack([ds[i] for i in order[s * batch:(s + 1) * batch]])


def max_weight_diff(official: nn.Module, ours: nn.Module) -> tuple[float, float]:
    "(max |difference| over parameters, over buffers) of an official Encoder and a blindsr DegradationEncoder."
    ours_sd, params = ours.state_dict(), {n for n, _ in official.named_parameters()}
    worst = {True: 0.0, False: 0.0}
    for name, v in official.state_dict().items():
        d = float((v.double() - ours_sd[blindsr_encoder_key(name)].double()).abs().max())
        worst[name in params] = max(worst[name in params], d)
    return worst[True], worst[False]


# ----------------------------------------------------------------------------------------------------------- lockstep
def nudged_copy(net: nn.Module) -> nn.Module:
    """A copy of an official MoCo with every encoder parameter moved one ulp up: the control run, which tells how far
    rounding-level differences alone carry two runs of the *same* code apart."""
    clone = copy.deepcopy(net)
    with torch.no_grad():
        for p in clone.parameters(): p.copy_(torch.nextafter(p, torch.full_like(p, math.inf)))
    return clone


def lockstep(off, seed: int, steps: int, batch: int, lr_patch: int, K: int, m: float = 0.999, T: float = 0.07,
             width: int = 64, dtype: torch.dtype = torch.float32, control: bool = True, log_every: int = 0) -> dict:
    """Both MoCos from blindsr's initial state, in `dtype`, stepped on identical batches: per-step losses, top-1
    accuracies and how far weights and queues drift apart. With `control`, also an official run from a one-ulp
    nudged start (see `nudged_copy`), compared with the official run the same way."""
    encoder, moco = blindsr_moco(seed, K, m, T, width, dtype)
    with torch.no_grad():   # of the float32 initial state, which any dtype starts from
        init = {'param_sum': float(sum(p.float().double().sum() for p in encoder.parameters())),
                'queue_sum': float(moco.queue.keys.float().double().sum())}
    nets = {'official': official_moco_from_blindsr(off, encoder, moco).train()}
    if control: nets['control'] = nudged_copy(nets['official'])
    # the official optimiser takes every trainable parameter (utility.make_optimizer): the query encoder's
    opts = {n: torch.optim.Adam([p for p in net.parameters() if p.requires_grad], **ADAM) for n, net in nets.items()}
    opt_ours = torch.optim.Adam(encoder.parameters(), **ADAM)
    criterion = nn.CrossEntropyLoss()
    degradation = DASRDegradation(SCALE, 'iso', sigma=SIGMA_RANGE, noise=0.0)
    rec, t0 = {}, time.time()
    add = lambda **kw: [rec.setdefault(k, []).append(v) for k, v in kw.items()]
    for step, hr in enumerate(training_patches(seed, batch, lr_patch, steps)):
        with torch.no_grad(): lr, _ = degradation(hr, generator=seeded_generator(seed, step))   # what DASRMethod draws
        lr255 = (lr * 255).round().to(dtype)     # the official scale; integers, exact in any float type
        x = lr255 / 255                          # blindsr's [0, 1]; its encoder multiplies by 255 again
        add(lr_q_sum=int(lr255[:, 0].sum()), lr_k_sum=int(lr255[:, 1].sum()), roundtrip_exact=bool(torch.equal(x * 255, lr255)))
        for name, net in nets.items():
            loss, logits = official_phase1_loss(net, lr255, criterion)
            opts[name].zero_grad(); loss.backward(); opts[name].step()
            add(**{f'loss_{name}': loss.item(), f'acc_{name}': top1(logits.detach()), f'margin_{name}': min_margin(logits.detach())})
        _, loss_b, acc_b = moco(encoder, x[:, 0], x[:, 1])
        opt_ours.zero_grad(); loss_b.backward(); opt_ours.step()
        add(loss_blindsr=loss_b.item(), acc_blindsr=acc_b.item())
        ref = nets['official']
        dq, dk = max_weight_diff(ref.encoder_q, encoder), max_weight_diff(ref.encoder_k, moco.encoder_k)
        add(dq_param=dq[0], dq_buffer=dq[1], dk_param=dk[0], dk_buffer=dk[1],
            dqueue=float((ref.queue.t() - moco.queue.keys).abs().max()))
        if control:
            c = nets['control']
            add(control_dq_param=max_weight_diff(ref.encoder_q, _as_blindsr_encoder(off, c.encoder_q, width))[0],
                control_dqueue=float((ref.queue - c.queue).abs().max()))
        if log_every and (step + 1) % log_every == 0:
            print(f"  lockstep {dtype} {step + 1}/{steps}: loss official {rec['loss_official'][-1]:.6f} blindsr "
                  f"{loss_b.item():.6f}, max |w_q diff| {dq[0]:.2e} ({time.time() - t0:.0f} s)", flush=True)
    return dict(config=dict(seed=seed, steps=steps, batch=batch, lr_patch=lr_patch, K=K, m=m, T=T, width=width,
                            dtype=str(dtype).replace('torch.', '')),
                init=init, per_step=rec, summary=lockstep_summary(rec), seconds=time.time() - t0,
                final=dict(official=nets['official'], blindsr_encoder=encoder, blindsr_moco=moco))


def _as_blindsr_encoder(off, official_encoder: nn.Module, width: int) -> nn.Module:
    "A blindsr DegradationEncoder holding an official Encoder's state (to compare two official runs with one function)."
    enc = create_model('dasr_encoder', width=width).to(next(official_encoder.parameters()).dtype)
    enc.load_state_dict({blindsr_encoder_key(k): v for k, v in official_encoder.state_dict().items()})
    return enc


def lockstep_summary(rec: dict) -> dict:
    "Largest differences over the steps: blindsr vs official, and (if run) the nudged official control vs official."
    diff = lambda a, b: np.abs(np.asarray(rec[a]) - np.asarray(rec[b]))
    out = dict(max_abs_loss_diff=float(diff('loss_official', 'loss_blindsr').max()),
               max_abs_acc_diff=float(diff('acc_official', 'acc_blindsr').max()),
               steps_with_acc_diff=int((diff('acc_official', 'acc_blindsr') > 0).sum()),
               max_weight_diff_q=max(rec['dq_param']), max_weight_diff_k=max(rec['dk_param']),
               max_buffer_diff=max(rec['dq_buffer'] + rec['dk_buffer']), max_queue_diff=max(rec['dqueue']),
               min_margin_official=min(rec['margin_official']), inputs_roundtrip_exact=all(rec['roundtrip_exact']))
    if 'loss_control' in rec:
        out.update(control_max_abs_loss_diff=float(diff('loss_official', 'loss_control').max()),
                   control_max_abs_acc_diff=float(diff('acc_official', 'acc_control').max()),
                   control_max_weight_diff_q=max(rec['control_dq_param']))
    return out


def write_trace(path, r64: dict, r32: dict):
    """A small npz of the official lockstep traces for tests/test_moco_training_parity.py: the recipe (seeds, sizes,
    degradation, optimiser), checksums of the batches and of the initial state, the official per-step losses and
    top-1 of the float64 run `r64` and the float32 run `r32`, and fingerprints of the float64 run's final state."""
    cfg, rec, net = r64['config'], r64['per_step'], r64['final']['official']
    names, stats = [], {k: [] for k in ('q_sums', 'q_norms', 'k_sums', 'k_norms')}
    for (name, pq), pk in zip(net.encoder_q.state_dict().items(), net.encoder_k.state_dict().values()):
        names.append(blindsr_encoder_key(name))
        for side, v in (('q', pq.double()), ('k', pk.double())):
            stats[f'{side}_sums'].append(float(v.sum())); stats[f'{side}_norms'].append(float(v.norm()))
    assert r32['config'] == {**cfg, 'dtype': 'float32'} and r32['per_step']['lr_q_sum'] == rec['lr_q_sum']
    out = dict(
        **{k: np.asarray(v) for k, v in cfg.items()}, scale=SCALE, n_patches=2, sigma_range=np.asarray(SIGMA_RANGE),
        noise=0.0, kernel_size=21, adam_lr=ADAM['lr'], adam_betas=np.asarray(ADAM['betas']), adam_eps=ADAM['eps'],
        init_param_sum=r64['init']['param_sum'], init_queue_sum=r64['init']['queue_sum'],
        lr_q_sum=np.asarray(rec['lr_q_sum'], np.int64), lr_k_sum=np.asarray(rec['lr_k_sum'], np.int64),
        loss=np.asarray(rec['loss_official']), acc=np.asarray(rec['acc_official']), margin=np.asarray(rec['margin_official']),
        control_loss=np.asarray(rec['loss_control']),            # the official run from a one-ulp nudged start
        blindsr_loss=np.asarray(rec['loss_blindsr']),            # what blindsr gave when the trace was written
        loss_float32=np.asarray(r32['per_step']['loss_official']), acc_float32=np.asarray(r32['per_step']['acc_official']),
        control_loss_float32=np.asarray(r32['per_step']['loss_control']),
        state_names=np.asarray(names), **{f'final_{k}': np.asarray(v) for k, v in stats.items()},
        final_q_conv0=net.encoder_q.state_dict()['E.0.weight'].numpy(), final_k_conv0=net.encoder_k.state_dict()['E.0.weight'].numpy(),
        final_queue_sum=float(net.queue.sum()), final_queue_abs_sum=float(net.queue.abs().sum()),
        final_queue_ptr=int(net.queue_ptr), torch_version=torch.__version__, official_commit='51524af')
    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **out)
    return path


# ---------------------------------------------------------------------------------------------------------- free runs
def official_free_run(off, seed: int, steps: int, batch: int, lr_patch: int, K: int, m: float, T: float, log_every=100) -> dict:
    """The official phase 1 on the embedded photographs: its crops (two per image, after one augmentation of the
    whole image), its SRMDPreprocessing (iso Gaussian, sigma in [0.2, 4], noise-free), its MoCo with its own random
    init and queue, CrossEntropy, Adam. Python's and torch's global generators are seeded with `seed`, as its code uses them."""
    random.seed(seed); np.random.seed(seed); torch.manual_seed(seed)
    images = [(x * 255).round().byte().permute(1, 2, 0).numpy() for x in embedded_images('train').values()]   # HWC uint8, as read
    net = off.MoCo(base_encoder=off.Encoder, dim=256, K=K, m=m, T=T).train()
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], **ADAM)
    criterion = nn.CrossEntropyLoss()
    degrade = off.util.SRMDPreprocessing(SCALE, kernel_size=21, blur_type='iso_gaussian', sig_min=SIGMA_RANGE[0],
                                         sig_max=SIGMA_RANGE[1], noise=0.0)
    order = [i % len(images) for i in range(math.ceil(steps * batch / len(images)) * len(images))]
    random.shuffle(order)   # the shuffled loader over the repeated image list
    c = off.data_common
    init_encoder = _copy_official_encoder(off, net.encoder_q)
    losses, accs, t0 = [], [], time.time()
    for step in range(steps):
        items = []
        for i in order[step * batch:(step + 1) * batch]:
            img = c.augment(images[i])
            items.append(torch.stack([c.np2Tensor(c.get_patch(img, lr_patch, SCALE), rgb_range=255) for _ in range(2)]))
        lr, _ = degrade(torch.stack(items))
        loss, logits = official_phase1_loss(net, lr, criterion)
        opt.zero_grad(); loss.backward(); opt.step()
        losses.append(loss.item()); accs.append(top1(logits.detach()))
        if log_every and (step + 1) % log_every == 0:
            print(f"  official seed {seed} {step + 1}/{steps}: loss {np.mean(losses[-log_every:]):.4f} "
                  f"top-1 {np.mean(accs[-log_every:]):.3f} ({time.time() - t0:.0f} s)", flush=True)
    return dict(loss=losses, acc=accs, seconds=time.time() - t0, encoder=net.encoder_q, init_encoder=init_encoder)


def _copy_official_encoder(off, encoder: nn.Module) -> nn.Module:
    "A separate official Encoder with `encoder`'s current state (the untrained floor of the probe)."
    clone = off.Encoder(); clone.load_state_dict(encoder.state_dict()); return clone


def blindsr_free_run(seed: int, steps: int, batch: int, lr_patch: int, K: int, m: float, T: float, out_dir) -> dict:
    """blindsr's phase 1: a paper-size BlindSR x4, `DASRMethod('infonce')` (its default DASRDegradation x4: iso
    Gaussian, sigma in [0.2, 4], noise-free) and the `Trainer` for `steps` encoder steps (one epoch, no joint phase)."""
    torch.manual_seed(seed)
    model = create_model('blindsr', scale=SCALE)
    init_encoder = copy.deepcopy(model.encoder)
    method = DASRMethod(model, 'infonce', K=K, m=m, T=T, generator=torch.Generator().manual_seed(seed))
    n_images = len(EMBEDDED_SPLIT['train'])
    data = embedded_dataset('train', patch_size=lr_patch * SCALE, n_patches=2, seed=seed, repeat=math.ceil(steps * batch / n_images))
    cfg = TrainConfig(epochs_encoder=1, epochs_joint=0, steps_per_epoch=steps, batch_size=batch, lr_encoder=ADAM['lr'],
                      seed=seed, device='cpu', progress=False, val_every=0)
    t0 = time.time()
    Trainer(method, data, cfg, out_dir, log_every=1).fit()
    log = read_training_log(Path(out_dir) / 'log.csv')
    rows = [i for i, p in enumerate(log['phase']) if p == 'encoder']
    return dict(loss=[log['loss_contrast'][i] for i in rows], acc=[log['contrast_acc'][i] for i in rows],
                seconds=time.time() - t0, encoder=model.encoder, init_encoder=init_encoder)


# --------------------------------------------------------------------------------------------------------------- probe
class Representation(nn.Module):
    "The pooled representation `fea` of an encoder returning (fea, proj), for LR in [0, 1] (`gain` 255: the official one)."
    def __init__(self, encoder: nn.Module, gain: float = 1.0):
        super().__init__()
        self.encoder, self.gain = encoder, gain

    def forward(self, x): return self.encoder(x * self.gain)[0]


def probe_images(set5) -> dict:
    "Held-out HR images: the embedded validation photographs and Set5 (if its folder exists)."
    images = dict(embedded_images('val'))
    set5 = Path(set5)
    if set5.is_dir():
        for p in sorted(set5.glob('*.png')): images[f'Set5/{p.stem}'] = read_image(p)[0]
    else: print(f"warning: {set5} not found; probing on the {len(images)} embedded validation images only")
    return images


def probe_sigma(encoder: nn.Module, images: dict, gain: float = 1.0, seed: int = 0) -> dict:
    "Grouped (by image) cross-validated ridge R^2 of the blur width from the representation, in eval mode."
    feats, labels = collect_representations(Representation(encoder, gain), images, degradation_grid(PROBE_SIGMAS, (0.0,), SCALE),
                                            crops_per_image=PROBE_CROPS, lr_size=PROBE_LR, generator=torch.Generator().manual_seed(seed))
    res = probe_representation(feats, labels, regress='sigma', classify=None, groups='image')
    return dict(r2=res['sigma_r2'], r2_folds=res['sigma_r2_folds'], r2_chance=res['sigma_r2_chance'], n_samples=res['n_samples'])


# ------------------------------------------------------------------------------------------------------------- report
def tail_mean(x, n: int) -> float: return float(np.mean(x[-n:]))


def smooth(x, n: int) -> np.ndarray:
    "Trailing running mean over `n` steps (shorter at the start)."
    c = np.cumsum(np.insert(np.asarray(x, float), 0, 0.0))
    i = np.arange(1, len(x) + 1)
    return (c[i] - c[np.maximum(i - n, 0)]) / np.minimum(i, n)


def free_run_summary(runs: dict, window: int) -> dict:
    "Per implementation: the final (last-`window`-steps mean) loss and top-1 per seed, their mean and half-range."
    out = {}
    for impl, by_seed in runs.items():
        fl = {s: tail_mean(r['loss'], window) for s, r in by_seed.items()}
        fa = {s: tail_mean(r['acc'], window) for s, r in by_seed.items()}
        out[impl] = dict(final_loss=fl, final_acc=fa,
                         loss_mean=float(np.mean(list(fl.values()))), loss_half_range=float(np.ptp(list(fl.values())) / 2),
                         acc_mean=float(np.mean(list(fa.values()))), acc_half_range=float(np.ptp(list(fa.values())) / 2))
    o, b = out['official'], out['blindsr']
    out['blindsr_within_official_range'] = dict(
        loss=bool(min(o['final_loss'].values()) <= b['loss_mean'] <= max(o['final_loss'].values())),
        acc=bool(min(o['final_acc'].values()) <= b['acc_mean'] <= max(o['final_acc'].values())),
        loss_gap=b['loss_mean'] - o['loss_mean'], acc_gap=b['acc_mean'] - o['acc_mean'])
    return out


def _plot_lockstep(ax, ls: dict):
    "Per-step |loss difference| to the official run: blindsr's and the nudged official control's; weight drift dashed."
    r, c = ls['per_step'], ls['config']
    steps = np.arange(1, len(r['loss_official']) + 1)
    floor = 1e-16
    for name, color in (('blindsr', 'tab:orange'), ('control', 'tab:gray')):
        label = 'blindsr' if name == 'blindsr' else 'official, 1-ulp nudged start'
        ax.semilogy(steps, np.maximum(np.abs(np.subtract(r['loss_official'], r[f'loss_{name}'])), floor), color=color,
                    label=f'|loss diff|: {label}')
    ax.semilogy(steps, np.maximum(r['dq_param'], floor), '--', color='tab:orange', lw=1, label='max |w_q diff|: blindsr')
    ax.semilogy(steps, np.maximum(r['control_dq_param'], floor), '--', color='tab:gray', lw=1, label='max |w_q diff|: nudged')
    flips = np.abs(np.subtract(r['acc_official'], r['acc_blindsr'])) > 0
    if flips.any(): ax.plot(steps[flips], np.full(flips.sum(), 1.0), 'rx', label='top-1 differs')
    ax.set_title(f"lockstep in {c['dtype']}: difference to the official run\n"
                 f"(same start and batches; B {c['batch']}, LR {c['lr_patch']}, K {c['K']}, seed {c['seed']})", fontsize=10)
    ax.set_xlabel('step'); ax.legend(fontsize=7)


def _plot_probe(ax, probe: dict, colors: dict):
    labels, vals, cols = [], [], []
    for kind in ('trained', 'untrained'):
        for impl in ('official', 'blindsr'):
            for seed, p in probe[impl][kind].items():
                labels.append(f"{impl}{' init' if kind == 'untrained' else ''} s{seed}")
                vals.append(p['r2']); cols.append(colors[impl] if kind == 'trained' else '0.7')
    ax.bar(range(len(vals)), vals, color=cols)
    for i, v in enumerate(vals): ax.text(i, max(v, 0), f'{v:.2f}', ha='center', va='bottom', fontsize=7)
    ax.set_xticks(range(len(vals))); ax.set_xticklabels(labels, fontsize=7, rotation=45, ha='right')
    ax.set_ylabel('sigma R^2 (CV grouped by image)')
    ax.set_title(f"linear probe of the final encoders (grey: untrained)\nheld-out images, sigma {PROBE_SIGMAS}", fontsize=10)


def plot(result: dict, path, window: int):
    "parity.png: the lockstep differences, the free-run curves of both implementations and the probes."
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 3, figsize=(19, 10))
    colors = {'official': 'tab:blue', 'blindsr': 'tab:orange'}
    for ax, dtype in zip(axes[0, :2], ('float32', 'float64')):
        if dtype in result.get('lockstep', {}): _plot_lockstep(ax, result['lockstep'][dtype])
        else: ax.axis('off')
    fr = result.get('free_run')
    if not fr:
        for ax in (axes[0, 2], *axes[1]): ax.axis('off')
    else:
        c = fr['config']
        for ax, key, label in ((axes[1, 0], 'loss', 'InfoNCE loss'), (axes[1, 1], 'acc', 'top-1 (positive of 1+K)')):
            for impl, by_seed in fr['runs'].items():
                curves = [np.asarray(r[key]) for r in by_seed.values()]
                for cv in curves: ax.plot(np.arange(1, len(cv) + 1), smooth(cv, 10), color=colors[impl], lw=0.5, alpha=0.6)
                ax.plot(np.arange(1, len(curves[0]) + 1), smooth(np.mean(curves, 0), window), color=colors[impl], lw=2,
                        label=f"{impl}: mean of seeds {', '.join(map(str, by_seed))}, {window}-step mean")
            ax.set_title(f"free run, each with its own pipeline: {label}\n(thin: each seed, 10-step mean; "
                         f"B {c['batch']}, LR {c['lr_patch']}, K {c['K']}, m {c['m']}, T {c['T']})", fontsize=10)
            ax.set_xlabel('step'); ax.legend(fontsize=8)
        ax = axes[1, 2]   # the gap between the implementations beside the gap between official seeds
        off_curves = [smooth(r['loss'], window) for r in fr['runs']['official'].values()]
        ours_curves = [smooth(r['loss'], window) for r in fr['runs']['blindsr'].values()]
        ax.plot(np.mean(ours_curves, 0) - np.mean(off_curves, 0), color='tab:orange', lw=2, label='blindsr mean - official mean')
        seeds = list(fr['runs']['official'])
        for i in range(1, len(off_curves)):
            ax.plot(off_curves[i] - off_curves[0], color='tab:blue', lw=1, label=f'official seed {seeds[i]} - seed {seeds[0]}')
        ours_seeds = list(fr['runs']['blindsr'])
        for i in range(1, len(ours_curves)):
            ax.plot(ours_curves[i] - ours_curves[0], color='tab:orange', lw=1, ls='--', label=f'blindsr seed {ours_seeds[i]} - seed {ours_seeds[0]}')
        ax.axhline(0, color='k', lw=0.5)
        ax.set_title(f"free-run loss gaps ({window}-step means)", fontsize=10); ax.set_xlabel('step'); ax.legend(fontsize=8)
        _plot_probe(axes[0, 2], fr['probe'], colors)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def print_summary(result: dict):
    "The numbers of parity.json that matter, as a short table."
    for dtype, ls in result.get('lockstep', {}).items():
        s, c = ls['summary'], ls['config']
        print(f"\nLockstep in {dtype} ({c['steps']} steps, batch {c['batch']}, LR {c['lr_patch']}, K {c['K']}, seed {c['seed']}, "
              f"{ls['seconds']:.0f} s), difference to the official run:")
        print(f"  {'':32s} {'max |loss|':>10s} {'max |top-1|':>11s} {'max |w_q|':>9s}")
        print(f"  {'blindsr':32s} {s['max_abs_loss_diff']:10.2e} {s['max_abs_acc_diff']:11.3f} {s['max_weight_diff_q']:9.2e}"
              f"   (w_k {s['max_weight_diff_k']:.2e}, queue {s['max_queue_diff']:.2e}, BN buffers {s['max_buffer_diff']:.2e})")
        if 'control_max_abs_loss_diff' in s:
            print(f"  {'official, 1-ulp nudged start':32s} {s['control_max_abs_loss_diff']:10.2e} "
                  f"{s['control_max_abs_acc_diff']:11.3f} {s['control_max_weight_diff_q']:9.2e}")
        print(f"  smallest official top-1 margin (logits): {s['min_margin_official']:.3g}")
    fr = result.get('free_run')
    if fr:
        c, sm = fr['config'], fr['summary']
        print(f"\nFree run ({c['steps']} steps, batch {c['batch']}, LR {c['lr_patch']}, K {c['K']}, seeds {c['seeds']}; "
              f"final = mean of the last {c['window']} steps):")
        print(f"  {'impl':9s} {'seed':>4s} {'final loss':>10s} {'final top-1':>11s} {'probe R^2':>9s} {'untrained R^2':>13s} {'time':>6s}")
        for impl in ('official', 'blindsr'):
            for seed in c['seeds']:
                print(f"  {impl:9s} {seed:4d} {sm[impl]['final_loss'][seed]:10.4f} {sm[impl]['final_acc'][seed]:11.3f} "
                      f"{fr['probe'][impl]['trained'][seed]['r2']:9.3f} {fr['probe'][impl]['untrained'][seed]['r2']:13.3f} "
                      f"{fr['runs'][impl][seed]['seconds']:5.0f}s")
            print(f"  {impl:9s} mean {sm[impl]['loss_mean']:10.4f} {sm[impl]['acc_mean']:11.3f}   "
                  f"(half-range over seeds {sm[impl]['loss_half_range']:.4f} / {sm[impl]['acc_half_range']:.3f})")
        w = sm['blindsr_within_official_range']
        print(f"  blindsr's mean within the official seeds' range: loss {w['loss']}, top-1 {w['acc']} "
              f"(blindsr - official: {w['loss_gap']:+.4f}, {w['acc_gap']:+.3f})")


def _jsonable(x):
    if isinstance(x, dict): return {str(k): _jsonable(v) for k, v in x.items() if not isinstance(v, nn.Module)}
    if isinstance(x, (list, tuple)): return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer, np.bool_)): return x.item()
    return x


def run_trace(off, path, result: dict):
    "Write the CI trace (TRACE_CONFIG, float64 and float32 lockstep) to `path`; its numbers go to result['trace']."
    r64 = lockstep(off, **TRACE_CONFIG, dtype=torch.float64)
    r32 = lockstep(off, **TRACE_CONFIG, dtype=torch.float32)
    path = write_trace(path, r64, r32)
    result['trace'] = dict(path=str(path), bytes=path.stat().st_size, config=r64['config'],
                           summary={'float64': r64['summary'], 'float32': r32['summary']},
                           seconds={'float64': r64['seconds'], 'float32': r32['seconds']})
    print(f"trace {path} ({path.stat().st_size} bytes); blindsr vs official, max |loss diff|: float64 "
          f"{r64['summary']['max_abs_loss_diff']:.2e} (nudged official {r64['summary']['control_max_abs_loss_diff']:.2e}), "
          f"float32 {r32['summary']['max_abs_loss_diff']:.2e} (nudged official {r32['summary']['control_max_abs_loss_diff']:.2e})")


def run_free_runs(off, a, out: Path) -> dict:
    "Both implementations' own phase 1 for each seed, and the probes of their final and initial encoders."
    runs = {'official': {}, 'blindsr': {}}
    probe = {impl: {'trained': {}, 'untrained': {}} for impl in runs}
    images = probe_images(a.set5)
    for seed in a.seeds:
        print(f"free run, seed {seed}: official ...", flush=True)
        runs['official'][seed] = official_free_run(off, seed, a.steps, a.batch, a.lr_patch, a.K, a.m, a.T)
        print(f"free run, seed {seed}: blindsr ...", flush=True)
        runs['blindsr'][seed] = blindsr_free_run(seed, a.steps, a.batch, a.lr_patch, a.K, a.m, a.T, out / f'blindsr_seed{seed}')
        for impl, gain in (('official', 255.0), ('blindsr', 1.0)):   # the official encoder takes 0-255
            probe[impl]['trained'][seed] = probe_sigma(runs[impl][seed]['encoder'], images, gain)
            probe[impl]['untrained'][seed] = probe_sigma(runs[impl][seed]['init_encoder'], images, gain)
        print(f"  probe sigma R^2: official {probe['official']['trained'][seed]['r2']:.3f}, blindsr "
              f"{probe['blindsr']['trained'][seed]['r2']:.3f} (untrained {probe['official']['untrained'][seed]['r2']:.3f}, "
              f"{probe['blindsr']['untrained'][seed]['r2']:.3f})", flush=True)
    config = dict(steps=a.steps, seeds=a.seeds, batch=a.batch, lr_patch=a.lr_patch, K=a.K, m=a.m, T=a.T, window=a.window,
                  adam=ADAM, sigma_range=SIGMA_RANGE, noise=0.0, threads=a.threads,
                  probe=dict(sigmas=PROBE_SIGMAS, noises=(0.0,), crops_per_image=PROBE_CROPS, lr_size=PROBE_LR,
                             images=list(images), cv='ridge, GroupKFold by image: 5 outer, 3 inner folds', mode='eval (BN running stats)'))
    kept = {impl: {seed: {k: r[k] for k in ('loss', 'acc', 'seconds')} for seed, r in by.items()} for impl, by in runs.items()}
    return dict(config=config, runs=kept, probe=probe, summary=free_run_summary(runs, a.window))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--official', required=True, help='an export of LongguangWang/DASR (moco/, model/, utils/, data/)')
    p.add_argument('--out', required=True, help='output folder (parity.json, parity.png, the blindsr runs)')
    p.add_argument('--steps', type=int, default=500, help='free-run steps per seed')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1], help='free-run seeds')
    p.add_argument('--lockstep-steps', type=int, default=200, help='float32 lockstep steps (0: skip)')
    p.add_argument('--lockstep64-steps', type=int, default=40, help='float64 lockstep steps (0: skip)')
    p.add_argument('--lockstep-seed', type=int, default=0)
    p.add_argument('--batch', type=int, default=16)
    p.add_argument('--lr-patch', type=int, default=48, help='LR patch size (HR patches are 4x)')
    p.add_argument('--K', type=int, default=512, help='queue size (a multiple of the batch)')
    p.add_argument('--m', type=float, default=0.999)
    p.add_argument('--T', type=float, default=0.07)
    p.add_argument('--window', type=int, default=50, help='steps averaged for the final loss / top-1')
    p.add_argument('--set5', default=str(ROOT.parent / 'shared' / 'benchmarks' / 'Set5' / 'HR'))
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--write-trace', help='also write the small official trace for tests/test_moco_training_parity.py here')
    p.add_argument('--trace-only', action='store_true', help='only write the trace (needs --write-trace)')
    p.add_argument('--skip-free-run', action='store_true')
    p.add_argument('--plot-only', action='store_true', help='redraw DIR/parity.png from DIR/parity.json and stop')
    a = p.parse_args(argv)
    if a.plot_only:
        plot(json.loads((Path(a.out) / 'parity.json').read_text()), Path(a.out) / 'parity.png', a.window)
        return None
    if a.K % a.batch: p.error(f"--K {a.K} must be a multiple of --batch {a.batch} (the official queue asserts it)")
    if a.trace_only and not a.write_trace: p.error('--trace-only needs --write-trace')
    torch.set_num_threads(a.threads)
    off = load_official(a.official)
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    result = dict(official=str(off.path), torch=torch.__version__, threads=a.threads,
                  command=' '.join(['python', 'tools/dasr_encoder_parity.py', *(sys.argv[1:] if argv is None else argv)]))
    t0 = time.time()
    if a.write_trace:
        run_trace(off, a.write_trace, result)
        if a.trace_only:
            (out / 'trace.json').write_text(json.dumps(_jsonable(result), indent=1))
            return result
    result['lockstep'] = {}
    for dtype, steps in ((torch.float32, a.lockstep_steps), (torch.float64, a.lockstep64_steps)):
        if not steps: continue
        print(f"lockstep in {dtype}: {steps} steps ...", flush=True)
        ls = lockstep(off, a.lockstep_seed, steps, a.batch, a.lr_patch, a.K, a.m, a.T, dtype=dtype, log_every=20)
        result['lockstep'][ls['config']['dtype']] = {k: v for k, v in ls.items() if k != 'final'}
    if not a.skip_free_run: result['free_run'] = run_free_runs(off, a, out)
    result['seconds'] = time.time() - t0
    (out / 'parity.json').write_text(json.dumps(_jsonable(result), indent=1))
    plot(result, out / 'parity.png', a.window)
    print_summary(result)
    print(f"\nwrote {out / 'parity.json'} and {out / 'parity.png'} ({result['seconds'] / 60:.1f} min)")
    return result


if __name__ == '__main__':
    main()
