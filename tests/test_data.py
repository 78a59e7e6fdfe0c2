"""Tests of blindsr.data beyond the notebook's: folders and their errors, reproducibility across DataLoader workers
and epochs, what a patch is made of, multi-crop, the embedded set, and benchmark LR images and their cache."""
import json
import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import blindsr.data as data
from blindsr.core import ImageFileError, modcrop, read_image, shared_dir, write_image
from blindsr.data import (DASR_ANISO_KERNELS, DASR_ANISO_NOISES, DASR_ISO_WIDTHS, EMBEDDED_SPLIT, BenchmarkSet,
                          HRImageFolder, benchmark_lr_seed, benchmark_pairs, benchmark_root, dasr_setting,
                          dasr_test_settings, dihedral, embedded_dataset, embedded_images, find_images)
from blindsr.degradations import DASRDegradation


def _write(path, hw, seed=0, gray=False, bit_depth=8):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = torch.rand(1 if gray else 3, *hw, generator=torch.Generator().manual_seed(seed))
    return write_image(path, img, bit_depth=bit_depth)


@pytest.fixture
def folder(tmp_path):
    "Five small images in nested folders, plus files that must be ignored."
    root = tmp_path / 'hr'
    for i, (rel, hw) in enumerate([('a.png', (20, 24)), ('sub/b.jpg', (18, 30)), ('sub/deep/c.PNG', (26, 19)),
                                   ('d.bmp', (21, 21)), ('e.tif', (40, 17))]):
        _write(root / rel, hw, seed=i)
    (root / 'readme.txt').write_text('not an image')
    _write(root / '.ipynb_checkpoints' / 'a-checkpoint.png', (20, 20))
    _write(root / 'sub' / '.hidden.png', (20, 20))
    return root


# ---------------------------------------------------------------------------------------------- folders and errors

def test_recursive_sorted_and_filtered(folder):
    ds = HRImageFolder(folder, patch_size=16)
    assert ds.names == ['a', 'd', 'e', 'sub/b', 'sub/deep/c']
    assert [p.name for p in find_images(folder, ['png'])] == ['a.png', 'c.PNG']     # case-insensitive, dot optional
    assert len(ds) == 5 and len(HRImageFolder(folder, patch_size=16, repeat=3)) == 15


def test_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match='nothere: image folder does not exist'):
        HRImageFolder(tmp_path / 'nothere')


def test_root_is_a_file(folder):
    with pytest.raises(NotADirectoryError, match='a.png: is a file'):
        HRImageFolder(folder / 'a.png')


def test_empty_folder_names_folder_and_extensions(tmp_path):
    (tmp_path / 'empty' / 'sub').mkdir(parents=True)
    (tmp_path / 'empty' / 'sub' / 'x.txt').write_text('')
    with pytest.raises(FileNotFoundError, match=r'empty: no images found \(searched recursively for .bmp, .jpeg, .jpg, .png, .tif, .tiff, .webp\)'):
        HRImageFolder(tmp_path / 'empty')


@pytest.mark.parametrize('cache', [True, False])
def test_image_smaller_than_patch_names_file_and_sizes(folder, cache):
    with pytest.raises(ValueError, match=r'e\.tif: image is 40x17 \(HxW\), smaller than the 18x18 patch'):
        HRImageFolder(folder, patch_size=18, cache=cache)
    with pytest.raises(ValueError, match=r'smaller than the 20x20 patch'):         # multi-crop: the largest size counts
        HRImageFolder(folder, patch_size=[(12, 2), (20, 1)], cache=cache)


