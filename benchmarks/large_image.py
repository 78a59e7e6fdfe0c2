"""Tiled inference on large images: wall time, peak memory, tile-plan redundancy and tiled-vs-untiled PSNR (blindsr.inference.upscale).

For LR inputs of 512x512, 1024x1024 and 1920x1080 at x4 on the CPU, each case runs in its own process (so its peak
memory is its own). Tiled inference runs with the tiles `auto_plan` chooses within --budget-mb, at the precision the
CLI chooses by default (`fastest_precision`: bf16 + channels-last on a CPU with bf16 units, else fp32; --precision
fp32 for the baseline). Untiled fp32 inference runs where it fits in --untiled-max pixels, as the reference. Each row
gives:
- the plan: tiles, largest crop, and redundancy (processed pixels, the crops' area summed, over the image's pixels);
- peak RSS and how much the upscale added to it (VmHWM after, minus VmRSS before; the budget bounds this);
- seconds, seconds per Mpx, and the ratio to the 512x512 case measured in the same run.
The LR images are crops and tilings of a real photograph (scikit-image's astronaut), so the content is natural at
every size.

With --cli CHECKPOINT it measures the command line instead, as a user runs it: a 1920x1080 PNG (--cli-size; the same
photograph tiled) upscaled by `/usr/bin/time -v blindsr upscale IMAGE -o DIR -c CHECKPOINT` with default options, --repeats
times, each run in its own process: wall time and peak RSS as /usr/bin/time reports them (median, min, max), the
precision and plan the command printed, and the PSNR of its 8-bit output against the fp32 result of the same
checkpoint with the fewest tiles that fit in --ref-budget-mb (computed in this process after the timed runs; fp32
untiled at 1920x1080 would need about 20 GB).

Run: python benchmarks/large_image.py [--model dasr_x4] [--budget-mb 2048] [--precision auto|fp32|bf16] [--untiled-max 300000]
     /usr/bin/time -v python benchmarks/large_image.py --case 1920x1080   (one case, for an external RSS reading)
     python benchmarks/large_image.py --cli ../shared/golden/dasr/dasr_official_x4_state.pt [--cli-size 1920x1080] [--repeats 3] [--ref-budget-mb 12288]
"""
import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {'512x512': (512, 512), '1024x1024': (1024, 1024), '1920x1080': (1080, 1920)}


