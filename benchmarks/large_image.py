"""Tiled inference on large images: wall time, peak RSS and tiled-vs-untiled PSNR (blindsr.inference.upscale).

For LR inputs of 512x512, 1024x1024 and 1920x1080 at x4 on the CPU, each case runs in its own process (so its peak
RSS, from getrusage, is its own): tiled inference with the tile chosen from the memory budget, and untiled inference
where it fits in --untiled-max pixels. Per-pixel times are printed as ratios to the 512x512 case, measured in the
same run. The LR images are crops and tilings of a real photograph (scikit-image's astronaut), so the content is
natural at every size.

Run: python benchmarks/large_image.py [--model dasr_x4] [--budget-mb 512] [--untiled-max 1100000]
     /usr/bin/time -v python benchmarks/large_image.py --case 1920x1080   (one case, for an external RSS reading)
"""
import argparse
import json
import resource
import subprocess
import sys
import time

SIZES = {'512x512': (512, 512), '1024x1024': (1024, 1024), '1920x1080': (1080, 1920)}


def lr_image(h, w):
    import torch
    from skimage import data as skdata
    photo = torch.from_numpy(skdata.astronaut().copy()).permute(2, 0, 1).float() / 255   # 512 x 512
    reps = (-(-h // 512), -(-w // 512))
    return photo.repeat(1, *reps)[:, :h, :w].contiguous()


def one_case(name, model_name, budget_mb, untiled, seed=0):
    "Run one size; print a JSON line with seconds, peak RSS (MB) and, when untiled ran, the PSNR between the two."
    import torch
    from blindsr.metrics import psnr
    from blindsr.inference import auto_tile, upscale
    from blindsr.models import create_model
    torch.manual_seed(seed)
    net = create_model(model_name).eval()
    h, w = SIZES[name]
    x = lr_image(h, w)
    tile = auto_tile(net, budget_mb * 2 ** 20)
    upscale(net, x[:, :64, :64], tile=tile)                       # warm-up
    t0 = time.perf_counter()
    out = upscale(net, x, memory_budget=budget_mb * 2 ** 20)
    tiled_s = time.perf_counter() - t0
    res = {'case': name, 'model': model_name, 'tile': tile, 'tiled_s': round(tiled_s, 2),
           'tiled_s_per_mpx': round(tiled_s / (h * w / 1e6), 2)}
    if untiled:
        t0 = time.perf_counter()
        with torch.no_grad(): full = net(x[None])[0]
        res['untiled_s'] = round(time.perf_counter() - t0, 2)
        res['psnr_tiled_vs_untiled'] = round(psnr(out, full, data_range=(full.max() - full.min()).item()).item(), 2)   # peak: the output's range
    res['peak_rss_mb'] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(res), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--model', default='dasr_x4')
    ap.add_argument('--budget-mb', type=float, default=512, help='memory budget for the tile size (MB of activations)')
    ap.add_argument('--untiled-max', type=int, default=1_100_000, help='run untiled up to this many LR pixels')
    ap.add_argument('--case', choices=list(SIZES), default=None, help='run only this case, in this process')
    a = ap.parse_args()
    if a.case:
        h, w = SIZES[a.case]
        return one_case(a.case, a.model, a.budget_mb, h * w <= a.untiled_max)
    rows = []
    for name, (h, w) in SIZES.items():
        cmd = [sys.executable, __file__, '--case', name, '--model', a.model, '--budget-mb', str(a.budget_mb),
               '--untiled-max', str(a.untiled_max)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode: print(f"{name}: failed\n{p.stderr[-2000:]}"); continue
        rows.append(json.loads(p.stdout.strip().splitlines()[-1]))
        print(p.stdout.strip().splitlines()[-1], flush=True)
    base = next((r for r in rows if r['case'] == '512x512'), None)
    print(f"\n{'case':10s} {'tile':>5s} {'tiled s':>8s} {'s/Mpx':>7s} {'x 512²':>7s} {'untiled s':>9s} {'PSNR dB':>8s} {'peak RSS MB':>11s}")
    for r in rows:
        ratio = r['tiled_s_per_mpx'] / base['tiled_s_per_mpx'] if base else float('nan')
        print(f"{r['case']:10s} {r['tile']:5d} {r['tiled_s']:8.2f} {r['tiled_s_per_mpx']:7.2f} {ratio:7.2f} "
              f"{r.get('untiled_s', float('nan')):9.2f} {r.get('psnr_tiled_vs_untiled', float('nan')):8.2f} {r['peak_rss_mb']:11.1f}")


if __name__ == '__main__':
    main()