@pytest.mark.parametrize('cache', [True, False])
def test_corrupt_file_is_named(folder, cache):
    data_ = (folder / 'a.png').read_bytes()
    (folder / 'a.png').write_bytes(data_[:len(data_) // 2] if cache else b'garbage, not a png')
    with pytest.raises(ImageFileError, match='a.png'):
        HRImageFolder(folder, patch_size=16, cache=cache)


def _cut(path, keep=0.5):
    "Truncate `path` (an interrupted copy): its header stays valid, its data ends early."
    whole = path.read_bytes()
    path.write_bytes(whole[:int(len(whole) * keep)])


@pytest.mark.parametrize('cache', [True, False])
def test_truncated_files_stop_the_dataset_before_training_all_named(folder, cache):
    "A header-only check would pass these files; the start names every one, whatever the cache, before any item is read."
    _cut(folder / 'a.png'); _cut(folder / 'sub' / 'b.jpg')
    (folder / 'sub' / 'deep' / 'gone.png').symlink_to(folder / 'nowhere.png')        # a broken link
    with pytest.raises(ImageFileError) as e:
        HRImageFolder(folder, patch_size=16, cache=cache)
    msg = str(e.value)
    assert msg.startswith(f'{folder}: 3 of 6 images cannot be read: {folder / "a.png"} (truncated or corrupt image data'), msg
    assert f'{folder / "sub" / "b.jpg"} (truncated or corrupt image data' in msg and 'gone.png (no such image file)' in msg
    assert 'pass skip_unreadable=True' in msg


@pytest.mark.parametrize('cache', [True, False])
def test_skip_unreadable_warns_lists_and_trains_on_the_rest(folder, cache):
    _cut(folder / 'a.png', 0.7); (folder / 'e.tif').write_bytes(b'')
    with pytest.warns(UserWarning, match=r'2 of 5 images cannot be read: .*skipped \(skip_unreadable=True\): training uses the other 3'):
        ds = HRImageFolder(folder, patch_size=16, cache=cache, skip_unreadable=True)
    assert ds.names == ['d', 'sub/b', 'sub/deep/c'] and len(ds) == 3
    assert [(p.name, why) for p, why in ds.skipped] == [('a.png', ds.skipped[0][1]), ('e.tif', 'file is empty (0 bytes)')]
    assert ds.skipped[0][1].startswith('truncated or corrupt image data') and '2 unreadable files skipped' in repr(ds)
    assert all(torch.isfinite(ds[i]).all() for i in range(len(ds)))                  # every item reads
    for p in folder.rglob('*'):
        if p.is_file() and p.suffix.lower() in ('.png', '.jpg', '.bmp') and p.name != 'a.png' and not p.name.startswith('.'): p.write_bytes(b'x')
    with pytest.raises(ImageFileError, match='5 of 5 images cannot be read: .*none is left to train on'):
        HRImageFolder(folder, patch_size=16, cache=cache, skip_unreadable=True)


def test_patch_size_checked_from_headers_before_decoding(folder, monkeypatch):
    "An image smaller than the patch is named from its header: no file is decoded first (DIV2K: minutes)."
    def no_decoding(path): raise AssertionError(f'{path} decoded before the size check')
    monkeypatch.setattr(data, '_load_compact', no_decoding)
    with pytest.raises(data.PatchSizeError, match=r'e\.tif: image is 40x17 \(HxW\), smaller than the 18x18 patch'):
        HRImageFolder(folder, patch_size=18)


def test_verify_image_formats(tmp_path):
    "verify_image gives the size of every format read_image reads, and refuses what read_image refuses."
    for ext in ('png', 'jpg', 'bmp', 'tif', 'webp'):
        _write(tmp_path / f'x.{ext}', (13, 21))
        assert data.verify_image(tmp_path / f'x.{ext}') == (13, 21)
    _write(tmp_path / 'deep.png', (9, 7), bit_depth=16)
    assert data.verify_image(tmp_path / 'deep.png') == (9, 7)
    from PIL import Image
    Image.new('RGB', (8, 8)).save(tmp_path / 'gif.png', format='GIF')               # a GIF named .png
    with pytest.raises(ImageFileError, match='gif.png: unsupported image format GIF'):
        data.verify_image(tmp_path / 'gif.png')
    whole = (tmp_path / 'x.png').read_bytes()
    (tmp_path / 'flip.png').write_bytes(whole[:60] + bytes([whole[60] ^ 0xFF]) + whole[61:])   # one byte of the pixel data
    with pytest.raises(ImageFileError, match='flip.png: truncated or corrupt image data'):
        data.verify_image(tmp_path / 'flip.png')


def test_argument_errors(folder):
    with pytest.raises(ValueError, match='exactly one of root'):
        HRImageFolder()
    with pytest.raises(ValueError, match='exactly one of root'):
        HRImageFolder(folder, images=[torch.rand(3, 8, 8)])
    with pytest.raises(ValueError, match='repeat must be a positive int'):
        HRImageFolder(folder, patch_size=8, repeat=0)
    with pytest.raises(ValueError, match='seed must be a non-negative int'):
        HRImageFolder(folder, patch_size=8, seed=-1)
    with pytest.raises(ValueError, match='counts are in the pairs'):
        HRImageFolder(folder, patch_size=[(8, 2)], n_patches=4)
    with pytest.raises(TypeError, match='patch_size must be an int or a sequence'):
        HRImageFolder(folder, patch_size=8.5)
    with pytest.raises(IndexError, match='out of range for 5 items'):
        HRImageFolder(folder, patch_size=8)[5]
    with pytest.raises(ValueError, match='epoch must be a non-negative int'):
        HRImageFolder(folder, patch_size=8).set_epoch(-1)
    with pytest.raises(ValueError, match="skip_unreadable must be True or False, got 'yes'"):
        HRImageFolder(folder, patch_size=8, skip_unreadable='yes')


# ---------------------------------------------------------------------------------------------- what items hold

def test_items_float_in_range_and_shapes(folder):
    ds = HRImageFolder(folder, patch_size=16, n_patches=3)
    for i in range(len(ds)):
        x = ds[i]
        assert x.shape == (3, 3, 16, 16) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert ds[-1].shape == (3, 3, 16, 16)


def test_cache_and_no_cache_agree(folder):
    a, b = HRImageFolder(folder, patch_size=16, seed=3), HRImageFolder(folder, patch_size=16, seed=3, cache=False)
    assert b.nbytes == 0 and a.nbytes > 0
    assert a._images[0].dtype == torch.uint8                                          # 8-bit kept compact
    for i in range(len(a)): assert torch.equal(a[i], b[i])


def test_gray_and_16bit_images(tmp_path):
    _write(tmp_path / 'gray.png', (20, 20), gray=True)
    _write(tmp_path / 'deep.png', (20, 20), seed=1, bit_depth=16)
    ds = HRImageFolder(tmp_path, patch_size=20, augment=False)
    deep, gray = ds[0], ds[1]
    assert gray.shape == (2, 3, 20, 20) and torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 0], gray[:, 2])
    assert ds._images[0].dtype == torch.float32                                       # 16 bits kept as float
    assert torch.equal(deep[0], read_image(tmp_path / 'deep.png')[0])


