"""Image I/O edge cases and fault injection: every bad file gets an error that names it."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from blindsr.core import ImageFileError, ImageInfo, read_image, write_image

FORMATS = ['.png', '.jpg', '.tif', '.bmp', '.webp']


@pytest.fixture
def rgb():
    return torch.rand(3, 40, 52, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize('ext', FORMATS)
def test_missing_file_is_named(tmp_path, ext):
    p = tmp_path / f'nothere{ext}'
    with pytest.raises(FileNotFoundError, match=f'nothere\\{ext}: no such image file'):
        read_image(p)


@pytest.mark.parametrize('ext', FORMATS)
def test_empty_file_is_named(tmp_path, ext):
    p = tmp_path / f'empty{ext}'
    p.write_bytes(b'')
    with pytest.raises(ImageFileError, match=f'empty\\{ext}: file is empty'):
        read_image(p)


@pytest.mark.parametrize('ext', FORMATS)
@pytest.mark.parametrize('keep', [0.5, 0.9])
def test_truncated_file_is_named(tmp_path, rgb, ext, keep):
    good = write_image(tmp_path / f'good{ext}', rgb)
    data = good.read_bytes()
    p = tmp_path / f'cut{ext}'
    p.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ImageFileError, match=f'cut\\{ext}: (truncated or corrupt|not an image)'):
        read_image(p)


@pytest.mark.parametrize('ext', ['.png', '.jpg', '.tif'])
def test_corrupt_body_is_named(tmp_path, rgb, ext):
    "Header intact, pixel data replaced by garbage. (BMP and lossy WebP carry no integrity check: garbage there decodes as pixels.)"
    data = bytearray(write_image(tmp_path / f'good{ext}', rgb).read_bytes())
    rng = np.random.default_rng(0)
    data[64:] = rng.integers(0, 256, len(data) - 64, dtype=np.uint8).tobytes()
    p = tmp_path / f'bad{ext}'
    p.write_bytes(bytes(data))
    with pytest.raises(ImageFileError, match=f'bad\\{ext}: '):
        read_image(p)


def test_unsupported_files_are_named(tmp_path, rgb):
    (tmp_path / 'notes.png').write_text('hello')
    with pytest.raises(ImageFileError, match='notes.png: not an image'):
        read_image(tmp_path / 'notes.png')
    Image.new('RGB', (8, 8)).save(tmp_path / 'anim.gif')
    with pytest.raises(ImageFileError, match='anim.gif: unsupported image format GIF'):
        read_image(tmp_path / 'anim.gif')
    Image.fromarray(np.zeros((4, 4), np.float32)).save(tmp_path / 'float.tif')
    with pytest.raises(ImageFileError, match='float.tif: unsupported TIFF sample format'):
        read_image(tmp_path / 'float.tif')
    with pytest.raises(ImageFileError, match='adir: is a directory'):
        (tmp_path / 'adir').mkdir(); read_image(tmp_path / 'adir')


def test_write_errors_are_named(tmp_path, rgb):
    with pytest.raises(ImageFileError, match='out.gif: cannot write extension'):
        write_image(tmp_path / 'out.gif', rgb)
    with pytest.raises(ImageFileError, match='out.webp: WEBP cannot store 16-bit'):
        write_image(tmp_path / 'out.webp', rgb, bit_depth=16)
    with pytest.raises(ImageFileError, match='out.png: image to write must be'):
        write_image(tmp_path / 'out.png', torch.rand(2, 8, 8))
    with pytest.raises(ImageFileError, match='out.png: .*NaN'):
        write_image(tmp_path / 'out.png', torch.full((3, 8, 8), float('nan')))
    with pytest.raises(FileNotFoundError, match='nodir'):
        write_image(tmp_path / 'nodir' / 'out.png', rgb)


def test_failed_write_keeps_previous_file(tmp_path, rgb, monkeypatch):
    "An error in the middle of a write leaves the old file intact and no temporary behind."
    p = write_image(tmp_path / 'keep.png', rgb)
    before = p.read_bytes()
    import blindsr.core as core
    def boom(*a, **k): raise OSError('disk full (injected)')
    monkeypatch.setattr(core.os, 'fsync', boom)
    with pytest.raises(OSError, match='injected'):
        write_image(p, torch.zeros_like(rgb))
    assert p.read_bytes() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ['keep.png']


@pytest.mark.parametrize('mode,bits,ext', [('L', 8, '.png'), ('L', 16, '.png'), ('L', 16, '.tif'), ('RGB', 8, '.tif'),
                                           ('RGB', 16, '.png'), ('RGBA', 8, '.png'), ('RGBA', 16, '.png'),
                                           ('LA', 8, '.png'), ('RGBA', 8, '.webp')])
def test_roundtrip_keeps_kind(tmp_path, mode, bits, ext):
    g = torch.Generator().manual_seed(1)
    maxv = 2 ** bits - 1
    c = {'L': 1, 'LA': 1, 'RGB': 3, 'RGBA': 3}[mode]
    img = torch.randint(0, maxv + 1, (c, 9, 11), generator=g) / maxv
    alpha = torch.randint(0, maxv + 1, (1, 9, 11), generator=g) / maxv if 'A' in mode else None
    info = ImageInfo(format=None, bit_depth=bits, mode=mode, alpha=alpha)
    p = write_image(tmp_path / f'x{ext}', img, info, quality=100)
    x, info2 = read_image(p, as_rgb=False)
    assert (info2.mode, info2.bit_depth, x.shape[0]) == (mode, bits, c)
    assert torch.equal((x * maxv).round(), (img * maxv).round())
    if alpha is not None:
        assert torch.equal((info2.alpha * maxv).round(), (alpha * maxv).round())


def test_jpeg_quality_is_used(tmp_path):
    img = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(2))
    lo = write_image(tmp_path / 'lo.jpg', img, quality=10).stat().st_size
    hi = write_image(tmp_path / 'hi.jpg', img, quality=95).stat().st_size
    assert lo < hi / 2


def test_timm_imports_on_cpu_torch():
    "DEVELOPERS.md: timm + the CUDA torchvision wheel on CPU torch; importing blindsr must make timm work."
    code = ("import blindsr, timm, torch\n"
            "m = timm.create_model('resnet50', pretrained=False, features_only=True)\n"
            "fs = m(torch.zeros(1, 3, 64, 64))\n"
            "print([f.shape[1] for f in fs])\n")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == '[64, 256, 512, 1024, 2048]'


def test_torchvision_fix_is_a_no_op_when_not_needed(monkeypatch):
    import types
    import blindsr.core as core
    fake = types.ModuleType('torchvision'); fake.ops = object()
    monkeypatch.setitem(sys.modules, 'torchvision', fake)
    assert core.ensure_torchvision_importable() is False


def test_atomic_writes_get_the_mode_of_the_umask(tmp_path):
    "Files written atomically (checkpoints, images, JSON, CSV) are 0644 under umask 022 and 0600 under 077, as open() gives."
    import os
    from blindsr.core import atomic_write_bytes, write_image
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / 'a.json', b'{}')
        write_image(tmp_path / 'b.png', torch.rand(3, 8, 8))
        assert oct((tmp_path / 'a.json').stat().st_mode & 0o777) == '0o644'
        assert oct((tmp_path / 'b.png').stat().st_mode & 0o777) == '0o644'
        os.umask(0o077)
        atomic_write_bytes(tmp_path / 'c.json', b'{}')
        assert oct((tmp_path / 'c.json').stat().st_mode & 0o777) == '0o600'
    finally:
        os.umask(old)
