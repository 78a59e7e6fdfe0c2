"""One DASR x4 joint-phase training step (blindsr.train.Trainer): fp32 against bf16 autocast, channels_last, torch.compile.

The step is `Trainer.train_step` on a batch of 4 images x 2 HR patches of 192x192 (LR patch 48, DASRDegradation,
Adam), paper-size `create_model('dasr_x4')`. Cases, each in its own process (so no compile state or allocator state
leaks from one to the next):

* fp32                          TrainConfig(precision='fp32'): the baseline every ratio is taken against
* bf16                          TrainConfig(precision='bf16')
* bf16+channels_last            ... channels_last=True
* bf16+channels_last+compile    ... channels_last=True, compile=True (compilation timed apart, as compile_s)
* fp16                          TrainConfig(precision='fp16'), on --device cuda only

A case that raises (e.g. torch.compile without a C compiler) is reported as failed, with the exception's first
line. Per case: median and mean step time after warm-up steps, the speed-up over fp32 measured in the same run, the
achieved FLOP/s (FLOPs of one eager fp32 step, counted once with torch.utils.flop_counter.FlopCounterMode) and its
fraction of the matmul peak of the case's dtype (a large fp32 / bf16 matmul timed in the same run).

Then a paired quality check over --quality-seeds seeds (smaller LR patch --quality-patch, model --quality-model-kwargs):
for each seed, fp32, fp32 started from weights one float32 ulp away, and --quality-case (bf16) train from the same
initial weights on the same batches, and are evaluated in fp32 by PSNR-Y on LR/HR pairs (DASRDegradation(4, 'iso',
sigma=1.2)) from a held-out photograph. What is evaluated is the EMA of the weights (--quality-ema 0.9, about the last
10 steps): at 200 steps the PSNR of the last weights alone swings by up to 0.6 dB from one step to the next (two fp32
runs one ulp apart: 26.94 and 26.33 dB), the EMA's by about 0.01 dB. That fp32-vs-fp32 drift is printed as the noise
floor beside the bf16 difference. Target: the mean bf16 - fp32 difference over the seeds within 0.05 dB.
Targets are reported as PASS/FAIL, never as an exit status. compile_s is the warm-up steps' time over the steady step
time; inductor caches compiled code on disk (e.g. /tmp/torchinductor_$USER), so only a first run shows a cold compile. The patches are crops of scikit-image's photographs
(astronaut, chelsea, rocket for training, coffee for validation), reproducible from the seed.

Run: python benchmarks/train_step.py [--malloc-default] [--steps 10] [--warmup 3] [--threads N] [--cases fp32 bf16] [--json out.json]
     python benchmarks/train_step.py --quick        (smoke test: 2 steps, a small model, 3 quality steps)
     python benchmarks/train_step.py --device cuda  (adds the fp16 case; timings synchronise the GPU)
"""
import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

CASES = {   # name -> TrainConfig fields beyond the common ones
    'fp32': dict(precision='fp32'),
    'bf16': dict(precision='bf16'),
    'bf16+channels_last': dict(precision='bf16', channels_last=True),
    'bf16+channels_last+compile': dict(precision='bf16', channels_last=True, compile=True),
    'fp16': dict(precision='fp16'),
}
CPU_CASES = ['fp32', 'bf16', 'bf16+channels_last', 'bf16+channels_last+compile']
CUDA_CASES = CPU_CASES + ['fp16']
DTYPE_OF = {'fp32': 'fp32', 'bf16': 'bf16', 'fp16': 'fp16'}   # precision -> the matmul peak it is compared with
SCALE = 4
TRAIN_PHOTOS, VAL_PHOTO = ('astronaut', 'chelsea', 'rocket'), 'coffee'
QUICK_MODEL = {'n_feats': 16, 'n_groups': 1, 'n_blocks': 1, 'width': 8}
QUICK_QUEUE = 64   # MoCo queue of the --quick model (the paper's: 8192)
QUALITY_TARGET_DB, SPEEDUP_TARGET = 0.05, 2.0


def first_line(e):
    "`Type: first line of the message` of an exception."
    msg = (str(e).strip().splitlines() or [''])[0][:300]
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def photo(name):
    "scikit-image photograph `name` as a float (3, H, W) tensor in [0, 1]."
    import torch
    from skimage import data as skdata
    return torch.from_numpy(getattr(skdata, name)().copy()).permute(2, 0, 1).float() / 255