def test_in_memory_images():
    g = torch.Generator().manual_seed(0)
    arr = (np.random.default_rng(0).random((12, 12, 3)) * 255).astype(np.uint8)
    imgs = {'np': arr, 'u8': torch.from_numpy(arr).permute(2, 0, 1), 'float': torch.rand(3, 12, 12, generator=g),
            'gray': torch.rand(12, 12, generator=g), 'rgba': torch.rand(4, 12, 12, generator=g)}
    ds = HRImageFolder(images=imgs, patch_size=12, augment=False, n_patches=1)
    assert ds.names == list(imgs) and ds._images[0].dtype == torch.uint8
    assert torch.equal(ds[0][0], torch.from_numpy(arr).permute(2, 0, 1) / 255) and torch.equal(ds[0], ds[1])
    assert torch.equal(ds[2][0], imgs['float']) and torch.equal(ds[4][0], imgs['rgba'][:3])
    assert torch.equal(ds[3][0], imgs['gray'].expand(3, -1, -1))
    assert HRImageFolder(images=[torch.rand(3, 9, 9)], patch_size=9).names == ['image0000']
    with pytest.raises(ValueError, match="image 'bad': expected \\(C, H, W\\) with C in 1, 3, 4"):
        HRImageFolder(images={'bad': torch.rand(2, 9, 9)}, patch_size=4)
    with pytest.raises(TypeError, match="image 'i': dtype torch.int64 not supported"):
        HRImageFolder(images={'i': torch.zeros(3, 9, 9, dtype=torch.int64)}, patch_size=4)
    with pytest.raises(ValueError, match="image 'small': image is 9x9"):
        HRImageFolder(images={'small': torch.rand(3, 9, 9)}, patch_size=10)


