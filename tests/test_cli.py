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


def test_a_full_disk_names_the_file_and_leaves_nothing_half_written(tmp_path, images, ckpt, monkeypatch):
    import errno
    import blindsr.core
    from blindsr import cli
    def full(path, data, *a, **k): raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(blindsr.core, 'atomic_write_bytes', full)
    code = cli.main(['upscale', str(images / 'rgb.png'), '-o', str(tmp_path / 'out'), '-c', str(ckpt / 'tiny.pt'), '-q'])
    assert code == 1 and list((tmp_path / 'out').iterdir()) == []