def make_dataset(hr_patch, n_items, seed):
    "A Dataset of `n_items` items (2, 3, hr_patch, hr_patch): two crops of one training photograph, drawn from (seed, i)."
    import torch
    from torch.utils.data import Dataset

    class PhotoPatches(Dataset):
        def __init__(self):
            self.photos = [photo(n) for n in TRAIN_PHOTOS]
            if any(min(p.shape[1:]) < hr_patch for p in self.photos):
                raise ValueError(f"HR patch {hr_patch} is larger than a training photograph")

        def __len__(self): return n_items

        def __getitem__(self, i):
            img = self.photos[i % len(self.photos)]
            g = torch.Generator().manual_seed(seed * 1_000_003 + i)
            crops = []
            for _ in range(2):
                y = int(torch.randint(img.shape[1] - hr_patch + 1, (1,), generator=g))
                x = int(torch.randint(img.shape[2] - hr_patch + 1, (1,), generator=g))
                crops.append(img[:, y:y + hr_patch, x:x + hr_patch])
            return torch.stack(crops)

    return PhotoPatches()


def batch(data, k, batch_size):
    "Batch `k`: items k*batch_size ... of `data`, stacked to (B, 2, 3, P, P); the same for every run and case."
    import torch
    return torch.stack([data[(k * batch_size + j) % len(data)] for j in range(batch_size)])


def train_config(a, steps, **fields):
    "The TrainConfig of every case: one joint epoch of `steps` steps, lr 1e-4, `fields` on top (they may replace the seed)."
    from blindsr.train import TrainConfig
    return TrainConfig(**{**dict(epochs_encoder=0, epochs_joint=1, steps_per_epoch=max(1, steps), batch_size=a.batch_size,
                                 lr_joint=1e-4, progress=False, val_every=0, device=a.device, seed=a.seed), **fields})


def make_trainer(a, model_kwargs, data, cfg, out_dir):
    "The timed run: `a.model` with `model_kwargs` trained by DASR's method (MoCo queue `a.queue`), initial weights from the seed."
    import torch
    from blindsr.methods import DASRMethod
    from blindsr.models import create_model
    from blindsr.train import Trainer
    torch.manual_seed(cfg.seed)
    return Trainer(DASRMethod(create_model(a.model, **model_kwargs), K=a.queue), data, cfg, out_dir)


def sync(device):
    import torch
    if str(device).startswith('cuda'): torch.cuda.synchronize()


def peak_memory_mb(device):
    import torch
    if str(device).startswith('cuda'): return round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_case(name, a):
    "Time `a.warmup` (compiled: `a.compile_warmup`) then `a.steps` training steps of case `name`; return its result dict."
    import torch
    res = {'case': name, 'device': a.device, 'threads': torch.get_num_threads()}
    fields = CASES[name]
    compiled = bool(fields.get('compile'))
    warmup = a.compile_warmup if compiled else a.warmup
    cfg = train_config(a, warmup + a.steps, **fields)
    data = make_dataset(a.patch * SCALE, 4 * a.batch_size, a.seed)
    batches = [batch(data, k, a.batch_size).to(a.device) for k in range(4)]
    try:
        with tempfile.TemporaryDirectory() as out_dir:
            trainer = make_trainer(a, a.model_kwargs, data, cfg, out_dir)
            times = []
            for i in range(warmup + a.steps):
                sync(a.device); t0 = time.perf_counter()
                out = trainer.train_step(batches[i % len(batches)])
                sync(a.device); times.append(time.perf_counter() - t0)
    except Exception as e:
        return {**res, 'status': 'failed', 'reason': first_line(e)}
    timed = times[warmup:]
    res.update(status='ok', steps=a.steps, warmup=warmup, median_s=statistics.median(timed), mean_s=statistics.mean(timed),
               first_step_s=times[0], loss=out['loss'], peak_mem_mb=peak_memory_mb(a.device))
    if compiled:   # the first calls compile (and may recompile): their time over the steady step time
        res['warmup_s'] = [round(t, 3) for t in times[:warmup]]
        res['compile_s'] = sum(max(0.0, t - res['median_s']) for t in times[:warmup])
    return res