def test_patches_share_their_image(tmp_path):
    "Every patch of item i is a crop of image i (under one of the 8 symmetries); tinted images make it visible too."
    for i in range(4):
        img = torch.rand(3, 14, 15, generator=torch.Generator().manual_seed(i))
        img[0] = (40 * i + 20) / 255                                                   # image i's red is constant
        write_image(tmp_path / f'{i}.png', img)
    ds = HRImageFolder(tmp_path, patch_size=9, n_patches=3, repeat=3)
    images = [read_image(tmp_path / f'{i}.png')[0] for i in range(4)]
    for idx in range(len(ds)):
        img = images[idx % 4]
        views = [dihedral(img, k) for k in range(8)]
        for patch in ds[idx]:
            assert torch.all(patch[0] == (40 * (idx % 4) + 20) / 255)
            assert any(torch.equal(patch, v[:, t:t + 9, l:l + 9]) for v in views
                       for t in range(v.shape[1] - 8) for l in range(v.shape[2] - 8))


def test_augmentation_covers_the_8_symmetries(tmp_path):
    img = torch.arange(3 * 8 * 8, dtype=torch.float32).view(3, 8, 8) / (3 * 64)     # every pixel different
    ds = HRImageFolder(images={'x': img}, patch_size=8, n_patches=4, repeat=30)
    seen = {}
    for i in range(len(ds)):
        for p in ds[i]:
            k = next(k for k in range(8) if torch.equal(p, dihedral(img, k)))
            seen[k] = seen.get(k, 0) + 1
    assert sorted(seen) == list(range(8)) and min(seen.values()) >= 5                 # all 8, roughly uniformly
    plain = HRImageFolder(images={'x': img}, patch_size=8, augment=False, repeat=5)
    assert all(torch.equal(p, img) for i in range(len(plain)) for p in plain[i])


def test_crop_positions_cover_the_image():
    img = torch.zeros(3, 12, 12)
    img[0] = torch.arange(144.).view(12, 12) / 144
    ds = HRImageFolder(images={'x': img}, patch_size=4, augment=False, n_patches=8, repeat=150)
    corners = {round(float(p[0, 0, 0]) * 144) for i in range(len(ds)) for p in ds[i]}
    assert corners == {r * 12 + c for r in range(9) for c in range(9)}               # every top-left position


# ---------------------------------------------------------------------------------------------- reproducibility

def _epoch(ds, workers, epoch, persistent_loader=None):
    ds.set_epoch(epoch)
    loader = persistent_loader or DataLoader(ds, batch_size=3, shuffle=True, num_workers=workers,
                                             generator=torch.Generator().manual_seed(epoch))
    return [b for b in loader]


def test_same_batches_with_0_and_2_workers(folder):
    ds = HRImageFolder(folder, patch_size=12, repeat=2, seed=11)
    for epoch in (0, 1):
        a, b = _epoch(ds, 0, epoch), _epoch(ds, 2, epoch)
        assert len(a) == 4 and all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(_epoch(ds, 0, 0)[0], _epoch(ds, 0, 1)[0])
    other_seed = HRImageFolder(folder, patch_size=12, repeat=2, seed=12)
    assert not torch.equal(_epoch(ds, 0, 0)[0], _epoch(other_seed, 0, 0)[0])


def test_set_epoch_reaches_persistent_workers(folder):
    ds = HRImageFolder(folder, patch_size=12, seed=5)
    reference = {e: [ds.set_epoch(e) or ds[i] for i in range(len(ds))] for e in (0, 1, 2)}
    loader = DataLoader(ds, batch_size=5, num_workers=2, persistent_workers=True)
    for e in (0, 1, 2):
        ds.set_epoch(e)
        (batch,) = list(loader)
        assert torch.equal(batch, torch.stack(reference[e])), f'epoch {e}'


