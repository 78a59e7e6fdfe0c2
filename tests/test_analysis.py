"""blindsr.analysis beyond the notebook: grouped cross-validation cannot leak an image into its own test fold,
the probes separate an informative encoder from a random one, representation collection keeps its promises
(same crops under every degradation, labels from the degradation, eval mode, batching), and bad input is named."""
import matplotlib
matplotlib.use('Agg')
import numpy as np
import pytest
import torch
from torch import nn

from blindsr.analysis import (_folds, collect_representations, degradation_grid, embed_2d, plot_representation,
                              probe_representation)
from blindsr.core import rgb_to_ycbcr
from blindsr.degradations import DASRDegradation


def random_texture(size, alpha, contrast, generator):
    "RGB Gaussian random field with a 1/f^alpha power spectrum (the statistics of natural images), in [0, 1]."
    f = torch.fft.fftfreq(size)
    radius = (f[:, None] ** 2 + f[None] ** 2).sqrt().clamp_min(1 / size)
    x = torch.fft.ifft2(torch.randn(3, size, size, generator=generator, dtype=torch.complex64) * radius ** (-alpha / 2)).real
    return (0.5 + contrast * (x - x.mean()) / x.std()).clamp(0, 1)


def spectrum_encoder(lr, bins=8):
    "Hand-made degradation encoder: log power in radial frequency bands of the LR luminance."
    y = rgb_to_ycbcr(lr, y_only=True)[:, 0] * 255
    y = y - y.mean((-2, -1), keepdim=True)
    h, w = y.shape[-2:]
    win = torch.hann_window(h, periodic=False)[:, None] * torch.hann_window(w, periodic=False)[None]
    power = torch.fft.fft2(y * win).abs().pow(2).flatten(1)
    band = ((torch.fft.fftfreq(h)[:, None] ** 2 + torch.fft.fftfreq(w)[None] ** 2).sqrt().flatten() * 2 * bins).long().clamp(max=bins - 1)
    total = torch.zeros(len(y), bins).index_add_(1, band, power)
    return torch.log(total / torch.bincount(band, minlength=bins) + 1e-3)


@pytest.fixture(scope='module')
def textures():
    g = torch.Generator().manual_seed(0)
    return {f't{i}': random_texture(128, a, c, g) for i, (a, c) in enumerate(zip(np.linspace(0.8, 1.4, 6), (0.12, 0.2, 0.15, 0.1, 0.18, 0.14)))}


@pytest.fixture(scope='module')
def blur_only(textures):
    "Noise-free grid of four widths: features of the hand-made and of a random encoder on the same crops."
    grid = degradation_grid((0.5, 1.5, 2.5, 3.5), scale=4)
    gen = torch.Generator().manual_seed(1)
    rnd = lambda lr: torch.randn(len(lr), 8, generator=gen)
    out = {name: collect_representations(enc, textures, grid, crops_per_image=4, lr_size=24,
                                         generator=torch.Generator().manual_seed(0))
           for name, enc in (('spectrum', spectrum_encoder), ('random', rnd))}
    return out


# --- probes -----------------------------------------------------------------------------------------------------

def test_probe_finds_the_blur_width_and_not_in_noise(blur_only):
    feats, labels = blur_only['spectrum']
    good = probe_representation(feats, labels, classify=None)
    bad = probe_representation(*blur_only['random'], classify=None)
    print(f"blur-only grid: spectrum R2 {good['sigma_r2']:.3f}, random R2 {bad['sigma_r2']:.3f}")
    assert good['sigma_r2'] > 0.9 and good['sigma_rmse'] < 0.4
    assert bad['sigma_r2'] < 0.05
    assert good['n_groups'] == 6 and good['n_folds'] == 5 and len(good['sigma_r2_folds']) == 5
    assert good['sigma_r2_chance'] <= 0 and len(good['sigma_alphas']) == 5
    # a classifier of the width, too: four classes, chance 1/4
    cls = probe_representation(feats, labels, regress=None, classify='sigma')
    assert cls['sigma_accuracy'] > 0.7 and cls['sigma_chance'] == pytest.approx(0.25, abs=0.05)
    assert cls['sigma_classes'] == [0.5, 1.5, 2.5, 3.5]


def test_grouped_folds_never_share_an_image():
    groups = np.repeat(np.arange(7), 10)
    folds = _folds(len(groups), groups, cv=5, seed=0)
    assert len(folds) == 5
    seen = np.concatenate([te for _, te in folds])
    assert sorted(seen) == list(range(70))                       # every sample tested exactly once
    for tr, te in folds:
        assert not set(groups[tr]) & set(groups[te])
    assert len(_folds(len(groups), groups, cv=50, seed=0)) == 7  # at most one fold per group