def count_flops(a):
    "FLOPs of one eager fp32 training step (degradation, forward, backward; FlopCounterMode's matmul/conv count)."
    from torch.utils.flop_counter import FlopCounterMode
    data = make_dataset(a.patch * SCALE, a.batch_size, a.seed)
    with tempfile.TemporaryDirectory() as out_dir:
        trainer = make_trainer(a, a.model_kwargs, data, train_config(a, 1, precision='fp32'), out_dir)
        hr = batch(data, 0, a.batch_size).to(a.device)
        with FlopCounterMode(display=False) as fc: trainer.train_step(hr)
    return {'case': 'flops', 'flops_per_step': int(fc.get_total_flops()),
            'params': sum(p.numel() for p in trainer.model.parameters())}


def nudge_one_ulp(model):
    "Move every floating-point weight of `model` one float32 ulp up: a perturbation at the level of fp32 rounding."
    import torch
    with torch.no_grad():
        for p in model.parameters(): p.copy_(torch.nextafter(p, torch.full_like(p, math.inf)))


def quality_run(a, data, lr_val, hr_val, seed, variant):
    """PSNR-Y on (lr_val, hr_val), evaluated in fp32, of the model after `a.quality_steps` steps of `variant`: 'fp32',
    'fp32+ulp' (fp32 from weights one ulp away) or a bf16 case of CASES."""
    import torch
    from blindsr.degradations import quantize
    from blindsr.metrics import psnr
    fields = CASES['fp32'] if variant == 'fp32+ulp' else CASES[variant]
    cfg = train_config(a, a.quality_steps, **fields, seed=seed, ema_decay=a.quality_ema or None)
    with tempfile.TemporaryDirectory() as out_dir:
        trainer = make_trainer(a, a.quality_model_kwargs, data, cfg, out_dir)
        if variant == 'fp32+ulp': nudge_one_ulp(trainer.model)
        for k in range(a.quality_steps): trainer.train_step(batch(data, k, a.batch_size))
        model = trainer.inference_model()
        with torch.no_grad(): sr = model(lr_val.to(a.device)).float().cpu()
    return psnr(quantize(sr.clamp(0, 1)), hr_val, crop_border=SCALE, test_y_channel=True, reduction='mean').item()


def quality(a):
    """Paired quality check over `a.quality_seeds` seeds. Each seed trains fp32, the same fp32 run from weights one ulp
    away (how far two fp32 runs drift apart from rounding alone: the noise floor), and `a.quality_case` (bf16), on the
    same batches from the same initial weights. Returns PSNR-Y per run and the mean and standard error of the paired
    differences bf16 - fp32 and fp32+ulp - fp32."""
    import torch
    from blindsr.degradations import DASRDegradation
    val = photo(VAL_PHOTO)                                    # 400 x 600: six fixed 192x192 crops
    hr_val = torch.stack([val[:, y:y + 192, x:x + 192] for y in (8, 200) for x in (8, 204, 400)])
    lr_val, _ = DASRDegradation(SCALE, 'iso', sigma=1.2)(hr_val, generator=torch.Generator().manual_seed(a.seed))
    variants = ['fp32', 'fp32+ulp', a.quality_case]
    runs = []
    for seed in range(a.seed, a.seed + a.quality_seeds):
        data = make_dataset(a.quality_patch * SCALE, a.quality_steps * a.batch_size, seed + 1)
        runs.append({'seed': seed, **{v: quality_run(a, data, lr_val, hr_val, seed, v) for v in variants}})
    def summary(v):
        d = [r[v] - r['fp32'] for r in runs]
        return {'mean': statistics.mean(d), 'se': statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else math.nan, 'diffs': d}
    bf16, floor = summary(a.quality_case), summary('fp32+ulp')
    return {'case': 'quality', 'steps': a.quality_steps, 'lr_patch': a.quality_patch, 'model_kwargs': a.quality_model_kwargs,
            'bf16_case': a.quality_case, 'ema_decay': a.quality_ema, 'runs': runs,
            'val': f"{len(hr_val)} crops of {VAL_PHOTO}, DASRDegradation(4, 'iso', sigma=1.2)",
            'diff_db': bf16['mean'], 'diff_se': bf16['se'], 'diffs': bf16['diffs'],
            'floor_db': floor['mean'], 'floor_se': floor['se'], 'floor_abs': statistics.mean(abs(x) for x in floor['diffs']),
            'pass': abs(bf16['mean']) <= QUALITY_TARGET_DB}


