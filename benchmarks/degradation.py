"""Throughput of blindsr.degradations against baselines measured in the same run (ratios, not timed asserts).

* DASRDegradation (aniso blur + DASR bicubic x1/4 + noise + rounding) on a (4, 2, 3, 192, 192) batch, fp32,
  against a per-image loop that does the same arithmetic the way BasicSR's imresize does it (a matrix-vector
  product per output row and column, per channel) after a per-image convolution.
* imresize x1/4 on (16, 3, 192, 192), fp32, against the same loop resampler and against PyTorch's native
  F.interpolate(mode='bicubic', antialias=True) (a different, non-MATLAB kernel: a speed reference only).

Run: python benchmarks/degradation.py [--repeats N]
"""
import argparse
import math
import os
import statistics
import time

import torch
import torch.nn.functional as F

from blindsr.degradations import DASRDegradation, imresize, imresize_matrix


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


def main(repeats=5):
    torch.manual_seed(0)
    load = ', '.join(f'{v:.2f}' for v in os.getloadavg()) if hasattr(os, 'getloadavg') else 'n/a'
    print(f"torch {torch.__version__}, threads: {torch.get_num_threads()}, cpus: {os.cpu_count()}, "
          f"load average: {load} (timings are only comparable on an idle machine), device: cpu, dtype: float32")

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
    main(ap.parse_args().repeats)
