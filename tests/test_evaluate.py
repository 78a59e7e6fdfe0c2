"""blindsr.evaluate beyond the notebook: layout of the Markdown tables, one-pass evaluation of lazy providers,
warm-up and eval-mode bookkeeping, 8-bit quantisation, and the error messages for bad pairs and bad methods."""
import math

import matplotlib
matplotlib.use('Agg')
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from blindsr.degradations import DASRDegradation, imresize, quantize
from blindsr.data import DASR_ISO_WIDTHS
from blindsr.evaluate import (PairsResult, benchmark_grid, bicubic_sr, eval_mode, evaluate_methods,
                              evaluate_pairs, kernel_label, plot_grid, summarize, table2_grid, table3_grid,
                              to_markdown_table)


def smooth_image(seed, size=48):
    "A smooth random RGB image (upsampled noise), so that bicubic clearly beats nearest."
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(1, 3, size // 8, size // 8, generator=g), size=(size, size), mode='bicubic',
                         align_corners=False).clamp(0, 1)[0]


def pairs(n=3, scale=4, sigma=1.2, noise=0.0, size=48):
    degrade = DASRDegradation(scale, 'iso', sigma=sigma, noise=noise)
    for i in range(n):
        hr = smooth_image(i, size)
        lr, _ = degrade(hr[None], generator=torch.Generator().manual_seed(i))
        yield f'img{i}', hr, lr[0]


def nearest(scale):
    return lambda lr: F.interpolate(lr, scale_factor=scale, mode='nearest')


# --- evaluation ---------------------------------------------------------------------------------------------

def test_one_pass_over_a_generator_serves_every_method():
    calls = []
    def provider():
        for item in pairs(3):
            calls.append(item[0]); yield item
    df = evaluate_methods({'Bicubic': bicubic_sr(4), 'Nearest': nearest(4)}, provider(), 4)
    assert calls == ['img0', 'img1', 'img2']                      # read once
    assert list(df['method']) == ['Bicubic', 'Nearest'] * 3 and list(df['image']) == [f'img{i}' for i in range(3) for _ in range(2)]
    wide = df.pivot(index='image', columns='method', values='psnr')
    assert (wide['Bicubic'] > wide['Nearest']).all()


def test_output_is_quantised_and_clamped_and_border_cropped():
    hr = quantize(smooth_image(0))     # benchmark HR images are 8-bit
    lr = imresize(hr[None], scale=0.25)[0]
    # an output that differs from hr by less than half a grey level rounds back to hr exactly
    near = lambda x: hr[None] + 0.4 / 255
    assert math.isinf(evaluate_pairs(near, [('a', hr, lr)], 4).psnr)
    # values outside [0, 1] are clamped like a saved PNG: +1 where hr == 1 costs nothing
    top = torch.ones_like(hr)
    assert math.isinf(evaluate_pairs(lambda x: top[None] + 1, [('white', top, lr)], 4).psnr)
    # errors inside the default border (= scale) do not count; with crop_border=0 they do
    def broken_border(x):
        out = hr[None].clone(); out[..., :4, :] = 0; return out
    assert math.isinf(evaluate_pairs(broken_border, [('a', hr, lr)], 4).psnr)
    assert evaluate_pairs(broken_border, [('a', hr, lr)], 4, crop_border=0).psnr < 30


def test_y_channel_and_rgb_differ_and_ssim_can_be_skipped():
    y = evaluate_pairs(bicubic_sr(4), pairs(2), 4)
    rgb = evaluate_pairs(bicubic_sr(4), pairs(2), 4, test_y_channel=False)
    assert abs(y.psnr - rgb.psnr) > 1e-3
    no_ssim = evaluate_pairs(bicubic_sr(4), pairs(2), 4, with_ssim=False)
    assert no_ssim.per_image['ssim'].isna().all() and no_ssim.psnr == pytest.approx(y.psnr)
    assert isinstance(y, PairsResult) and y.n_images == 2 and set(y.mean) == {'psnr', 'ssim', 'seconds', 'n_images'}
    assert 'PSNR' in repr(y)


def test_pairs_accept_batched_tensors_and_lists():
    items = [(n, hr[None], lr[None]) for n, hr, lr in pairs(2)]
    a = evaluate_pairs(bicubic_sr(4), items, 4)
    b = evaluate_pairs(bicubic_sr(4), [list(t) for t in pairs(2)], 4)
    assert a.psnr == pytest.approx(b.psnr)