def lr_image(h, w):
    import torch
    from skimage import data as skdata
    photo = torch.from_numpy(skdata.astronaut().copy()).permute(2, 0, 1).float() / 255   # 512 x 512
    reps = (-(-h // 512), -(-w // 512))
    return photo.repeat(1, *reps)[:, :h, :w].contiguous()


def _status(key):
    "A size from /proc/self/status in bytes (Linux), e.g. VmRSS or VmHWM (peak RSS)."
    import re
    with open('/proc/self/status') as f: return int(re.search(key + r':\s+(\d+)', f.read()).group(1)) * 1024


def one_case(name, model_name, budget_mb, precision, untiled, seed=0):
    "Run one size; print a JSON line with the plan, seconds, memory (MB) and, when untiled ran, the PSNR between the two."
    import torch
    from blindsr.core import fastest_precision
    from blindsr.inference import auto_plan, upscale
    from blindsr.metrics import psnr
    from blindsr.models import create_model
    torch.manual_seed(seed)
    net = create_model(model_name).eval()
    prec, cl = fastest_precision('cpu') if precision == 'auto' else (precision, precision != 'fp32')
    h, w = SIZES[name]
    x = lr_image(h, w)
    budget = budget_mb * 2 ** 20
    plan = auto_plan(net, h, w, budget)
    upscale(net, x[:, :64, :64], precision=prec, channels_last=cl)   # warm-up
    base = _status('VmRSS')
    t0 = time.perf_counter()
    out = upscale(net, x, precision=prec, channels_last=cl, plan=plan)
    tiled_s = time.perf_counter() - t0
    grown = _status('VmHWM') - base
    res = {'case': name, 'model': model_name, 'precision': prec + ('+cl' if cl else ''), 'budget_mb': budget_mb,
           'tiles': f"{len(plan.rows)}x{len(plan.cols)}", 'largest_crop': plan.largest_crop,
           'redundancy': round(plan.redundancy, 3), 'tiled_s': round(tiled_s, 2), 'tiled_s_per_mpx': round(tiled_s / (h * w / 1e6), 2),
           'grown_mb': round(grown / 2 ** 20, 1), 'within_budget': grown <= budget}
    if untiled:
        t0 = time.perf_counter()
        with torch.no_grad(): full = net(x[None])[0]
        res['untiled_s'] = round(time.perf_counter() - t0, 2)
        res['psnr_tiled_vs_untiled_fp32'] = round(psnr(out, full, data_range=(full.max() - full.min()).item()).item(), 2)
    res['peak_rss_mb'] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(res), flush=True)


def _time_v(stderr):
    "(wall seconds, peak RSS bytes) from the report of `/usr/bin/time -v`."
    wall = re.search(r'Elapsed \(wall clock\) time.*?: (?:(\d+):)?(\d+):([\d.]+)', stderr)
    rss = re.search(r'Maximum resident set size \(kbytes\): (\d+)', stderr)
    if not (wall and rss): raise RuntimeError(f"no wall time / peak RSS in the output of /usr/bin/time -v:\n{stderr[-1500:]}")
    h, m, sec = wall.groups()
    return int(h or 0) * 3600 + int(m) * 60 + float(sec), int(rss.group(1)) * 1024


def cli_case(checkpoint, repeats, ref_budget_mb, size='1920x1080'):
    "The command line on a `size` (WxH) PNG: `/usr/bin/time -v blindsr upscale` `repeats` times, then the PSNR to an fp32 reference."
    import numpy as np
    import torch
    from skimage import io as skio
    from blindsr.inference import auto_plan, upscale
    from blindsr.metrics import psnr
    from blindsr.models import load_model
    timer = shutil.which('time', path='/usr/bin') or sys.exit("--cli needs /usr/bin/time (Debian: apt install time)")
    exe = Path(sys.executable).with_name('blindsr')
    exe = str(exe) if exe.exists() else (shutil.which('blindsr') or sys.exit("--cli: no `blindsr` command next to this Python or on PATH"))
    if not Path(checkpoint).is_file(): sys.exit(f"--cli: checkpoint {checkpoint} is not a file")
    w, h = (int(v) for v in size.split('x'))
    x = lr_image(h, w)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / f'{size}.png'
        skio.imsave(src, (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), check_contrast=False)
        runs, said = [], ''
        for r in range(repeats):
            out_dir = Path(tmp) / f'out{r}'
            p = subprocess.run([timer, '-v', exe, 'upscale', str(src), '-o', str(out_dir), '-c', str(checkpoint)],
                               capture_output=True, text=True)
            if p.returncode: sys.exit(f"blindsr upscale failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
            runs.append(_time_v(p.stderr))
            said = '\n'.join([p.stdout.strip()] + [l for l in p.stderr.splitlines() if l.strip() and not l.startswith('\t') and '%|' not in l])
            print(f"run {r + 1}/{repeats}: {runs[-1][0]:.1f} s, peak RSS {runs[-1][1] / 2 ** 30:.2f} GiB", flush=True)
        from PIL import Image
        Image.MAX_IMAGE_PIXELS = None   # the outputs this script writes are large on purpose
        with Image.open(out_dir / src.name) as im: out_size = im.size
        scale = out_size[0] // w   # the checkpoint's scale, from what the command wrote
        if out_size != (scale * w, scale * h) or scale < 2:
            sys.exit(f"blindsr upscale wrote a {out_size[0]}x{out_size[1]} image for a {w}x{h} input: not an integer upscaling")
        got = torch.from_numpy(skio.imread(out_dir / src.name)).permute(2, 0, 1).float() / 255 if ref_budget_mb > 0 else None
    walls, rsss = [r[0] for r in runs], [r[1] / 2 ** 30 for r in runs]
    res = {'case': size, 'scale': scale, 'checkpoint': str(checkpoint), 'repeats': repeats, 'wall_s_median': round(statistics.median(walls), 1),
           'wall_s_min': round(min(walls), 1), 'wall_s_max': round(max(walls), 1), 'peak_rss_gib_median': round(statistics.median(rsss), 2),
           'peak_rss_gib_max': round(max(rsss), 2)}
    print(f"the command said:\n{said.strip()}\n")
    if ref_budget_mb <= 0:   # no reference: time and memory only (e.g. sizes whose fp32 reference would not fit)
        print(json.dumps(res))
        return print(f"\n`blindsr upscale` {size} x{scale}, defaults: wall {res['wall_s_median']} s, peak RSS {res['peak_rss_gib_max']} GiB")
    net = load_model(checkpoint).eval()
    plan = auto_plan(net, h, w, int(ref_budget_mb * 2 ** 20))
    t0 = time.perf_counter()
    ref = upscale(net, x, precision='fp32', channels_last=False, plan=plan).clamp(0, 1)
    res.update(ref_tiles=f"{len(plan.rows)}x{len(plan.cols)}", ref_s=round(time.perf_counter() - t0, 1),
               psnr_vs_fp32_ref_db=round(psnr(got, ref, data_range=1.0).item(), 2))
    print(json.dumps(res))
    print(f"\n`blindsr upscale` {size} x{scale}, defaults: wall {res['wall_s_median']} s (min {res['wall_s_min']}, max {res['wall_s_max']}), "
          f"peak RSS {res['peak_rss_gib_median']} GiB (max {res['peak_rss_gib_max']}), 8-bit output {res['psnr_vs_fp32_ref_db']} dB "
          f"from the fp32 result of {res['ref_tiles']} tiles")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--model', default='dasr_x4')
    ap.add_argument('--budget-mb', type=float, default=2048, help="MB the upscale may add to the process (the CLI's default: 2048)")
    ap.add_argument('--precision', default='auto', choices=['auto', 'fp32', 'bf16'], help="auto: the CLI's default choice")
    ap.add_argument('--untiled-max', type=int, default=300_000, help='run untiled fp32 up to this many LR pixels (about 10 KB each)')
    ap.add_argument('--case', choices=list(SIZES), default=None, help='run only this case, in this process')
    ap.add_argument('--cli', default=None, metavar='CHECKPOINT', help='measure `blindsr upscale` of a 1920x1080 PNG with this checkpoint instead')
    ap.add_argument('--cli-size', default='1920x1080', metavar='WxH', help='--cli: the LR image size (default 1920x1080)')
    ap.add_argument('--repeats', type=int, default=3, help='--cli: runs of the command (default 3)')
    ap.add_argument('--ref-budget-mb', type=float, default=12288, help="--cli: memory budget of the fp32 reference (default 12288: few tiles; 0: no reference)")
    a = ap.parse_args()
    if a.repeats < 1: ap.error(f"--repeats must be at least 1, got {a.repeats}")
    if not re.fullmatch(r'[1-9]\d*x[1-9]\d*', a.cli_size): ap.error(f"--cli-size must be WxH in pixels, e.g. 1920x1080, got {a.cli_size!r}")
    if a.cli: return cli_case(a.cli, a.repeats, a.ref_budget_mb, a.cli_size)
    if a.case:
        h, w = SIZES[a.case]
        return one_case(a.case, a.model, a.budget_mb, a.precision, h * w <= a.untiled_max)
    rows = []
    for name, (h, w) in SIZES.items():
        cmd = [sys.executable, __file__, '--case', name, '--model', a.model, '--budget-mb', str(a.budget_mb),
               '--precision', a.precision, '--untiled-max', str(a.untiled_max)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode: print(f"{name}: failed\n{p.stderr[-2000:]}"); continue
        rows.append(json.loads(p.stdout.strip().splitlines()[-1]))
        print(p.stdout.strip().splitlines()[-1], flush=True)
    base = next((r for r in rows if r['case'] == '512x512'), None)
    print(f"\n{'case':10s} {'precision':9s} {'tiles':>6s} {'redund.':>7s} {'tiled s':>8s} {'s/Mpx':>6s} {'x 512²':>6s} "
          f"{'grown MB':>8s} {'budget':>6s} {'peak RSS MB':>11s} {'PSNR vs fp32 untiled':>20s}")
    for r in rows:
        ratio = r['tiled_s_per_mpx'] / base['tiled_s_per_mpx'] if base else float('nan')
        print(f"{r['case']:10s} {r['precision']:9s} {r['tiles']:>6s} {r['redundancy']:7.3f} {r['tiled_s']:8.2f} {r['tiled_s_per_mpx']:6.2f} "
              f"{ratio:6.2f} {r['grown_mb']:8.1f} {'ok' if r['within_budget'] else 'OVER':>6s} {r['peak_rss_mb']:11.1f} "
              f"{r.get('psnr_tiled_vs_untiled_fp32', float('nan')):20.2f}")


if __name__ == '__main__':
    main()