def measure_peaks(a):
    "Best-of-`reps` GFLOP/s of an n x n @ n x n matmul per dtype on the device (fp16 on CUDA only)."
    import torch
    n = a.peak_size or (8192 if a.device.startswith('cuda') else 2048)
    dtypes = {'fp32': torch.float32, 'bf16': torch.bfloat16}
    if a.device.startswith('cuda'): dtypes['fp16'] = torch.float16
    peaks = {'matmul_n': n}
    for name, dt in dtypes.items():
        x = torch.randn(n, n, device=a.device).to(dt)
        y = torch.randn(n, n, device=a.device).to(dt)
        x @ y; sync(a.device)                                 # warm-up
        best = math.inf
        for _ in range(a.peak_reps):
            t0 = time.perf_counter(); x @ y; sync(a.device)
            best = min(best, time.perf_counter() - t0)
        peaks[name] = 2 * n ** 3 / best / 1e9
        del x, y
    return peaks


# glibc malloc: the Trainer sets its thresholds itself (blindsr.core.tune_allocator: freed blocks up to 32 MB stay in
# the heap, trimmed only past 1 GB), so the cases run with the library's own setting; --malloc-default turns it off
# (BLINDSR_TUNE_MALLOC=0) to measure what it buys. A training step allocates and frees hundreds of 1-40 MB feature maps.
MALLOC_ENV = {'MALLOC_MMAP_THRESHOLD_': str(32 << 20), 'MALLOC_TRIM_THRESHOLD_': str(1 << 30)}   # what tune_allocator sets


def in_subprocess(case, argv, env=None):
    "Run `--case case` in a fresh interpreter (environment `env`); its result dict (the last stdout line), or a failure record."
    p = subprocess.run([sys.executable, __file__, *argv, '--case', case], capture_output=True, text=True, env=env)
    lines = p.stdout.strip().splitlines()
    try: return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        err = [l for l in p.stderr.strip().splitlines() if l.strip()]
        return {'case': case, 'status': 'failed', 'reason': f"process exited {p.returncode}: {err[-1] if err else 'no output'}"}


