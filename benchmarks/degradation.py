"""Throughput of blindsr.degradations against baselines measured in the same run (ratios, not timed asserts).

* blur alone on DASR's (4, 2, 3, 192, 192) batch with 21x21 kernels drawn as DASRDegradation draws them (new
  kernels every round), per method ('direct', 'separable' for the isotropic ones, 'fft', 'auto') against the plain
  grouped convolution with the kernels as given (what blur computed before it had methods). Interleaved rounds; the
  per-call spread of the old path shows the cost of the kernels' subnormal entries, which the methods drop.
* with --official PATH (a checkout of the official DASR code): DASRDegradation against its SRMDPreprocessing on the
  same batch, iso and aniso, noise up to 25, interleaved rounds, ratio official/blindsr per round. The official code
  is imported from PATH in this process and run on CPU by making torch.Tensor.cuda a no-op here (restored after).
* DASRDegradation (aniso blur + DASR bicubic x1/4 + noise + rounding) on a (4, 2, 3, 192, 192) batch, fp32,
  against a per-image loop that does the same arithmetic the way BasicSR's imresize does it (a matrix-vector
  product per output row and column, per channel) after a per-image convolution.
* imresize x1/4 on (16, 3, 192, 192), fp32, against the same loop resampler and against PyTorch's native
  F.interpolate(mode='bicubic', antialias=True) (a different, non-MATLAB kernel: a speed reference only).

Timings on a shared machine vary with the other load; compare the ratios (median and min-max over rounds), which
are measured in the same process, interleaved, never single timings.

Run: python benchmarks/degradation.py [--repeats N] [--rounds N] [--threads N] [--official /tmp/official_dasr]
"""
import argparse
import contextlib
import importlib.util
import math
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from blindsr.degradations import DASRDegradation, _auto_method, blur, imresize, imresize_matrix


def timed(fn, repeats):
    "Median wall time of `fn()` over `repeats` runs after one warm-up run."
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter(); fn(); times.append(time.perf_counter() - t0)
    return statistics.median(times)


def loop_resize_axis(img, m):
    "img (C, n, W) -> (C, out, W): one matrix-vector product per output row and channel (BasicSR's loop structure)."
    out = img.new_empty(img.shape[0], m.shape[0], img.shape[2])
    for i in range(m.shape[0]):
        nz = m[i].nonzero().flatten()
        j0, j1 = int(nz.min()), int(nz.max()) + 1
        w = m[i, j0:j1]
        for c in range(img.shape[0]):
            out[c, i] = img[c, j0:j1].T.mv(w)
    return out


def loop_imresize(x, scale, border='symmetric'):
    "Per image, per channel, per output row then column; same weights as imresize."
    H, W = x.shape[-2:]
    oh, ow = (int(H * scale), int(W * scale)) if border == 'replicate' else (math.ceil(H * scale), math.ceil(W * scale))
    mh = imresize_matrix(H, oh, scale, border=border)
    mw = imresize_matrix(W, ow, scale, border=border)
    outs = []
    for img in x.reshape(-1, *x.shape[-3:]):
        rows = loop_resize_axis(img, mh)
        outs.append(loop_resize_axis(rows.transpose(1, 2), mw).transpose(1, 2))
    return torch.stack(outs).reshape(*x.shape[:-2], oh, ow)


def loop_dasr(hr, params, scale=4):
    "The DASR degradation image by image: reflect-pad conv, loop bicubic, noise, rounding."
    out = []
    for b in range(hr.shape[0]):
        k = params['kernel'][b]
        for patch in hr[b]:
            x = F.pad(patch[:, None] * 255, (10,) * 4, mode='reflect')
            x = F.conv2d(x, k[None, None]).transpose(0, 1)
            x = loop_imresize(x, 1 / scale, border='replicate')[0]
            x = x + torch.randn_like(x) * params['noise'][b]
            out.append(x.round().clamp(0, 255) / 255)
    return torch.stack(out).reshape(*hr.shape[:2], *out[0].shape)