def test_grouping_stops_an_image_memorising_probe():
    """Features that only identify the image, with a degradation label that is a property of the image: grouped CV must
    see through it (R^2 <= ~0), ungrouped K-fold is fooled (R^2 near 1) because every image sits in both sides."""
    rng = np.random.default_rng(0)
    n_images, crops = 12, 10
    image = np.repeat(np.arange(n_images), crops)
    identity = rng.normal(size=(n_images, 32))[image] + 0.05 * rng.normal(size=(len(image), 32))
    labels = dict(image=image, sigma=rng.uniform(0.2, 4.0, n_images)[image])
    grouped = probe_representation(identity, labels, classify=None)
    leaky = probe_representation(identity, labels, classify=None, groups=None)
    print(f"image-identity features: grouped R2 {grouped['sigma_r2']:.3f}, ungrouped R2 {leaky['sigma_r2']:.3f}")
    assert grouped['sigma_r2'] < 0.2 and leaky['sigma_r2'] > 0.9
    assert leaky['n_groups'] is None


def test_noise_classifier_and_chance_level():
    rng = np.random.default_rng(1)
    noise = np.tile([0.0, 5.0, 10.0, 10.0], 30)          # unbalanced: the majority class is half the data
    image = np.repeat(np.arange(10), 12)
    feats = np.stack([noise / 5 + 0.3 * rng.normal(size=len(noise)), rng.normal(size=len(noise))], 1)
    out = probe_representation(feats, dict(image=image, noise=noise), regress=None)
    assert out['noise_accuracy'] > 0.95 and out['noise_chance'] == pytest.approx(0.5)
    assert out['noise_classes'] == [0.0, 5.0, 10.0] and 'sigma_r2' not in out


def test_probe_errors_name_the_problem():
    x = np.random.default_rng(0).normal(size=(12, 3))
    labels = dict(image=np.repeat(np.arange(4), 3), sigma=np.linspace(0, 1, 12), noise=np.zeros(12))
    with pytest.raises(ValueError, match="labels\\['noise'\\] has a single value"):
        probe_representation(x, labels)
    with pytest.raises(KeyError, match="labels has no 'blur'"):
        probe_representation(x, labels, regress='blur', classify=None)
    with pytest.raises(KeyError, match="no 'scene' to group by"):
        probe_representation(x, labels, classify=None, groups='scene')
    with pytest.raises(ValueError, match="labels\\['sigma'\\] has 12 values for 11 feature rows"):
        probe_representation(x[:11], {**labels, 'image': labels['image'][:11]}, classify=None)
    with pytest.raises(ValueError, match="at least 3 distinct 'image'"):
        probe_representation(x, {**labels, 'image': np.arange(12) % 2}, classify=None)
    with pytest.raises(ValueError, match='NaN or inf'):
        probe_representation(np.full((12, 3), np.nan), labels, classify=None)
    with pytest.raises(ValueError, match='nothing to probe'):
        probe_representation(x, labels, regress=None, classify=None)
    with pytest.raises(ValueError, match='must be a non-empty \\(N, D\\) array'):
        probe_representation(np.zeros(12), labels, classify=None)


# --- collecting representations --------------------------------------------------------------------------------

def test_same_crops_under_every_degradation_and_reproducible(textures):
    identity_lr = lambda lr: lr.flatten(1)[:, :16]
    grid = [DASRDegradation(4, 'iso', sigma=1.0), DASRDegradation(4, 'iso', sigma=1.0)]   # the same degradation twice
    feats, labels = collect_representations(identity_lr, textures, grid, crops_per_image=3, lr_size=16,
                                            generator=torch.Generator().manual_seed(5))
    assert feats.shape == (6 * 2 * 3, 16) and feats.dtype == np.float32
    first, second = labels['degradation'] == 0, labels['degradation'] == 1
    np.testing.assert_array_equal(feats[first], feats[second])   # no noise: same crops give the same LR
    again, _ = collect_representations(identity_lr, textures, grid, crops_per_image=3, lr_size=16,
                                       generator=torch.Generator().manual_seed(5))
    np.testing.assert_array_equal(feats, again)
    np.testing.assert_array_equal(labels['crop'][:3], [0, 1, 2])
    assert list(labels['image_name'][[0, -1]]) == ['t0', 't5']