class Counter(nn.Module):
    def __init__(self, scale=4):
        super().__init__()
        self.conv, self.drop, self.bn = nn.Conv2d(3, 3, 1), nn.Dropout(0.5), nn.BatchNorm2d(3)
        self.scale, self.calls, self.modes = scale, 0, set()
    def forward(self, x):
        self.calls += 1
        self.modes.add((self.training, self.drop.training, torch.is_inference_mode_enabled()))
        return F.interpolate(x, scale_factor=self.scale, mode='bilinear')


def test_warmup_once_per_method_per_grid():
    m = Counter()
    benchmark_grid({'m': m}, [(dict(sigma=s), pairs(2, sigma=s)) for s in (0.0, 1.2)], 4)
    assert m.calls == 1 + 4
    m2 = Counter()
    evaluate_pairs(m2, pairs(2), 4, warmup=False)
    assert m2.calls == 2


def test_model_runs_in_eval_and_inference_mode_and_flags_come_back_even_after_an_error():
    m = Counter().train()
    m.bn.eval()                       # a frozen part stays frozen
    evaluate_pairs(m, pairs(1), 4)
    assert m.modes == {(False, False, True)}
    assert m.training and m.drop.training and not m.bn.training
    bad = Counter(scale=2).train()
    with pytest.raises(ValueError, match="method 'sr_fn' returned sr of shape"):
        evaluate_pairs(bad, pairs(1), 4)
    assert bad.training and bad.drop.training
    bound = Counter().train()         # a bound method (model.forward, model.representation) finds its module
    evaluate_pairs(bound.forward, pairs(1), 4)
    assert bound.modes == {(False, False, True)} and bound.training
    import functools
    part = Counter().train()
    evaluate_pairs(functools.partial(part.forward), pairs(1), 4)
    assert part.modes == {(False, False, True)} and part.training
    with eval_mode(lambda x: x) as f:  # plain callables pass through
        assert torch.is_inference_mode_enabled() and f(1) == 1


