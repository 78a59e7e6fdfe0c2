"""The official DASR code (LongguangWang/DASR) against blindsr, side by side on the CPU: ratio = official time / blindsr time.

Rows (blindsr cases: fp32, bf16, bf16+channels_last where the row has them; the official code is fp32 only):

* train    one DASR x4 joint-phase training step, batch of 4 images x 2 HR patches of 192x192 (LR 48): degradation,
           forward of the whole BlindSR (MoCo encoder + SR net), L1 SR loss + contrastive loss, backward, Adam step.
           Official: its `SRMDPreprocessing` (iso Gaussian blur, its option.py defaults for x4), `model.Model`, `loss.Loss`,
           `nn.CrossEntropyLoss` and `utility.make_optimizer`, in the order of its trainer.py (lr set to lr_sr as its
           joint phase does). blindsr: `Trainer.train_step` with `TrainConfig` / `DASRMethod`, set up as
           benchmarks/train_step.py does (its functions are imported), precision='bf16' and channels_last=True per case.
* eval     eval forward of one 1x3x128x128 LR image, x4, under no_grad: the official BlindSR in eval mode (through its
           `model.Model`) against `create_model('dasr_x4')` (bf16 through `blindsr.core.autocast`).
* degrade  the degradation of a (4, 2, 3, 192, 192) HR batch: official `SRMDPreprocessing` against `DASRDegradation(4, 'iso')`.
* bicubic  bicubic x1/4 of (16, 3, 192, 192): the official `bicubic` module against `blindsr.degradations.dasr_bicubic`
           (what DASRDegradation downsamples with).

Each implementation runs in its own persistent worker process (its own allocator state, thread pool and imports; the
official worker never imports blindsr, nor the blindsr worker the official code). The official worker patches
`torch.Tensor.cuda` and `nn.Module.cuda` to no-ops in its own process (the official files are read, never edited or
copied) and builds its model from the official option.py parser's defaults (`--scale 4 --n_GPUs 1 --cpu True`, the
benchmark's batch and patch size). The blindsr worker runs blindsr as a user would: whatever allocator tuning
`blindsr.core` offers (a function named like `tune_allocator`) is called, else none; the official worker gets the
environment as given, or with --same-env also the MALLOC_* settings blindsr's tuning reports (like for like).
Both use --threads torch threads (default: all cores of this process), fixed seeds and same-size inputs (the same
photograph crops; [0, 255] for the official code, [0, 1] for blindsr, each its own convention).

The parent drives the workers in interleaved rounds and never runs both at once: in round r, for each (row, case), one
worker times --reps reps, then the other does, the order alternating from one pair to the next and from one round to the
next, so both see the same machine load. A rep of a fast piece of work is several calls (calibrated in each worker at
warm-up to about --min-rep-ms) and reported per call. Per pair, a block is the median of its reps and the round's ratio
is official block / blindsr block; the table gives each side's median block, the median ratio over the rounds with its
min-max and interquartile range, and the ratio of the quietest round (the least official + blindsr time). Other work on
the machine still inflates both sides, and in bursts: with more busy threads than cores, OpenMP threads that wait for a
descheduled sibling make a step 10-50x slower for seconds at a time, hitting whichever side runs then. The load average
before and after is printed; trust ratios whose spread is narrow. --json writes every rep of every block.

Run: python benchmarks/official_dasr.py --official /tmp/official_dasr [--rounds 9] [--reps 2] [--threads N]
                                        [--rows train eval degrade bicubic] [--cases fp32 bf16] [--same-env] [--json out.json]
     python benchmarks/official_dasr.py --official /tmp/official_dasr --quick   (smoke test: 2 rounds, 1 rep, small inputs)
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_step   # noqa: E402  (imports nothing of blindsr at module level: the official worker uses its photo crops)

OFFICIAL_FILES = ('model/__init__.py', 'model/blindsr.py', 'model/common.py', 'moco/builder.py', 'utils/util.py',
                  'loss/__init__.py', 'utility.py', 'option.py', 'template.py', 'trainer.py')
ROWS = ('train', 'eval', 'degrade', 'bicubic')
CASES = ('fp32', 'bf16', 'bf16+channels_last')
ROW_CASES = {'train': CASES, 'eval': CASES, 'degrade': ('fp32',), 'bicubic': ('fp32',)}
SCALE = 4
FULL = dict(batch=4, patch=48, eval_size=128, bicubic_n=16)    # the paper's training batch, the sizes of issue 20
QUICK = dict(batch=2, patch=24, eval_size=32, bicubic_n=4)     # the official model has no size arguments: paper size
QUEUE = 8192   # MoCo queue of both (the official MoCo's K = 32 * 256, fixed by its BlindSR)


def first_line(e):
    return train_step.first_line(e)


def describe(row, s):
    hr = s['patch'] * SCALE
    return {'train': f"train step x4 joint, {s['batch']}x2x{hr}x{hr} (LR {s['patch']})",
            'eval': f"eval forward 1x3x{s['eval_size']}x{s['eval_size']} x4",
            'degrade': f"degradation ({s['batch']}, 2, 3, {hr}, {hr})",
            'bicubic': f"bicubic x1/4 ({s['bicubic_n']}, 3, {hr}, {hr})"}[row]


def check_official(path):
    "None if `path` holds the official DASR code, else the reason it does not."
    p = Path(path)
    if not p.is_dir(): return f"--official {path}: no such directory (expected an export of LongguangWang/DASR)"
    missing = [f for f in OFFICIAL_FILES if not (p / f).is_file()]
    if missing:
        return f"--official {path}: not a DASR export, missing {', '.join(missing)} (expected LongguangWang/DASR, commit 51524af)"
    return None


# ---------------------------------------------------------------------------------------------------------- inputs
def inputs(s, seed):
    "The inputs of every row in [0, 1], the same for both workers: HR training batches, an LR image, a bicubic batch."
    import torch
    data = train_step.make_dataset(s['patch'] * SCALE, 4 * s['batch'], seed)
    batches = [train_step.batch(data, k, s['batch']) for k in range(4)]
    val = train_step.photo(train_step.VAL_PHOTO)
    lr_img = val[None, :, 100:100 + s['eval_size'], 200:200 + s['eval_size']].contiguous()
    patches = torch.cat([b.flatten(0, 1) for b in batches])
    return dict(data=data, batches=batches, lr_img=lr_img, bicubic=patches[:s['bicubic_n']].contiguous())


# ---------------------------------------------------------------------------------------------------------- workers
class OfficialWorker:
    "The official DASR code, imported from `a.official` with .cuda() made a no-op in this process."
    def __init__(self, a, s):
        import torch
        from torch import nn
        torch.Tensor.cuda = lambda self, *args, **kwargs: self          # the official code moves everything to CUDA
        nn.Module.cuda = lambda self, *args, **kwargs: self
        sys.path.insert(0, os.path.abspath(a.official))
        argv, sys.argv = sys.argv, ['main.py', '--scale', str(SCALE), '--n_GPUs', '1', '--cpu', 'True',
                                    '--batch_size', str(s['batch']), '--patch_size', str(s['patch'])]
        try: import option                                               # parses sys.argv at import, applies template.py
        finally: sys.argv = argv
        from utils import util
        self.args, self.util, self.s, self.seed = option.args, util, s, a.seed
        self.tmp = tempfile.mkdtemp(prefix='official_dasr_')
        self.ckp = SimpleNamespace(dir=self.tmp)                       # Model and Loss only read ckp.dir when loading
        self.inp = inputs(s, a.seed)
        self.notes = []
        keys = ('scale', 'blur_kernel', 'blur_type', 'sig_min', 'sig_max', 'noise', 'lr_sr', 'loss', 'rgb_range', 'optimizer')
        self.info = {'impl': 'official', 'path': os.path.abspath(a.official), 'args': {k: getattr(option.args, k) for k in keys}}

    def finish_info(self):
        self.info['imports_blindsr'] = any(m == 'blindsr' or m.startswith('blindsr.') for m in sys.modules)
        self.info['notes'] = self.notes
        return self.info

    def degrader(self):
        a = self.args    # as trainer.py's train() builds it
        return self.util.SRMDPreprocessing(a.scale[0], kernel_size=a.blur_kernel, blur_type=a.blur_type, sig_min=a.sig_min,
                                           sig_max=a.sig_max, lambda_min=a.lambda_min, lambda_max=a.lambda_max, noise=a.noise)

    def model(self):
        import torch
        import model as official_model
        torch.manual_seed(self.seed)
        return official_model.Model(self.args, self.ckp)

    def build(self, row, case):
        import torch
        from torch import nn
        if case != 'fp32': raise ValueError(f"the official code has no {case} mode")
        if row == 'train':
            m = self.model()
            try:
                import loss as official_loss
                sr_loss = official_loss.Loss(self.args, self.ckp)
                sr_loss.start_log()                                      # as trainer.train() does each epoch
            except ImportError as e:                                     # matplotlib missing: the L1 it configures
                self.notes.append(f"loss.Loss not importable ({first_line(e)}): nn.L1Loss instead"); sr_loss = nn.L1Loss()
            try:
                import utility
                opt = utility.make_optimizer(self.args, m)
            except ImportError as e:                                     # cv2 / scipy.misc missing: the same Adam
                self.notes.append(f"utility not importable ({first_line(e)}): torch.optim.Adam with its kwargs")
                a = self.args
                opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], betas=(a.beta1, a.beta2),
                                       eps=a.epsilon, weight_decay=a.weight_decay)
            a = self.args
            for g in opt.param_groups: g['lr'] = a.lr_sr * a.gamma_sr ** (1 // a.lr_decay_sr)   # first joint epoch
            contrast_loss = nn.CrossEntropyLoss().cuda()
            degrade = self.degrader()
            batches = [b * 255 for b in self.inp['batches']]            # rgb_range 255
            m.train()
            it = iter(range(10 ** 9))
            meters = []

            def step():                                                  # trainer.py's loop body, joint phase
                hr = batches[next(it) % len(batches)].cuda()
                lr, _ = degrade(hr)
                opt.zero_grad()
                sr, output, target = m(lr)
                loss_sr = sr_loss(sr, hr[:, 0, ...])
                loss_contrast = contrast_loss(output, target)
                loss = loss_contrast + loss_sr
                meters.append((loss_sr.item(), loss_contrast.item()))
                del meters[:-1]
                loss.backward()
                opt.step()
            return step
        if row == 'eval':
            m = self.model().eval()
            x = self.inp['lr_img'] * 255

            def forward():
                with torch.no_grad(): m(x)
            return forward
        if row == 'degrade':
            degrade, hr = self.degrader(), self.inp['batches'][0] * 255
            return lambda: degrade(hr)
        if row == 'bicubic':
            bic, x = self.util.bicubic(), self.inp['bicubic'] * 255

            def down():
                with torch.no_grad(): bic(x, scale=1 / SCALE)
            return down
        raise ValueError(f"unknown row {row!r}")


def blindsr_allocator():
    """Call blindsr.core's allocator tuning if it has one (a public function named like `tune_allocator`); return what
    happened and the MALLOC_* settings it reports (changed in os.environ, or returned as a dict)."""
    import blindsr.core as core
    names = sorted(n for n in dir(core) if not n.startswith('_') and callable(getattr(core, n))
                   and ('allocator' in n.lower() or 'malloc' in n.lower()) and not isinstance(getattr(core, n), type))
    name = 'tune_allocator' if 'tune_allocator' in names else (names[0] if names else None)
    if name is None: return {'called': None, 'malloc_env': {}}
    before = {k: v for k, v in os.environ.items() if k.startswith('MALLOC_')}
    try: ret = getattr(core, name)()
    except Exception as e: return {'called': name, 'error': first_line(e), 'malloc_env': {}}
    env = {k: v for k, v in os.environ.items() if k.startswith('MALLOC_') and before.get(k) != v}
    if isinstance(ret, dict): env.update({str(k): str(v) for k, v in ret.items() if str(k).startswith('MALLOC_')})
    return {'called': name, 'returned': repr(ret)[:200], 'malloc_env': env}


class BlindsrWorker:
    "blindsr, as a user runs it."
    def __init__(self, a, s):
        self.allocator = blindsr_allocator()
        self.s, self.seed = s, a.seed
        self.inp = inputs(s, a.seed)
        self.tmp = tempfile.TemporaryDirectory(prefix='blindsr_bench_')
        self.info = {'impl': 'blindsr', 'allocator': self.allocator}

    def finish_info(self):
        self.info['imports_official'] = 'moco.builder' in sys.modules or 'model.blindsr' in sys.modules
        return self.info

    def build(self, row, case):
        import torch
        from blindsr.core import autocast
        from blindsr.degradations import DASRDegradation, dasr_bicubic
        from blindsr.models import create_model
        if case not in CASES: raise ValueError(f"unknown case {case!r}")
        prec, cl = ('fp32' if case == 'fp32' else 'bf16'), case.endswith('channels_last')
        if row == 'train':
            ns = SimpleNamespace(batch_size=self.s['batch'], device='cpu', seed=self.seed, model='dasr_x4', queue=QUEUE)
            cfg = train_step.train_config(ns, 10 ** 6, **train_step.CASES[case])
            out_dir = tempfile.mkdtemp(dir=self.tmp.name)
            trainer = train_step.make_trainer(ns, {}, self.inp['data'], cfg, out_dir)
            batches, it = self.inp['batches'], iter(range(10 ** 9))
            return lambda: trainer.train_step(batches[next(it) % len(batches)])
        if row == 'eval':
            torch.manual_seed(self.seed)
            m = create_model('dasr_x4').eval()
            x = self.inp['lr_img']
            if cl: m, x = m.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)

            def forward():
                with torch.no_grad(), autocast(prec, 'cpu'): m(x)
            return forward
        if case != 'fp32': raise ValueError(f"row {row} has only the fp32 case")
        if row == 'degrade':
            degrade, hr, g = DASRDegradation(SCALE, 'iso'), self.inp['batches'][0], torch.Generator().manual_seed(self.seed)
            return lambda: degrade(hr, generator=g)
        if row == 'bicubic':
            x = self.inp['bicubic']

            def down():
                with torch.no_grad(): dasr_bicubic(x, SCALE)
            return down
        raise ValueError(f"unknown row {row!r}")


def worker_main(a):
    "A worker: JSON requests on stdin, one JSON reply per line on the original stdout (everything printed goes to stderr)."
    proto = os.fdopen(os.dup(1), 'w', buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def reply(**kw): proto.write(json.dumps(kw) + '\n'); proto.flush()

    import torch
    torch.set_num_threads(a.threads)
    s = QUICK if a.quick else FULL
    try:
        impl = OfficialWorker(a, s) if a.worker == 'official' else BlindsrWorker(a, s)
    except Exception as e:
        traceback.print_exc()
        reply(error=first_line(e)); return
    reply(info={**impl.finish_info(), 'threads': torch.get_num_threads(), 'pid': os.getpid(),
                'malloc_env': {k: v for k, v in os.environ.items() if k.startswith('MALLOC_')}})
    works, inner = {}, {}
    for line in sys.stdin:
        msg = json.loads(line)
        if msg['op'] == 'quit': break
        key = (msg['row'], msg['case'])
        try:
            if msg['op'] == 'warmup':                                    # build, run, calibrate calls per rep
                works[key] = fn = impl.build(*key)
                times = []
                for _ in range(max(1, msg['n'])):
                    t0 = time.perf_counter(); fn(); times.append(time.perf_counter() - t0)
                inner[key] = max(1, min(1000, math.ceil(msg['min_rep_s'] / max(min(times), 1e-9))))
                reply(times=times, inner=inner[key], info=impl.finish_info())
            elif msg['op'] == 'run':
                fn, n, times = works[key], inner[key], []
                for _ in range(msg['reps']):
                    t0 = time.perf_counter()
                    for _ in range(n): fn()
                    times.append((time.perf_counter() - t0) / n)
                reply(times=times)
            else: reply(error=f"unknown op {msg['op']!r}")
        except Exception as e:
            traceback.print_exc()
            reply(error=first_line(e))


class Worker:
    "The parent's handle on a worker process."
    def __init__(self, impl, argv, env):
        self.impl, self.dead = impl, None
        self.log = tempfile.NamedTemporaryFile('w+', prefix=f'{impl}_worker_', suffix='.log')
        self.p = subprocess.Popen([sys.executable, __file__, *argv, '--worker', impl], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        self.hello = self.read()

    def read(self):
        line = self.p.stdout.readline()
        if not line:
            self.p.wait()
            self.log.seek(0)
            tail = [l for l in self.log.read().strip().splitlines() if l.strip()]
            self.dead = f"{self.impl} worker exited {self.p.returncode}: {tail[-1] if tail else 'no output'}"
            return {'error': self.dead}
        return json.loads(line)

    def ask(self, **msg):
        if self.dead: return {'error': self.dead}
        try:
            self.p.stdin.write(json.dumps(msg) + '\n'); self.p.stdin.flush()
        except (BrokenPipeError, OSError): pass
        return self.read()

    def close(self):
        if not self.dead:
            try: self.p.stdin.write(json.dumps({'op': 'quit'}) + '\n'); self.p.stdin.close()
            except (BrokenPipeError, OSError): pass
        try: self.p.wait(timeout=60)
        except subprocess.TimeoutExpired: self.p.kill(); self.p.wait()
        self.log.close()


# ---------------------------------------------------------------------------------------------------------- parent
def quantiles(xs):
    "(min, q1, median, q3, max) of `xs`."
    xs = sorted(xs)
    if len(xs) == 1: return (xs[0],) * 5
    q1, med, q3 = statistics.quantiles(xs, n=4, method='inclusive')
    return xs[0], q1, med, q3, xs[-1]


def off_case(impl, work):
    "The case `impl` runs for `work` (row, blindsr case): the official code has only fp32, paired with every blindsr case."
    return 'fp32' if impl == 'official' else work[1]


def fmt_time(t):
    if t is None: return '-'
    return f"{t * 1e3:.1f} ms" if t >= 1e-2 else f"{t * 1e3:.2f} ms" if t >= 1e-3 else f"{t * 1e6:.0f} us"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--official', required=True, help='an export of the official DASR code (LongguangWang/DASR, 51524af)')
    ap.add_argument('--rounds', type=int, default=None, help='interleaved rounds (default 9; --quick 2)')
    ap.add_argument('--reps', type=int, default=None, help='timed reps per block (default 2; --quick 1)')
    ap.add_argument('--warmup', type=int, default=None, help='untimed calls per work before the rounds (default 2; --quick 1)')
    ap.add_argument('--min-rep-ms', type=float, default=None, help='a rep of a fast work repeats it to last about this long (default 200; --quick 20)')
    ap.add_argument('--threads', type=int, default=len(os.sched_getaffinity(0)), help='torch threads of both workers (default: all cores)')
    ap.add_argument('--rows', nargs='+', choices=ROWS, default=list(ROWS), help='rows to run (default: all)')
    ap.add_argument('--cases', nargs='+', choices=CASES, default=list(CASES), help='blindsr cases of the train and eval rows')
    ap.add_argument('--same-env', action='store_true', help="give the official worker the MALLOC_* settings blindsr's tuning reports")
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--quick', action='store_true', help='smoke test: 2 rounds, 1 rep, batch 2 x LR 24, eval 32x32, bicubic of 4')
    ap.add_argument('--json', default=None, help='also write the raw per-round times to this file')
    ap.add_argument('--worker', choices=('official', 'blindsr'), default=None, help=argparse.SUPPRESS)   # internal
    a = ap.parse_args()
    err = check_official(a.official)
    if err: ap.error(err)
    q = a.quick
    a.rounds = a.rounds or (2 if q else 9)
    a.reps = a.reps or (1 if q else 2)
    a.warmup = a.warmup or (1 if q else 2)
    a.min_rep_ms = a.min_rep_ms or (20.0 if q else 200.0)
    if a.rounds < 1 or a.reps < 1 or a.threads < 1: ap.error('--rounds, --reps and --threads must be at least 1')
    if a.worker: return worker_main(a)

    s = QUICK if q else FULL
    argv = ['--official', a.official, '--threads', str(a.threads), '--seed', str(a.seed)] + (['--quick'] if q else [])
    works = [(row, case) for row in ROWS if row in a.rows for case in ROW_CASES[row] if case in a.cases or len(ROW_CASES[row]) == 1]
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    # blindsr first: its allocator tuning decides what --same-env gives the official worker
    blind = Worker('blindsr', argv, dict(os.environ))
    if 'error' in blind.hello: sys.exit(f"blindsr worker failed to start: {blind.hello['error']}")
    tuned = blind.hello['info']['allocator'].get('malloc_env', {})
    env_off = dict(os.environ)
    if a.same_env: env_off.update(tuned)
    off = Worker('official', argv, env_off)
    if 'error' in off.hello: blind.close(); sys.exit(f"official worker failed to start: {off.hello['error']}")
    workers = {'official': off, 'blindsr': blind}
    res = {w: {'row': w[0], 'case': w[1], 'official': [], 'blindsr': [], 'order': [], 'errors': {}} for w in works}

    def failed(w, impl, r):
        if 'error' in r: res[w]['errors'].setdefault(impl, r['error'])
        return 'error' in r

    warm = {}                                                           # (impl, row, case) -> the warm-up reply
    for w in works:                                                     # warm-up and calibration, one worker at a time
        for impl in ('official', 'blindsr'):
            key = (impl, w[0], off_case(impl, w))                      # the official fp32 work serves every blindsr case
            if key not in warm:
                warm[key] = workers[impl].ask(op='warmup', row=key[1], case=key[2], n=a.warmup, min_rep_s=a.min_rep_ms / 1e3)
                if 'info' in warm[key]: workers[impl].hello['info'].update(warm[key]['info'])
            r = warm[key]
            if not failed(w, impl, r): res[w][f'{impl}_warmup'], res[w][f'{impl}_inner'] = r['times'], r['inner']
    for rnd in range(a.rounds):
        for j, w in enumerate(works):
            if res[w]['errors']: continue
            order = ('official', 'blindsr') if (rnd + j) % 2 == 0 else ('blindsr', 'official')
            blocks = {}
            for impl in order:
                r = workers[impl].ask(op='run', row=w[0], case=off_case(impl, w), reps=a.reps)
                if failed(w, impl, r): break
                blocks[impl] = r['times']
            if len(blocks) == 2:
                for impl in order: res[w][impl].append(blocks[impl])
                res[w]['order'].append(order[0])
        print(f"round {rnd + 1}/{a.rounds} done ({time.perf_counter() - t_start:.0f} s)", file=sys.stderr, flush=True)
    for wk in workers.values(): wk.close()
    load_after = os.getloadavg()

    for w, r in res.items():
        if not r['official'] or r['errors']: continue
        ob = [statistics.median(b) for b in r['official']]
        bb = [statistics.median(b) for b in r['blindsr']]
        ratios = [o / b for o, b in zip(ob, bb)]
        quiet = min(range(len(ratios)), key=lambda i: ob[i] + bb[i])   # the round least slowed by other work
        r.update(official_s=statistics.median(ob), blindsr_s=statistics.median(bb), ratios=ratios,
                 ratio=dict(zip(('min', 'q1', 'median', 'q3', 'max'), quantiles(ratios))),
                 quietest_round=dict(round=quiet, official_s=ob[quiet], blindsr_s=bb[quiet], ratio=ratios[quiet]))

    info_b, info_o = blind.hello['info'], off.hello['info']
    alloc = info_b['allocator']
    print(f"\nofficial DASR ({info_o['path']}) vs blindsr, CPU, {a.threads} torch threads each; {a.rounds} interleaved rounds "
          f"x {a.reps} reps per block, {a.warmup} warm-up calls" + (' [--quick: small inputs]' if q else ''))
    print(f"official args (option.py defaults): {json.dumps(info_o['args'])}")
    print("allocator: blindsr worker " + (f"{alloc['called']}() -> {alloc.get('error') or alloc.get('returned')}" if alloc['called']
                                         else 'untuned (blindsr.core has no tune_allocator)')
          + f", MALLOC_* env {json.dumps(info_b['malloc_env'])}; official worker MALLOC_* env {json.dumps(info_o['malloc_env'])}"
          + (" (--same-env: blindsr's settings)" if a.same_env and tuned else ''))
    if a.same_env and not tuned: print("  --same-env: blindsr's tuning reports no MALLOC_* settings; both workers have the given environment")
    for n in info_o.get('notes', []): print(f"  official: {n}")
    if info_o.get('imports_blindsr'): print("  WARNING: the official worker imported blindsr")
    print(f"load average: {load_before[0]:.2f} before, {load_after[0]:.2f} after (1 min) on {os.cpu_count()} CPUs; "
          f"other work on the machine slows both sides: read the spread\n")
    print('| work | blindsr case | official | blindsr | ratio official/blindsr: median (min-max; IQR) | quietest round: ratio (official / blindsr) |')
    print('|---|---|---|---|---|---|')
    for w, r in res.items():
        label = describe(w[0], s)
        if 'ratio' in r:
            q_ = r['ratio']
            print(f"| {label} | {w[1]} | {fmt_time(r['official_s'])} | {fmt_time(r['blindsr_s'])} | "
                  f"{q_['median']:.2f} ({q_['min']:.2f}-{q_['max']:.2f}; {q_['q1']:.2f}-{q_['q3']:.2f}) | "
                  f"{r['quietest_round']['ratio']:.2f} ({fmt_time(r['quietest_round']['official_s'])} / "
                  f"{fmt_time(r['quietest_round']['blindsr_s'])}) |")
        else:
            why = '; '.join(f"{k}: {v}" for k, v in r['errors'].items()) or 'no complete round'
            print(f"| {label} | {w[1]} | - | - | failed: {why} | - |")
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    if a.json:
        with open(a.json, 'w') as f:
            json.dump({'args': {k: v for k, v in vars(a).items() if k != 'worker'}, 'sizes': s,
                       'loadavg_before': load_before, 'loadavg_after': load_after, 'official': info_o, 'blindsr': info_b,
                       'rows': [{**r, 'work': describe(r['row'], s)} for r in res.values()]}, f, indent=1)
        print(f"raw times written to {a.json}")
    if not any('ratio' in r for r in res.values()): sys.exit(1)


if __name__ == '__main__':
    main()