def fmt(v, spec, width):
    return f"{v:{width}{spec}}" if isinstance(v, (int, float)) and math.isfinite(v) else f"{'-':>{width}s}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--cases', nargs='+', choices=list(CASES), default=None,
                    help=f"cases to run (default: {' '.join(CPU_CASES)}; on cuda also fp16); fp32 is always run as the baseline")
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--threads', type=int, default=None, help="torch.set_num_threads (default: torch's default)")
    ap.add_argument('--steps', type=int, default=10, help='timed steps per case')
    ap.add_argument('--warmup', type=int, default=3, help='untimed steps before them')
    ap.add_argument('--compile-warmup', type=int, default=None, help='untimed steps of the compiled case (default: --warmup + 3)')
    ap.add_argument('--batch-size', type=int, default=4, help='images per batch (2 patches each)')
    ap.add_argument('--patch', type=int, default=48, help='LR patch size (HR: x4)')
    ap.add_argument('--model', default='dasr_x4', help='an x4 model name of blindsr.models')
    ap.add_argument('--model-kwargs', type=json.loads, default={}, help="JSON keyword arguments of the timed model (default '{}': paper size)")
    ap.add_argument('--queue', type=int, default=None, help=f'MoCo queue length K (default 8192, the paper; --quick: {QUICK_QUEUE})')
    ap.add_argument('--peak-size', type=int, default=None, help='matmul size of the peak measurement (default 2048 CPU, 8192 CUDA)')
    ap.add_argument('--peak-reps', type=int, default=10, help='matmuls timed per dtype; the best counts')
    ap.add_argument('--quality-steps', type=int, default=200, help='training steps of the fp32-vs-bf16 quality check (0: skip it)')
    ap.add_argument('--quality-patch', type=int, default=24, help='LR patch size of the quality check')
    ap.add_argument('--quality-seeds', type=int, default=3, help='seeds of the quality check (each: fp32, fp32 one ulp away, bf16)')
    ap.add_argument('--quality-case', default='bf16+channels_last', choices=[c for c in CASES if c.startswith('bf16')],
                    help='the bf16 case the quality check trains')
    ap.add_argument('--quality-ema', type=float, default=0.9,
                    help='evaluate the EMA of the weights with this decay (0: the last weights; see the docstring)')
    ap.add_argument('--quality-model-kwargs', type=json.loads, default={}, help="JSON keyword arguments of the quality check's model")
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--quick', action='store_true',
                    help=f"smoke test: 2 steps, 1 warm-up, 3 quality steps, 512 matmul, model {json.dumps(QUICK_MODEL)} unless given")
    ap.add_argument('--malloc-default', action='store_true',
                    help="run the cases with glibc's default malloc settings (BLINDSR_TUNE_MALLOC=0) instead of blindsr.core.tune_allocator's")
    ap.add_argument('--json', default=None, help='also write every result to this file')
    ap.add_argument('--case', default=None, help=argparse.SUPPRESS)   # internal: one case (or flops/quality) in this process
    a = ap.parse_args()
    if a.quality_seeds < 1: ap.error(f"--quality-seeds must be at least 1, got {a.quality_seeds}")
    if not 0 <= a.quality_ema < 1: ap.error(f"--quality-ema must be in [0, 1), got {a.quality_ema}")
    if a.quality_steps < 0: ap.error(f"--quality-steps must be 0 (no quality check) or more, got {a.quality_steps}")
    if a.quick:
        a.steps, a.warmup, a.quality_steps, a.peak_reps = min(a.steps, 2), min(a.warmup, 1), min(a.quality_steps, 3), 2
        a.quality_seeds = min(a.quality_seeds, 2)
        a.peak_size = a.peak_size or 512
        a.model_kwargs = a.model_kwargs or dict(QUICK_MODEL)
        a.quality_model_kwargs = a.quality_model_kwargs or dict(QUICK_MODEL)
        a.queue = a.queue or QUICK_QUEUE
    a.queue = a.queue or 8192
    if a.compile_warmup is None: a.compile_warmup = a.warmup + 3
    import torch
    if a.threads: torch.set_num_threads(a.threads)

    if a.case:                                                     # a child process: one JSON line
        res = count_flops(a) if a.case == 'flops' else quality(a) if a.case == 'quality' else run_case(a.case, a)
        print(json.dumps(res), flush=True)
        return

    cuda = a.device.startswith('cuda')
    cases = a.cases or (CUDA_CASES if cuda else CPU_CASES)
    if 'fp32' not in cases: cases = ['fp32', *cases]
    argv = sys.argv[1:]
    load = os.getloadavg()   # other work on the machine skews every timing: printed with the results
    peaks = measure_peaks(a)
    print(json.dumps({'case': 'peaks', **{k: round(v, 1) for k, v in peaks.items()}}), flush=True)
    env = {**os.environ, 'BLINDSR_TUNE_MALLOC': '0'} if a.malloc_default else os.environ   # the same for every case
    flops = in_subprocess('flops', argv)
    print(json.dumps(flops), flush=True)
    rows = []
    for name in cases:
        if name == 'fp16' and not cuda: r = {'case': name, 'status': 'skipped', 'reason': 'fp16 needs a CUDA device'}
        else: r = in_subprocess(name, argv, env)
        fl = flops.get('flops_per_step')
        if r.get('status') == 'ok' and fl:
            r['gflops'] = fl / r['median_s'] / 1e9
            peak = peaks.get(DTYPE_OF[CASES[name]['precision']])
            if peak: r['frac_peak'] = r['gflops'] / peak
        rows.append(r)
        print(json.dumps(r), flush=True)
    qual = in_subprocess('quality', argv, env) if a.quality_steps > 0 else None
    if qual: print(json.dumps(qual), flush=True)

    base = next((r for r in rows if r['case'] == 'fp32' and r.get('status') == 'ok'), None)
    for r in rows:
        if base and r.get('status') == 'ok': r['speedup'] = base['median_s'] / r['median_s']
    threads = next((r['threads'] for r in rows if 'threads' in r), torch.get_num_threads())
    fl = flops.get('flops_per_step')
    print(f"\nDASR x4 joint step, batch {a.batch_size} x 2 patches, LR {a.patch} (HR {a.patch * SCALE}), "
          f"model {a.model} {json.dumps(a.model_kwargs)}, {a.device}, {threads} threads; "
          + (f"{fl / 1e9:.1f} GFLOP/step (eager fp32, FlopCounterMode)" if fl else f"FLOP count failed: {flops.get('reason')}"))
    print(f"load average before the run: {load[0]:.2f} (1 min), {load[1]:.2f} (5 min) on {os.cpu_count()} CPUs; malloc: "
          + ('glibc defaults' if a.malloc_default else ' '.join(f'{k}={v}' for k, v in MALLOC_ENV.items())))
    print(f"matmul peak ({peaks['matmul_n']}^3): " + ', '.join(f"{k} {v:.1f} GFLOP/s" for k, v in peaks.items() if k != 'matmul_n'))
    print(f"\n{'case':28s} {'status':>7s} {'median ms':>9s} {'mean ms':>8s} {'x fp32':>7s} {'GFLOP/s':>8s} {'% peak':>7s} {'compile s':>9s}")
    for r in rows:
        pct = 100 * r['frac_peak'] if 'frac_peak' in r else None
        print(f"{r['case']:28s} {r.get('status', '?'):>7s} {fmt(1e3 * r['median_s'] if 'median_s' in r else None, '.1f', 9)} "
              f"{fmt(1e3 * r['mean_s'] if 'mean_s' in r else None, '.1f', 8)} {fmt(r.get('speedup'), '.2f', 7)} "
              f"{fmt(r.get('gflops'), '.1f', 8)} {fmt(pct, '.1f', 7)} {fmt(r.get('compile_s'), '.1f', 9)}")
    for r in rows:
        if r.get('status') != 'ok': print(f"  {r['case']}: {r.get('status')}: {r.get('reason')}")

    bf16 = [r for r in rows if r['case'].startswith('bf16') and 'speedup' in r]
    if bf16:
        best = max(bf16, key=lambda r: r['speedup'])
        plain = next((r for r in bf16 if r['case'] == 'bf16'), None)
        print(f"\ntarget bf16 >= {SPEEDUP_TARGET:g}x fp32: "
              + (f"bf16 {plain['speedup']:.2f}x, " if plain else '')
              + f"best {best['case']} {best['speedup']:.2f}x: {'PASS' if best['speedup'] >= SPEEDUP_TARGET else 'FAIL'}")
    else: print(f"\ntarget bf16 >= {SPEEDUP_TARGET:g}x fp32: no bf16 case ran")
    if qual and 'diff_db' in qual:
        print(f"\nquality: {qual['steps']} steps, LR patch {qual['lr_patch']}, model {json.dumps(qual['model_kwargs'])}, "
              f"{len(qual['runs'])} seeds; PSNR-Y (dB) on {qual['val']}"
              + (f", EMA {qual['ema_decay']} of the weights" if qual['ema_decay'] else ''))
        print(f"{'seed':>6s} {'fp32':>8s} {'fp32+ulp':>9s} {qual['bf16_case']:>20s} {'ulp - fp32':>11s} {'bf16 - fp32':>12s}")
        for r in qual['runs']:
            print(f"{r['seed']:6d} {r['fp32']:8.3f} {r['fp32+ulp']:9.3f} {r[qual['bf16_case']]:20.3f} "
                  f"{r['fp32+ulp'] - r['fp32']:+11.3f} {r[qual['bf16_case']] - r['fp32']:+12.3f}")
        print(f"noise floor (fp32 one ulp away - fp32): mean {qual['floor_db']:+.3f} dB (SE {qual['floor_se']:.3f}), "
              f"mean |difference| {qual['floor_abs']:.3f} dB")
        print(f"bf16 - fp32: mean {qual['diff_db']:+.3f} dB (SE {qual['diff_se']:.3f}): "
              f"target |mean| <= {QUALITY_TARGET_DB} dB {'PASS' if qual['pass'] else 'FAIL'}")
    elif qual: print(f"quality check failed: {qual.get('reason')}")
    if a.json:
        with open(a.json, 'w') as f:
            json.dump({'args': {k: v for k, v in vars(a).items() if k != 'case'}, 'loadavg': load,
                   'malloc_env': {} if a.malloc_default else MALLOC_ENV, 'peaks': peaks, 'flops': flops,
                       'cases': rows, 'quality': qual}, f, indent=1)
        print(f"results written to {a.json}")


if __name__ == '__main__':
    main()
