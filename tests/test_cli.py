"""The `blindsr` console script end to end (subprocess): input kinds, kept formats, and every error path."""
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from blindsr.core import read_image, write_image
from blindsr.models import INFERENCE_FORMAT, create_model
from blindsr.train import save_checkpoint

BLINDSR = str(Path(sys.executable).parent / 'blindsr')


def run(*args):
    return subprocess.run([BLINDSR, *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp('ckpt')
    torch.manual_seed(0)
    spec = {'name': 'edsr_baseline', 'kwargs': {'scale': 2, 'n_feats': 8, 'n_blocks': 1}}
    save_checkpoint(d / 'tiny.pt', {'format': INFERENCE_FORMAT, 'model_spec': spec,
                                    'state_dict': create_model(spec['name'], **spec['kwargs']).state_dict(),
                                    'step': 0, 'best_score': math.nan})
    torch.save({'params': create_model('rcan_x2', n_feats=16, n_groups=1, n_blocks=1).state_dict()}, d / 'rcan_basicsr.pth')
    return d


@pytest.fixture
def images(tmp_path):
    d = tmp_path / 'in'
    d.mkdir()
    write_image(d / 'rgb.png', torch.rand(3, 20, 24))
    write_image(d / 'deep.png', torch.rand(3, 16, 16), bit_depth=16)
    write_image(d / 'gray.png', torch.rand(1, 12, 18))
    rgba, info = torch.rand(3, 16, 16), None
    from blindsr.core import ImageInfo
    write_image(d / 'alpha.png', rgba, ImageInfo(mode='RGBA', alpha=torch.linspace(0, 1, 256).view(1, 16, 16)))
    write_image(d / 'photo.jpg', torch.rand(3, 16, 16))
    return d


def test_help_documents_every_option():
    out = run('upscale', '--help').stdout
    for opt in ('--out-dir', '--checkpoint', '--model', '--scale', '--tile', '--overlap', '--precision', '--device', '--overwrite'):
        assert opt in out, opt


def test_folder_file_and_glob_keep_depth_alpha_and_gray(tmp_path, images, ckpt):
    r = run('upscale', images, '-o', tmp_path / 'out', '-c', ckpt / 'tiny.pt', '-q')
    assert r.returncode == 0, r.stderr
    deep, info = read_image(tmp_path / 'out' / 'deep.png')
    assert deep.shape == (3, 32, 32) and info.bit_depth == 16
    gray, info = read_image(tmp_path / 'out' / 'gray.png', as_rgb=False)
    assert gray.shape == (1, 24, 36) and info.mode == 'L'
    rgba, info = read_image(tmp_path / 'out' / 'alpha.png')
    assert info.alpha is not None and info.alpha.shape == (1, 32, 32)
    assert abs(info.alpha.mean().item() - 0.5) < 0.02                      # the alpha ramp, upscaled
    assert read_image(tmp_path / 'out' / 'photo.jpg')[1].format == 'JPEG'
    r = run('upscale', images / 'rgb.png', '-o', tmp_path / 'one', '-c', ckpt / 'tiny.pt', '--tile', '8', '--overlap', '2', '--pad', '2', '-q')   # a file, tiled
    assert r.returncode == 0 and read_image(tmp_path / 'one' / 'rgb.png')[0].shape == (3, 40, 48)
    r = run('upscale', str(images / '*.png'), '-o', tmp_path / 'glob', '-c', ckpt / 'tiny.pt', '-q')              # a glob
    assert r.returncode == 0 and sorted(p.name for p in (tmp_path / 'glob').iterdir()) == ['alpha.png', 'deep.png', 'gray.png', 'rgb.png']


def test_existing_output_is_refused_unless_overwrite(tmp_path, images, ckpt):
    out = tmp_path / 'out'; out.mkdir()
    (out / 'rgb.png').write_bytes(b'precious')
    r = run('upscale', images / 'rgb.png', images / 'gray.png', '-o', out, '-c', ckpt / 'tiny.pt', '-q')
    assert r.returncode == 1 and 'rgb.png: exists; pass --overwrite' in r.stderr
    assert (out / 'rgb.png').read_bytes() == b'precious' and (out / 'gray.png').exists()   # the rest continued
    assert run('upscale', images / 'rgb.png', '-o', out, '-c', ckpt / 'tiny.pt', '--overwrite', '-q').returncode == 0
    assert read_image(out / 'rgb.png')[0].shape == (3, 40, 48)


def test_unreadable_file_is_reported_and_the_rest_continue(tmp_path, images, ckpt):
    (images / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n not really')
    r = run('upscale', images, '-o', tmp_path / 'out', '-c', ckpt / 'tiny.pt', '-q')
    assert r.returncode == 1 and 'FAILED' in r.stderr and 'broken.png' in r.stderr and '1 of 6 files failed' in r.stderr
    assert (tmp_path / 'out' / 'rgb.png').exists()
    r = run('upscale', tmp_path / 'nothere.png', '-o', tmp_path / 'o2', '-c', ckpt / 'tiny.pt', '-q')
    assert r.returncode == 1 and 'nothere.png' in r.stderr


def test_checkpoint_errors(tmp_path, images, ckpt):
    r = run('upscale', images, '-o', tmp_path / 'out', '-c', tmp_path / 'missing.pt')
    assert r.returncode == 2 and 'missing.pt: no such checkpoint file' in r.stderr
    r = run('upscale', images, '-o', tmp_path / 'out', '-c', ckpt / 'rcan_basicsr.pth', '--model', 'edsr')   # wrong architecture
    assert r.returncode == 2 and "does not match BasicSR's edsr" in r.stderr
    torch.save({'weights': torch.zeros(3)}, tmp_path / 'unknown.pt')                                      # no format blindsr knows
    r = run('upscale', images, '-o', tmp_path / 'out', '-c', tmp_path / 'unknown.pt')
    assert r.returncode == 2 and 'unknown.pt: not a checkpoint of a format blindsr reads' in r.stderr
    r = run('upscale', images, '-o', tmp_path / 'out', '-c', ckpt / 'tiny.pt', '--tile', '8')               # default overlap 16
    assert r.returncode == 2 and '--overlap (16) must be smaller than --tile (8)' in r.stderr
    r = run('upscale', images, '-o', tmp_path / 'out', '-c', ckpt / 'tiny.pt', '--scale', '4')
    assert r.returncode == 2 and 'holds a x2 model' in r.stderr
    assert not (tmp_path / 'out').exists()                                                               # nothing written
    r = run('upscale', images / 'rgb.png', '-o', tmp_path / 'o', '-c', ckpt / 'rcan_basicsr.pth', '--model', 'rcan', '-q')
    assert r.returncode == 0, r.stderr
    r = run('upscale', images / 'rgb.png', '-o', tmp_path / 'auto', '-c', ckpt / 'rcan_basicsr.pth', '-q')   # the architecture from the keys
    assert r.returncode == 0 and read_image(tmp_path / 'auto' / 'rgb.png')[0].shape == (3, 40, 48), r.stderr


def main_in_process(capsys, args):
    "(exit code, stderr) of `blindsr ARGS` run by `blindsr.cli.main` here; argparse's errors exit 2 by SystemExit."
    from blindsr import cli
    try: code = cli.main([str(a) for a in args])
    except SystemExit as e: code = e.code
    return code, capsys.readouterr().err


def _bad_spec_checkpoint(path):
    save_checkpoint(path, {'format': INFERENCE_FORMAT, 'model_spec': {'name': 'no_such_model', 'kwargs': {}},
                           'state_dict': {}, 'step': 0, 'best_score': math.nan})
    return path


@pytest.mark.parametrize('option', [
    ['-o', '{file}'], ['-c', '{tmp}/missing.pt'], ['-c', '{badspec}'], ['-c', '{file}'], ['-m', 'no_such_arch'],
    ['-s', '0'], ['-s', '-2'], ['-s', 'x'], ['-s', '3'], ['--tile', '0'], ['--tile', '-8'], ['--tile', 'x'],
    ['--overlap', '-1'], ['--overlap', 'x'], ['--pad', '-1'], ['--memory-budget', '-1'], ['--memory-budget', '0'],
    ['--memory-budget', 'nan'], ['--memory-budget', 'inf'], ['--memory-budget', 'x'], ['--precision', 'fp64'],
    ['--precision', 'fp16'], ['--device', 'cuda:99'], ['--device', 'tpu'], ['--device', ''], ['--channels-last=yes'],
    ['--no-such-option']])
def test_every_bad_upscale_argument_is_a_named_error_with_exit_2(tmp_path, images, ckpt, option, capsys):
    """Each option with an invalid value: exit 2, one message naming the option or file, no traceback, nothing written."""
    (tmp_path / 'afile').write_text('not a folder')
    fill = {'file': tmp_path / 'afile', 'tmp': tmp_path, 'badspec': _bad_spec_checkpoint(tmp_path / 'badspec.pt')}
    option = [o.format(**fill) for o in option]
    args = ['upscale', images / 'rgb.png', '-c', ckpt / 'tiny.pt', '-o', tmp_path / 'out', *option]
    if option == ['--precision', 'fp16'] and torch.cuda.is_available(): pytest.skip('fp16 is valid on CUDA')
    code, err = main_in_process(capsys, args)   # in this process: an exception would be the user's traceback
    assert code == 2, (option, code, err[-1500:])
    assert 'error' in err, (option, err[-1500:])
    assert not (tmp_path / 'out').exists() or not any((tmp_path / 'out').iterdir())


def test_output_collisions_and_inputs_are_refused_before_any_work(tmp_path, images, ckpt):
    (tmp_path / 'other').mkdir()
    write_image(tmp_path / 'other' / 'rgb.png', torch.rand(3, 8, 8))
    r = run('upscale', images / 'rgb.png', tmp_path / 'other' / 'rgb.png', '-o', tmp_path / 'out', '-c', ckpt / 'tiny.pt', '--overwrite')
    assert r.returncode == 2 and 'would both be written to' in r.stderr and str(images / 'rgb.png') in r.stderr
    before = {p.name: p.read_bytes() for p in images.iterdir()}
    r = run('upscale', images, '-o', images, '-c', ckpt / 'tiny.pt', '--overwrite')
    assert r.returncode == 2 and 'would replace the input' in r.stderr
    assert {p.name: p.read_bytes() for p in images.iterdir()} == before      # the inputs untouched


def test_a_full_disk_names_the_file_and_leaves_nothing_half_written(tmp_path, images, ckpt, monkeypatch, capsys):
    """The disk fills after 100 bytes of any output (PNG streamed row by row, JPEG written whole): each file fails with
    its name, no partial or temporary file remains, and an existing output is left as it was."""
    import contextlib
    import errno
    import blindsr.core
    from blindsr import cli
    real_open = blindsr.core.atomic_open

    class Full:
        def __init__(self, f): self.f, self.n = f, 0
        def write(self, b):
            self.n += len(b)
            if self.n > 100: raise OSError(errno.ENOSPC, 'No space left on device')
            return self.f.write(b)
        def __getattr__(self, k): return getattr(self.f, k)

    @contextlib.contextmanager
    def full_open(path):
        with real_open(path) as f: yield Full(f)
    monkeypatch.setattr(blindsr.core, 'atomic_open', full_open)
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'photo.jpg').write_bytes(b'previous result')
    code = cli.main(['upscale', str(images / 'rgb.png'), str(images / 'photo.jpg'), '-o', str(out), '-c', str(ckpt / 'tiny.pt'),
                     '-q', '--overwrite'])
    err = capsys.readouterr().err
    assert code == 1 and f"{out / 'rgb.png'}: could not be written (No space left on device)" in err, err
    assert f"{out / 'photo.jpg'}: could not be written" in err, err
    assert sorted(p.name for p in out.iterdir()) == ['photo.jpg'] and (out / 'photo.jpg').read_bytes() == b'previous result'


def test_png_outputs_streamed_row_by_row_equal_the_whole_image_path(tmp_path, images, ckpt):
    """The streamed PNG (upscale_rows -> write_png_rows) holds the pixels write_image writes from upscale's whole
    output: colour, 16-bit, gray and alpha (the alpha's bicubic rows computed per band)."""
    import numpy as np
    from PIL import Image
    from blindsr.inference import upscale
    from blindsr.models import load_model
    net = load_model(ckpt / 'tiny.pt')
    r = run('upscale', images, '-o', tmp_path / 'out', '-c', ckpt / 'tiny.pt', '-q', '--precision', 'fp32', '--tile', '17', '--overlap', '4')
    assert r.returncode == 0, r.stderr
    for name in ('rgb.png', 'deep.png', 'gray.png', 'alpha.png'):
        img, info = read_image(images / name)
        if info.mode == 'P': info.mode = 'RGB'
        write_image(tmp_path / name, upscale(net, img, tile=17, overlap=4).clamp_(0, 1), info)
        a, b = (np.array(Image.open(p)) if info.bit_depth == 8 else read_image(p, as_rgb=False)[0].numpy()
                for p in (tmp_path / 'out' / name, tmp_path / name))
        assert a.shape == b.shape and np.abs(a.astype(float) - b.astype(float)).max() <= (0 if name != 'alpha.png' else 1), name


_PEAK = ("import resource, sys\nfrom blindsr.cli import main\ncode = main(sys.argv[1:])\n"
         "print('PEAK_RSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)\nsys.exit(code)")


def _peak_rss(*args):
    r = subprocess.run([sys.executable, '-c', _PEAK, *map(str, args)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return int(r.stdout.split('PEAK_RSS')[-1])


def test_a_large_png_is_upscaled_in_bounded_memory(tmp_path, monkeypatch):
    """3000x2000 x4 -> 12000x8000 under a 400 MB budget: the float output alone would be 1.1 GB and the 8-bit image
    288 MB; the command's peak RSS grows by less than the budget over the same command on a 64x64 image."""
    import numpy as np
    from PIL import Image
    torch.manual_seed(0)
    spec = {'name': 'edsr_baseline', 'kwargs': {'scale': 4, 'n_feats': 8, 'n_blocks': 1}}
    save_checkpoint(tmp_path / 'x4.pt', {'format': INFERENCE_FORMAT, 'model_spec': spec, 'step': 0, 'best_score': math.nan,
                                         'state_dict': create_model(spec['name'], **spec['kwargs']).state_dict()})
    rng = np.random.default_rng(0)
    big = np.repeat(np.repeat(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8), 10, 0), 10, 1)   # 2000 x 3000
    Image.fromarray(big).save(tmp_path / 'big.png', compress_level=1)
    Image.fromarray(big[:64, :64]).save(tmp_path / 'small.png')
    budget = 400
    base = _peak_rss('upscale', tmp_path / 'small.png', '-o', tmp_path / 'o1', '-c', tmp_path / 'x4.pt', '-q', '--memory-budget', budget)
    peak = _peak_rss('upscale', tmp_path / 'big.png', '-o', tmp_path / 'o2', '-c', tmp_path / 'x4.pt', '-q', '--memory-budget', budget)
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', None)   # a 96 Mpx image is what this test writes
    out = Image.open(tmp_path / "o2" / "big.png")
    assert out.size == (12000, 8000) and out.mode == 'RGB'
    assert peak - base <= budget * 2 ** 20, f"peak RSS grew by {(peak - base) / 2 ** 20:.0f} MB over a {budget} MB budget"
    print(f"12000x8000 output: peak RSS {peak / 2 ** 20:.0f} MB, {(peak - base) / 2 ** 20:.0f} MB over the 64x64 run")