@pytest.mark.parametrize('bad, match', [
    ([], 'pairs is empty'),
    ((x for x in []), 'pairs is empty'),
    (None, 'pairs must be an iterable'),
    ([('a', torch.rand(3, 48, 48))], "pair #0 must be a \\(name, hr, lr\\) triple"),
    ([('odd', torch.rand(3, 50, 48), torch.rand(3, 12, 12))], "image 'odd': hr is 50x48 but lr 12x12"),
    ([('gray', torch.rand(3, 48, 48), torch.rand(1, 12, 12))], "image 'gray': hr has 3 channels, lr has 1"),
    ([('int', (torch.rand(3, 48, 48) * 255).byte(), torch.rand(3, 12, 12))], "hr of image 'int' must be a float"),
    ([('np', np.zeros((3, 48, 48)), torch.rand(3, 12, 12))], "hr of image 'np' must be a torch.Tensor"),
    ([('b2', torch.rand(2, 3, 48, 48), torch.rand(2, 3, 12, 12))], "hr of image 'b2' must have shape"),
])
def test_bad_pairs_are_named(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        evaluate_pairs(bicubic_sr(4), bad, 4)


@pytest.mark.parametrize('method, match', [
    (lambda x: x, "method 'sr_fn' returned sr of shape \\(1, 3, 12, 12\\) for image 'img0'"),
    (lambda x: None, "returned NoneType for image 'img0'"),
    (lambda x: torch.full((1, 3, 48, 48), float('nan')), "returned NaN or inf for image 'img0'"),
])
def test_bad_outputs_are_named(method, match):
    with pytest.raises((ValueError, TypeError), match=match):
        evaluate_pairs(method, pairs(1), 4)


def test_bad_methods_and_scales():
    with pytest.raises(ValueError, match='methods is empty'): evaluate_methods({}, pairs(1), 4)
    with pytest.raises(TypeError, match="method 'x' is not callable"): evaluate_methods({'x': 3}, pairs(1), 4)
    with pytest.raises(ValueError, match='scale must be a positive int'): evaluate_pairs(bicubic_sr(4), pairs(1), 4.0)
    with pytest.raises(ValueError, match='scale must be a positive int'): bicubic_sr(0)


def test_grid_errors_name_the_condition():
    def pairs_for(set_name, sigma):
        return [] if set_name == 'Empty' else pairs(1, sigma=sigma)
    with pytest.raises(ValueError, match='set=Empty, sigma=0.0: pairs is empty'):
        table2_grid({}, pairs_for, sets=['Good', 'Empty'], scale=4, bicubic=True)
    with pytest.raises(ValueError, match='no DASR widths for scale 5'):
        table2_grid({}, pairs_for, scale=5)
    with pytest.raises(ValueError, match='conditions is empty'):
        benchmark_grid({'b': bicubic_sr(4)}, [], 4)


# --- grids ----------------------------------------------------------------------------------------------------

def test_table2_grid_columns_bicubic_and_per_image():
    calls = []
    def pairs_for(set_name, sigma):
        calls.append((set_name, sigma)); return pairs(2, sigma=sigma)
    df = table2_grid({'Nearest': nearest(4)}, pairs_for, sets=['S1', 'S2'], scale=4)
    assert calls == [(s, w) for s in ('S1', 'S2') for w in DASR_ISO_WIDTHS[4]]
    assert list(df.columns) == ['method', 'scale', 'set', 'sigma', 'n_images', 'psnr', 'ssim', 'seconds']
    assert list(df['method'][:2]) == ['Bicubic', 'Nearest'] and (df['n_images'] == 2).all()
    # a caller's own Bicubic is not doubled; bicubic=False leaves it out
    assert set(table2_grid({'Bicubic': bicubic_sr(4)}, pairs_for, sets=['S1'], widths=[0]).method) == {'Bicubic'}
    assert set(table2_grid({'N': nearest(4)}, pairs_for, sets=['S1'], widths=[0], bicubic=False).method) == {'N'}
    per = table2_grid({'Nearest': nearest(4)}, pairs_for, sets=['S1'], widths=[0, 1.2], per_image=True)
    assert len(per) == 2 * 2 * 2 and 'image' in per
    pd.testing.assert_frame_equal(summarize(per), table2_grid({'Nearest': nearest(4)}, pairs_for, sets=['S1'],
                                                              widths=[0, 1.2]).assign(seconds=summarize(per)['seconds']))


def test_table3_grid_kernels_and_labels():
    def pairs_for(kernel, noise):
        degrade = DASRDegradation(4, 'aniso', **kernel, noise=noise)
        for i in range(2):
            hr = smooth_image(i)
            yield f'img{i}', hr, degrade(hr[None], generator=torch.Generator().manual_seed(i))[0][0]
    kernels = {'k1': dict(lambda1=0.5, lambda2=2.0, theta=0.3), 'k2': dict(lambda1=3.0, lambda2=1.0, theta=1.2)}
    df = table3_grid({'Nearest': nearest(4)}, pairs_for, kernels, noises=(0, 10))
    assert list(df.columns[:4]) == ['method', 'scale', 'kernel', 'noise'] and len(df) == 2 * 2 * 2
    assert list(dict.fromkeys(df.kernel)) == ['k1', 'k2']
    listed = table3_grid({}, pairs_for, list(kernels.values()), noises=(0,))
    assert list(dict.fromkeys(listed.kernel)) == ['λ1=0.5 λ2=2 θ=17.2°', 'λ1=3 λ2=1 θ=68.8°']
    assert kernel_label((0.2, 4.0, math.pi / 2)) == 'λ1=0.2 λ2=4 θ=90°' and kernel_label('custom') == 'custom'
    with pytest.raises(ValueError, match='kernels is empty'): table3_grid({}, pairs_for, [])
    with pytest.raises(ValueError, match='not unique'): table3_grid({}, pairs_for, ['a', 'a'])


# --- Markdown tables -----------------------------------------------------------------------------------------

def grid_frame(rows):
    return pd.DataFrame(rows, columns=['method', 'scale', 'set', 'sigma', 'n_images', 'psnr', 'ssim', 'seconds'])


def test_markdown_layout_baseline_first_bold_and_ties():
    df = grid_frame([
        ('Ours', 4, 'Set5', 0.0, 5, 31.004, 0.9, 0.5), ('Bicubic', 4, 'Set5', 0.0, 5, 28.0, 0.8, 0.001),
        ('Other', 4, 'Set5', 0.0, 5, 30.999, 0.91, 0.2),           # 31.00 at two decimals: a tie, both bold
        ('Ours', 4, 'Set5', 1.2, 5, 29.0, 0.85, 0.5), ('Bicubic', 4, 'Set5', 1.2, 5, 26.0, 0.7, 0.001),
        ('Other', 4, 'Set5', 1.2, 5, 29.5, 0.84, 0.2)])
    lines = to_markdown_table(df).splitlines()
    assert lines[0] == '| Method | Set5 σ=0 | Set5 σ=1.2 | s/img |'
    assert lines[1] == '|:---|---:|---:|---:|'
    assert lines[2] == '| Bicubic | 28.00 | 26.00 | 0.001 |'
    assert lines[3] == '| Ours | **31.00** | 29.00 | 0.500 |'
    assert lines[4] == '| Other | **31.00** | **29.50** | 0.200 |'
    both = to_markdown_table(df, metric='psnr/ssim', timing=False).splitlines()
    assert both[0] == '| Method | Set5 σ=0 | Set5 σ=1.2 |'
    assert both[4] == '| Other | **31.00** / **0.9100** | **29.50** / 0.8400 |'
    ssim_only = to_markdown_table(df, metric='ssim', bold_best=False, timing=False).splitlines()
    assert ssim_only[2] == '| Bicubic | 0.8000 | 0.7000 |'
    assert to_markdown_table(df, baseline=None).splitlines()[2].startswith('| Ours |')


def test_markdown_scales_stacked_missing_cells_and_escaping():
    df = grid_frame([
        ('Bicubic', 2, 'Set5', 0.0, 5, 33.0, 0.9, 0.0), ('A|B', 2, 'Set5', 0.0, 5, 36.0, 0.95, 0.1),
        ('Bicubic', 4, 'Set5', 0.0, 5, 28.0, 0.8, 0.0), ('A|B', 4, 'Set5', 0.0, 5, 27.0, 0.82, 0.1),
        ('Bicubic', 4, 'Set14', 0.0, 14, 26.0, 0.7, 0.0)])
    lines = to_markdown_table(df, rows=('method', 'scale'), timing=False).splitlines()
    assert lines[0] == '| Method | Scale | Set5 σ=0 | Set14 σ=0 |'
    assert lines[1] == '|:---|:---|---:|---:|'
    # best per column *within a scale*; a method without a Set14 x2 result gets a dash
    assert lines[2] == '| Bicubic | x2 | 33.00 | – |'
    assert lines[3] == '| Bicubic | x4 | **28.00** | **26.00** |'
    assert lines[4] == '| A\\|B | x2 | **36.00** | – |'
    assert lines[5] == '| A\\|B | x4 | 27.00 | – |'
    # the scale varies, so without it in rows it must be a column key
    head = to_markdown_table(df, timing=False).splitlines()[0]
    assert head == '| Method | x2 Set5 σ=0 | x4 Set5 σ=0 | x4 Set14 σ=0 |'


def test_markdown_accepts_per_image_rows_and_weights_timing_by_images():
    per = pd.DataFrame(dict(method=['M'] * 3, set=['S5', 'S5', 'S14'], image=['a', 'b', 'c'],
                            psnr=[30.0, 32.0, 20.0], ssim=[0.9, 0.9, 0.5], seconds=[1.0, 1.0, 4.0]))
    lines = to_markdown_table(per, baseline=None).splitlines()
    assert lines[0] == '| Method | S5 | S14 | s/img |'
    assert lines[2] == '| M | **31.00** | **20.00** | 2.000 |'   # (1 + 1 + 4) / 3 images


def test_markdown_errors():
    df = grid_frame([('Bicubic', 4, 'Set5', 0.0, 5, 28.0, 0.8, 0.0), ('Bicubic', 4, 'Set5', 0.0, 5, 28.5, 0.8, 0.0)])
    with pytest.raises(ValueError, match='several rows'): to_markdown_table(df)
    with pytest.raises(ValueError, match="metric must be"): to_markdown_table(df, metric='lpips')
    with pytest.raises(ValueError, match="rows must include 'method'"): to_markdown_table(df, rows=('set',))
    with pytest.raises(ValueError, match="no column"): to_markdown_table(df.drop(columns='psnr'))


def test_plot_grid_makes_a_panel_per_set():
    df = grid_frame([(m, 4, s, w, 1, 30 - w, 0.9, 0.0) for s in ('A', 'B', 'C') for m in ('Bicubic', 'X') for w in (0, 1.2)])
    fig = plot_grid(df)
    assert len(fig.axes) == 3 and fig.axes[0].get_title() == 'A' and len(fig.axes[0].lines) == 2
    with pytest.raises(ValueError, match='no column'): plot_grid(df, x='noise')