def test_labels_follow_the_degradation_and_batching_does_not_matter(textures):
    ranged = DASRDegradation(4, 'aniso', lambda1=(0.5, 3.0), lambda2=(0.5, 3.0), theta=(0, 3.14), noise=(0, 10))
    plain = lambda hr: hr[..., ::4, ::4]                             # a degradation without parameters
    enc = lambda lr: lr.mean((-2, -1))
    feats, labels = collect_representations(enc, list(textures.values())[:3], [ranged, plain], crops_per_image=5,
                                            lr_size=8, generator=torch.Generator().manual_seed(0), scale=4)
    assert {'lambda1', 'lambda2', 'theta', 'noise'} <= set(labels) and 'kernel' not in labels
    from_ranged = labels['degradation'] == 0
    assert len(np.unique(labels['lambda1'][from_ranged])) == 15          # drawn per crop
    assert np.isnan(labels['lambda1'][~from_ranged]).all()               # nothing reported by the plain one
    assert list(labels['image_name'][:1]) == ['image_0']
    named, named_labels = collect_representations(enc, [('a', textures['t0']), ('b', textures['t1'])], [plain],
                                                  crops_per_image=2, lr_size=8, scale=4)
    assert list(named_labels['image_name']) == ['a', 'a', 'b', 'b']
    small, _ = collect_representations(enc, list(textures.values())[:3], [plain], crops_per_image=5, lr_size=8,
                                       batch_size=2, generator=torch.Generator().manual_seed(0), scale=4)
    big, _ = collect_representations(enc, list(textures.values())[:3], [plain], crops_per_image=5, lr_size=8,
                                     batch_size=64, generator=torch.Generator().manual_seed(0), scale=4)
    np.testing.assert_allclose(small, big, atol=1e-7)


class ModeEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin, self.drop, self.modes = nn.Linear(3, 4), nn.Dropout(0.5), set()
    def forward(self, x):
        self.modes.add((self.training, torch.is_inference_mode_enabled()))
        return self.drop(self.lin(x.mean((-2, -1))))


@pytest.mark.parametrize('bound', [False, True])
def test_module_encoder_runs_in_eval_mode_and_is_restored(textures, bound):
    "An nn.Module, or a bound method of one (as `model.representation`), is run in eval mode and handed back in train mode."
    enc = ModeEncoder().train()
    collect_representations(enc.forward if bound else enc, textures, degradation_grid([1.0], scale=4),
                            crops_per_image=2, lr_size=8)
    assert enc.modes == {(False, True)} and enc.training and enc.drop.training


def test_collect_errors_name_the_problem(textures):
    grid = degradation_grid([1.0], scale=4)
    with pytest.raises(ValueError, match="image 't0' is 128x128, smaller than the HR crop 192x192"):
        collect_representations(spectrum_encoder, textures, grid, lr_size=48)
    with pytest.raises(ValueError, match='must return a \\(B, D\\) tensor .* got \\(2, 3, 8, 8\\)'):
        collect_representations(lambda lr: lr, textures, grid, crops_per_image=2, lr_size=8)
    with pytest.raises(ValueError, match='images is empty'):
        collect_representations(spectrum_encoder, {}, grid)
    with pytest.raises(ValueError, match='degradations is empty'):
        collect_representations(spectrum_encoder, textures, [])
    with pytest.raises(ValueError, match='give scale'):
        collect_representations(spectrum_encoder, textures, [lambda hr: hr[..., ::4, ::4]])
    with pytest.raises(ValueError, match="image 'bad' must be a float tensor"):
        collect_representations(spectrum_encoder, {'bad': torch.zeros(128, 128)}, grid)


# --- embeddings and figures ---------------------------------------------------------------------------------------

def test_embeddings_and_figure(blur_only):
    feats, labels = blur_only['spectrum']
    pca = embed_2d(feats, 'pca')
    assert pca.shape == (len(feats), 2)
    np.testing.assert_allclose(pca, embed_2d(feats, 'pca'))
    small = embed_2d(feats[:10], 'tsne', seed=0)                  # perplexity capped for a small sample
    assert small.shape == (10, 2) and np.isfinite(small).all()
    np.testing.assert_allclose(small, embed_2d(feats[:10], 'tsne', seed=0))
    with pytest.raises(ValueError, match="method must be 'tsne' or 'pca'"): embed_2d(feats, 'umap')
    fig = plot_representation(pca, labels, keys=('sigma', 'image'))
    assert len(fig.axes) == 2 and fig.axes[0].get_legend() is not None
    cont = plot_representation(pca, dict(value=np.linspace(0, 1, len(pca))), keys=('value',))
    assert len(cont.axes) == 2                                    # the panel and its colour bar
    with pytest.raises(KeyError, match="labels has no \\['theta'\\]"): plot_representation(pca, labels, keys=('sigma', 'theta'))