def test_multi_crop_items_and_batches(folder):
    ds = HRImageFolder(folder, patch_size=[(16, 2), (12, 4)], seed=1)
    item = ds[0]
    assert isinstance(item, tuple) and [t.shape for t in item] == [(2, 3, 16, 16), (4, 3, 12, 12)]
    big, small = next(iter(DataLoader(ds, batch_size=5, num_workers=0)))
    assert big.shape == (5, 2, 3, 16, 16) and small.shape == (5, 4, 3, 12, 12)
    b2 = next(iter(DataLoader(ds, batch_size=5, num_workers=2)))
    assert torch.equal(big, b2[0]) and torch.equal(small, b2[1])
    lr_big, p = DASRDegradation(4, 'iso', noise=(0, 10))(big, generator=torch.Generator().manual_seed(0))
    lr_small, _ = DASRDegradation(4, 'iso', noise=(0, 10))(small, params=p, generator=torch.Generator().manual_seed(1))
    assert lr_big.shape == (5, 2, 3, 4, 4) and lr_small.shape == (5, 4, 3, 3, 3)


# ---------------------------------------------------------------------------------------------- embedded set

def test_embedded_split():
    assert len(EMBEDDED_SPLIT['train']) == 6 and len(EMBEDDED_SPLIT['val']) == 2
    assert not set(EMBEDDED_SPLIT['train']) & set(EMBEDDED_SPLIT['val'])
    val = embedded_images('val')
    assert list(val) == ['coffee', 'stereo_motorcycle'] and val['stereo_motorcycle'].shape == (3, 500, 741)
    ds = embedded_dataset('train', patch_size=48, repeat=2)
    assert ds.names == list(EMBEDDED_SPLIT['train']) and len(ds) == 12 and ds[0].shape == (2, 3, 48, 48)
    assert all(x.dtype == torch.uint8 for x in ds._images)
    with pytest.raises(ValueError, match="split must be 'train', 'val', 'probe' or 'all'"):
        embedded_dataset('test')


# ---------------------------------------------------------------------------------------------- benchmarks

@pytest.fixture
def bench(tmp_path):
    root = tmp_path / 'Tiny' / 'HR'
    _write(root / 'one.png', (50, 47), seed=1)
    _write(root / 'two.png', (36, 41), seed=2)
    return root


def test_benchmark_modcrop_and_names(bench):
    bs = BenchmarkSet(bench, 4)
    assert bs.name == 'Tiny' and bs.names == ['one', 'two'] and len(bs) == 2
    name, hr = bs[0]
    assert name == 'one' and hr.shape == (3, 48, 44)
    assert torch.equal(hr, modcrop(read_image(bench / 'one.png')[0], 4))
    assert BenchmarkSet(bench.parent, 3)[1][1].shape == (3, 36, 39)                 # the set folder finds its HR/


@pytest.mark.parametrize('kw', [dict(mode='iso', sigma=1.2), dict(mode='iso', sigma=0.0, noise=5),
                                dict(mode='aniso', lambda1=0.2, lambda2=4.0, theta=math.pi / 4, noise=10)])