def interleaved(fns, rounds, setup, calls=1):
    """{name: [seconds per round]}: each round calls `setup(round)` for the arguments, then every fn `calls` times
    (keeping the fastest: a scheduler spike is not the fn's cost), the fns in an order rotated from round to round
    (so no fn always runs first, after the others warmed the caches)."""
    names, times = list(fns), {n: [] for n in fns}
    for n in names: fns[n](*setup(-1))                   # warm-up
    for r in range(rounds):
        args = setup(r)
        for n in names[r % len(names):] + names[:r % len(names)]:
            best = math.inf
            for _ in range(calls):
                t0 = time.perf_counter(); fns[n](*args); best = min(best, time.perf_counter() - t0)
            times[n].append(best)
    return times


def spread(values, fmt='{:.2f}'):
    "median [min-max]"
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}-{fmt.format(max(values))}]"


def ratios(num, den):
    return [a / b for a, b in zip(num, den)]


def grouped_conv(x, k):
    "blur before it had methods: reflect pad, one grouped conv with the kernels as given (subnormals included)."
    B, (H, W), kk = x.shape[0], x.shape[-2:], k.shape[-1]
    c = x[0].numel() // (H * W)
    xp = F.pad(x.reshape(1, B * c, H, W), (kk // 2, (kk - 1) // 2) * 2, mode='reflect')
    return F.conv2d(xp, k.repeat_interleave(c, 0)[:, None], groups=B * c).reshape(x.shape)


def bench_blur(rounds):
    "blur alone per method against the plain grouped conv, DASR's batch, new DASR kernels every round."
    x = torch.rand(4, 2, 3, 192, 192) * 255
    print(f"blur alone, {tuple(x.shape)} on [0, 255], 21x21 DASR kernels (new draw each round), {rounds} rounds, "
          "best of 2 calls per round; ms per call median [min-max]; speed-up = old / method per round:")
    for mode in ('iso', 'aniso'):
        deg = DASRDegradation(4, mode)
        kernels = lambda r: (x, deg.sample_params(4, torch.Generator().manual_seed(1000 + r))['kernel'])
        methods = ('direct', 'separable', 'fft', 'auto') if mode == 'iso' else ('direct', 'fft', 'auto')
        fns = {'old': grouped_conv, **{m: (lambda m: lambda x, k: blur(x, k, method=m))(m) for m in methods}}
        with torch.no_grad(): t = interleaved(fns, rounds, kernels, calls=2)   # same kernels within a round
        k = kernels(0)[1]
        err = max((blur(x, k, method=m) - grouped_conv(x, k)).abs().max().item() for m in methods)
        auto = _auto_method(k, x.numel() // (192 * 192), (192, 192), "cpu")[0]   # what auto picked
        print(f"  {mode:5s} old grouped conv {spread([v * 1e3 for v in t['old']], '{:.1f}')} ms")
        for m in methods:
            name = f"auto ({auto})" if m == 'auto' else m
            print(f"  {mode:5s} {name:16s} {spread([v * 1e3 for v in t[m]], '{:.1f}')} ms, "
                  f"speed-up x{spread(ratios(t['old'], t[m]))}")
        print(f"  {mode:5s} max |method - old| {err:.1e} (float32 rounding on [0, 255])")


@contextlib.contextmanager
def cuda_as_noop():
    "Run CUDA-only reference code on CPU in this process: Tensor.cuda returns the tensor itself (restored after)."
    cuda = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    try: yield
    finally: torch.Tensor.cuda = cuda


def load_official(path):
    "The official DASR code's utils/util.py, imported from `path` under its own module name."
    spec = importlib.util.spec_from_file_location('official_dasr_util', Path(path) / 'utils' / 'util.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench_official(path, rounds):
    "DASRDegradation against the official SRMDPreprocessing, both drawing their own degradations each call."
    util = load_official(path)
    hr = torch.rand(4, 2, 3, 192, 192)
    hr255 = hr * 255                                      # the official code works on [0, 255]
    print(f"DASRDegradation vs official SRMDPreprocessing ({path}), {tuple(hr.shape)} x1/4, noise up to 25, "
          f"{rounds} rounds; ms per batch median [min-max]; ratio = official / blindsr per round:")
    for mode, blur_type in (('iso', 'iso_gaussian'), ('aniso', 'aniso_gaussian')):
        ours = DASRDegradation(4, mode, sigma=(0.2, 4.0), noise=(0, 25))
        theirs = util.SRMDPreprocessing(4, mode='bicubic', kernel_size=21, blur_type=blur_type, sig_min=0.2,
                                        sig_max=4.0, lambda_min=0.2, lambda_max=4.0, noise=25)
        gen = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        fns = {'official': lambda: theirs(hr255, random=True), 'blindsr': lambda: ours(hr, generator=gen)}
        with cuda_as_noop(), torch.no_grad():
            assert fns['official']()[0].shape == fns['blindsr']()[0].shape
            t = interleaved(fns, rounds, lambda r: ())
        ms = {n: spread([v * 1e3 for v in t[n]], '{:.1f}') for n in t}
        print(f"  {mode:5s} official {ms['official']} ms | blindsr {ms['blindsr']} ms | "
              f"ratio x{spread(ratios(t['official'], t['blindsr']))}")


def main(repeats=5, rounds=10, official=None, threads=None):
    if threads: torch.set_num_threads(threads)
    torch.manual_seed(0)
    load = ', '.join(f'{v:.2f}' for v in os.getloadavg()) if hasattr(os, 'getloadavg') else 'n/a'
    print(f"torch {torch.__version__}, threads: {torch.get_num_threads()}, cpus: {os.cpu_count()}, "
          f"load average: {load} (timings are only comparable on an idle machine), device: cpu, dtype: float32")
    bench_blur(rounds)
    if official: bench_official(official, rounds)

    hr = torch.rand(4, 2, 3, 192, 192)
    deg = DASRDegradation(4, 'aniso', noise=(0, 25))
    gen = torch.Generator().manual_seed(0)
    params = deg.sample_params(4, gen)
    n_images = hr.shape[0] * hr.shape[1]
    t_ours = timed(lambda: deg(hr, generator=gen), repeats)
    t_loop = timed(lambda: loop_dasr(hr, params), max(1, repeats // 2))
    quiet = dict(params, noise=torch.zeros(4))
    diff = (deg(hr, params=quiet)[0] - loop_dasr(hr, quiet)).abs().max().item() * 255
    print(f"DASRDegradation (4,2,3,192,192) x1/4 aniso+noise: {n_images / t_ours:9.1f} images/s "
          f"({t_ours * 1e3:.1f} ms/batch); per-image loop baseline {n_images / t_loop:7.1f} images/s; "
          f"ratio {t_loop / t_ours:.1f}x (max |diff| without noise: {diff:.0f} grey levels)")

    x = torch.rand(16, 3, 192, 192)
    imresize_matrix.cache_clear()
    t0 = time.perf_counter(); imresize(x, 1 / 4); t_cold = time.perf_counter() - t0
    t_ours = timed(lambda: imresize(x, 1 / 4), repeats * 4)
    t_loop = timed(lambda: loop_imresize(x, 1 / 4), max(1, repeats // 2))
    t_torch = timed(lambda: F.interpolate(x, scale_factor=0.25, mode='bicubic', antialias=True), repeats * 4)
    diff = (imresize(x, 1 / 4) - loop_imresize(x, 1 / 4)).abs().max().item()
    print(f"imresize (16,3,192,192) x1/4: {16 / t_ours:9.1f} images/s ({t_ours * 1e3:.2f} ms/batch, "
          f"first call with weight construction {t_cold * 1e3:.2f} ms); loop baseline {16 / t_loop:7.1f} images/s, "
          f"ratio {t_loop / t_ours:.1f}x (max |diff| {diff:.1e}); F.interpolate bicubic antialias "
          f"{16 / t_torch:9.1f} images/s, ratio {t_torch / t_ours:.2f}x")


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--rounds', type=int, default=10, help='interleaved rounds of the blur and official comparisons')
    ap.add_argument('--threads', type=int, default=None, help='torch threads (default: torch\'s own choice)')
    ap.add_argument('--official', default=None, help='path of the official DASR code, e.g. /tmp/official_dasr')
    a = ap.parse_args()
    main(a.repeats, a.rounds, a.official, a.threads)