def test_benchmark_lr_equals_dasr_degradation(bench, tmp_path, kw):
    bs = BenchmarkSet(bench, 4)
    pairs = bs.pairs(**kw, seed=3, cache_dir=tmp_path / 'cache')
    setting = dasr_setting(4, **kw)
    deg = DASRDegradation(4, kw['mode'], **{k: v for k, v in kw.items() if k != 'mode'})
    for i, (name, hr, lr) in enumerate(pairs):
        ref, _ = deg(hr[None], generator=torch.Generator().manual_seed(benchmark_lr_seed(name, setting, 3)))
        assert lr.shape == (3, hr.shape[1] // 4, hr.shape[2] // 4)
        assert torch.equal(lr, ref[0]), name
        assert torch.equal(read_image(bs.lr_path(i, setting, 3, tmp_path / 'cache'))[0], lr)   # PNG holds it exactly
    if kw.get('noise'):                                                                         # noise differs per image and seed
        other = bs.pairs(**kw, seed=4, cache_dir=False)
        assert not torch.equal(other[0][2], pairs[0][2])


def test_benchmark_cache_is_read_not_recomputed(bench, tmp_path, monkeypatch):
    cache = tmp_path / 'cache'
    first = benchmark_pairs(bench, 4, 'iso', sigma=2.4, noise=5, cache_dir=cache)
    files = sorted(cache.rglob('*.png'))
    assert len(files) == 2
    mtimes = [f.stat().st_mtime_ns for f in files]
    calls = []
    monkeypatch.setattr(data.DASRDegradation, '__call__', lambda *a, **k: calls.append(1) or pytest.fail('recomputed'))
    bs = BenchmarkSet(bench, 4)
    again = bs.pairs('iso', sigma=2.4, noise=5, cache_dir=cache)
    assert not calls and bs.cache_stats == {'computed': 0, 'read': 2}
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    assert all(torch.equal(a[2], b[2]) for a, b in zip(first, again))


def test_benchmark_cache_keyed_by_every_setting(bench, tmp_path, monkeypatch):
    cache = tmp_path / 'cache'
    bs = BenchmarkSet(bench, 4)

    def folders(): return sorted(p.name for p in (cache / 'Tiny').iterdir())
    bs.pairs('iso', sigma=1.2, cache_dir=cache)
    variants = [dict(mode='iso', sigma=1.2, noise=5), dict(mode='iso', sigma=2.4), dict(mode='iso', sigma=1.2, seed=1),
                dict(mode='iso', sigma=1.2, kernel_size=15), dict(mode='iso', sigma=1.2, downsample='s-fold'),
                dict(mode='aniso', lambda1=1.2, lambda2=1.2, theta=0.0)]
    for n, kw in enumerate(variants, start=2):
        bs.pairs(**kw, cache_dir=cache)
        assert len(folders()) == n, kw
    assert bs.cache_stats == {'computed': 2 * len(folders()), 'read': 0}
    assert BenchmarkSet(bench, 2).pairs('iso', sigma=1.2, cache_dir=cache)[0][2].shape == (3, 25, 23)
    assert len(folders()) == len(variants) + 2                                        # the scale is part of the key
    info = json.loads((cache / 'Tiny' / folders()[0] / 'setting.json').read_text())
    assert set(info) >= {'setting', 'seed', 'code'}
    # a new version of the degradation code invalidates everything
    monkeypatch.setattr(data, '_degradation_code_version', lambda: 'changed')
    before = len(folders())
    bs.pairs('iso', sigma=1.2, cache_dir=cache)
    assert len(folders()) == before + 1


def test_benchmark_cache_follows_hr_content(bench, tmp_path):
    cache = tmp_path / 'cache'
    a = BenchmarkSet(bench, 4).pairs('iso', sigma=1.2, cache_dir=cache)
    _write(bench / 'one.png', (50, 47), seed=99)                                     # same name, new pixels
    bs = BenchmarkSet(bench, 4)
    b = bs.pairs('iso', sigma=1.2, cache_dir=cache)
    assert bs.cache_stats == {'computed': 1, 'read': 1} and not torch.equal(a[0][2], b[0][2])
    assert len(list(cache.rglob('one-*.png'))) == 2


def test_benchmark_damaged_cache_is_remade(bench, tmp_path):
    cache = tmp_path / 'cache'
    bs = BenchmarkSet(bench, 4)
    good = bs.pairs('iso', sigma=1.2, cache_dir=cache)
    path = bs.lr_path(0, dasr_setting(4, 'iso', sigma=1.2), 0, cache)
    path.write_bytes(path.read_bytes()[:40])
    bs2 = BenchmarkSet(bench, 4)
    again = bs2.pairs('iso', sigma=1.2, cache_dir=cache)
    assert bs2.cache_stats == {'computed': 1, 'read': 1} and torch.equal(good[0][2], again[0][2])
    assert torch.equal(read_image(path)[0], good[0][2])


def test_benchmark_no_cache(bench, tmp_path, monkeypatch):
    monkeypatch.setenv('BLINDSR_CACHE', str(tmp_path / 'home_cache'))
    BenchmarkSet(bench, 4).pairs('iso', sigma=1.2, cache_dir=False)
    assert not (tmp_path / 'home_cache').exists()
    BenchmarkSet(bench, 4).pairs('iso', sigma=1.2)                                   # default: under $BLINDSR_CACHE
    assert len(list((tmp_path / 'home_cache' / 'benchmark_lr' / 'Tiny').rglob('*.png'))) == 2


def test_benchmark_setting_errors(bench):
    bs = BenchmarkSet(bench, 4)
    with pytest.raises(ValueError, match='needs a fixed sigma'):
        bs.pairs('iso')
    with pytest.raises(ValueError, match='sigma must be a fixed finite number'):
        bs.pairs('iso', sigma=(0.2, 4.0))
    with pytest.raises(ValueError, match='needs fixed theta'):
        bs.pairs('aniso', lambda1=1, lambda2=2)
    with pytest.raises(ValueError, match="mode must be 'iso' or 'aniso'"):
        bs.pairs('gauss', sigma=1)
    with pytest.raises(ValueError, match='noise must be >= 0'):
        bs.pairs('iso', sigma=1, noise=-1)


def test_dasr_grids():
    assert DASR_ISO_WIDTHS[4] == (0.0, 1.2, 2.4, 3.6) and DASR_ISO_WIDTHS[2][-1] == 1.8
    assert len(DASR_ANISO_KERNELS) == 8 and DASR_ANISO_NOISES == (0.0, 5.0, 10.0)
    assert (0.2, 4.0, 0.0) in DASR_ANISO_KERNELS                                      # the official demo.sh example
    iso = dasr_test_settings(3, 'iso')
    assert [s['sigma'] for s in iso] == [0.0, 0.8, 1.6, 2.4] and all(s['noise'] == 0 for s in iso)
    aniso = dasr_test_settings(4, 'aniso')
    assert len(aniso) == 24 and len({json.dumps(s, sort_keys=True) for s in aniso}) == 24
    with pytest.raises(ValueError, match='scales'):
        dasr_test_settings(8, 'iso')


def test_benchmark_root_lookup(tmp_path, monkeypatch):
    monkeypatch.setenv('BLINDSR_DATA', str(tmp_path / 'downloads'))
    monkeypatch.delenv('BLINDSR_BENCHMARKS', raising=False)
    with pytest.raises(FileNotFoundError, match=r"benchmark 'Nope' not found; looked in .*downloads/Nope/HR"):
        benchmark_root('Nope')
    if not (shared_dir() / 'benchmarks' / 'Urban100').exists():
        with pytest.raises(FileNotFoundError, match=r"get it with blindsr.download.download\('Urban100'\)"):
            benchmark_root('Urban100')
    _write(tmp_path / 'downloads' / 'Nope' / 'HR' / 'x.png', (8, 8))
    assert benchmark_root('Nope') == tmp_path / 'downloads' / 'Nope' / 'HR'
    _write(tmp_path / 'env' / 'Nope' / 'HR' / 'x.png', (8, 8))
    monkeypatch.setenv('BLINDSR_BENCHMARKS', str(tmp_path / 'env'))
    assert benchmark_root('Nope') == tmp_path / 'env' / 'Nope' / 'HR'                 # the variable comes first
    assert benchmark_root(tmp_path / 'env' / 'Nope') == tmp_path / 'env' / 'Nope' / 'HR'
    with pytest.raises(FileNotFoundError, match='missing: benchmark folder does not exist'):
        benchmark_root(tmp_path / 'missing')


def test_real_set5(benchmarks_dir, tmp_path, monkeypatch):
    "Set5 from ../shared: found by name, modcropped, and its LR is DASRDegradation's output."
    monkeypatch.setenv('BLINDSR_BENCHMARKS', str(benchmarks_dir))
    bs = BenchmarkSet('Set5', 4)
    assert bs.names == ['baby', 'bird', 'butterfly', 'head', 'woman'] and bs.root == benchmarks_dir / 'Set5' / 'HR'
    pairs = bs.pairs('iso', sigma=1.2, cache_dir=tmp_path)
    shapes = {n: tuple(hr.shape) for n, hr, _ in pairs}
    assert shapes['baby'] == (3, 512, 512) and shapes['bird'] == (3, 288, 288) and shapes['woman'] == (3, 344, 228)
    for name, hr, lr in pairs:
        ref, _ = DASRDegradation(4, 'iso', sigma=1.2)(hr[None])
        assert torch.equal(lr, ref[0]) and lr.shape[-2:] == (hr.shape[1] // 4, hr.shape[2] // 4)
    again = BenchmarkSet('Set5', 4)
    again.pairs('iso', sigma=1.2, cache_dir=tmp_path)
    assert again.cache_stats == {'computed': 0, 'read': 5}
