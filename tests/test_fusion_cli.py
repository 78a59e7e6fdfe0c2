"""Tiled fusion inference and `blindsr fuse`: tiled vs whole-scene output on the golden CAVE scene, a folder of scenes,
simulated scenes scored against their ground truth, and the errors a bad scene gets (file and fault named)."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from blindsr.hsi import upsample_lrhsi
from blindsr.inference import auto_tile_fusion, fuse_tiled
from blindsr.metrics import psnr
from blindsr.models import INFERENCE_FORMAT, create_model, load_model
from blindsr.train import save_checkpoint

BLINDSR = str(Path(sys.executable).parent / 'blindsr')


def run(*args):
    return subprocess.run([BLINDSR, *map(str, args)], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope='module')
def golden(golden_dir):
    d = golden_dir / 'psrt'
    with np.load(d / 'psrt_cave_x4_balloons.npz') as f:
        rgb, lr, up = (torch.from_numpy(f[k]).permute(2, 0, 1).float().contiguous() for k in ('rgb', 'lrhsi', 'hsi_up'))
    return d, rgb, lr, up


def test_tiled_fusion_matches_the_whole_scene(golden):
    "Official PSRT on the 256 x 256 golden scene from its LR HSI, 64-px tiles: >= 50 dB against the untiled output; naive tiles far less."
    d, rgb, lr, up = golden
    net = load_model(d / 'psrt_cave_x4_state.pt')
    with torch.no_grad(): whole = net(rgb[None], up[None])[0]
    peak = float(whole.max() - whole.min())
    tiled = fuse_tiled(net, rgb, lr, upsample=upsample_lrhsi, tile=64, overlap=16, pad=16)
    naive = fuse_tiled(net, rgb, lr, upsample=upsample_lrhsi, tile=64, blend=False)
    p_tiled, p_naive = psnr(tiled, whole, data_range=peak).item(), psnr(naive, whole, data_range=peak).item()
    assert p_tiled >= 50 and p_naive < p_tiled - 30, (p_tiled, p_naive)
    assert torch.allclose(fuse_tiled(net, rgb, hsi_up=up, tile=96), tiled, atol=1e-5)   # LR HSI upsampled per tile = the whole upsampling
    assert auto_tile_fusion(net, 2 ** 30) % 8 == 0 and auto_tile_fusion(net, 2 ** 26) < auto_tile_fusion(net, 2 ** 30)


@pytest.fixture(scope='module')
def tiny_fusion(tmp_path_factory):
    d = tmp_path_factory.mktemp('fusion_ckpt')
    torch.manual_seed(0)
    spec = {'name': 'psrt', 'kwargs': {'embed_dim': 8, 'heads': 2}}
    save_checkpoint(d / 'psrt_tiny.pt', {'format': INFERENCE_FORMAT, 'model_spec': spec,
                                         'state_dict': create_model(spec['name'], **spec['kwargs']).state_dict(),
                                         'step': 0, 'best_score': math.nan})
    return d / 'psrt_tiny.pt'


def test_fuse_a_folder_of_scenes_chw_and_hwc(tmp_path, tiny_fusion):
    scenes = tmp_path / 'scenes'
    scenes.mkdir()
    g = np.random.default_rng(0)
    np.savez(scenes / 'a.npz', rgb=g.random((3, 48, 40), dtype=np.float32), lrhsi=g.random((31, 12, 10), dtype=np.float32))
    np.savez(scenes / 'b.npz', rgb=g.random((32, 32, 3), dtype=np.float32), hsi_up=g.random((32, 32, 31), dtype=np.float32))   # HWC
    r = run('fuse', scenes, '-o', tmp_path / 'out', '-c', tiny_fusion, '--tile', '16', '--overlap', '4', '-q')
    assert r.returncode == 0, r.stderr
    a, b = np.load(tmp_path / 'out' / 'a.npy'), np.load(tmp_path / 'out' / 'b.npy')
    assert a.shape == (31, 48, 40) and b.shape == (31, 32, 32) and a.dtype == np.float32
    net = load_model(tiny_fusion)
    with np.load(scenes / 'a.npz') as f: ref = fuse_tiled(net, torch.from_numpy(f['rgb']), torch.from_numpy(f['lrhsi']), upsample=upsample_lrhsi, tile=16, overlap=4)
    assert np.abs(a - ref.numpy()).max() < 1e-6
    r = run('fuse', scenes, '-o', tmp_path / 'out', '-c', tiny_fusion, '-q')
    assert r.returncode == 1 and 'exists; pass --overwrite' in r.stderr


def test_fuse_simulated_scenes_are_scored(tmp_path, golden):
    d = golden[0]
    (tmp_path / 'gt').mkdir()
    np.save(tmp_path / 'gt' / 'balloons.npy', np.load(d / 'balloons_ms.npy')[:64, :64])
    r = run('fuse', tmp_path / 'gt', '--simulate', '-o', tmp_path / 'out', '-c', d / 'psrt_cave_x4_state.pt', '--tile', '32')
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / 'out' / 'metrics.json').read_text())['balloons']
    from blindsr.hsi import hsi_metrics, read_cave_scene, simulate_fusion_inputs
    gt = read_cave_scene(tmp_path / 'gt' / 'balloons.npy')
    bic = hsi_metrics(simulate_fusion_inputs(gt)['hsi_up'], gt, 4, 'psrt')
    assert m['psrt']['psnr'] > bic['psnr'] + 3 and m['psrt']['sam'] < bic['sam'], (m, bic)   # the official weights beat bicubic
    assert 'PSNR' in r.stdout


def test_fuse_names_the_bad_scene_and_goes_on(tmp_path, tiny_fusion):
    d = tmp_path / 'scenes'
    d.mkdir()
    g = np.random.default_rng(1)
    np.savez(d / 'good.npz', rgb=g.random((3, 16, 16), dtype=np.float32), lrhsi=g.random((31, 4, 4), dtype=np.float32))
    np.savez(d / 'bands30.npz', rgb=g.random((3, 16, 16), dtype=np.float32), lrhsi=g.random((30, 4, 4), dtype=np.float32))
    np.savez(d / 'flat.npz', rgb=g.random((3, 16, 16), dtype=np.float32), lrhsi=g.random((31, 16), dtype=np.float32))
    np.savez(d / 'nan.npz', rgb=np.full((3, 16, 16), np.nan, dtype=np.float32), lrhsi=g.random((31, 4, 4), dtype=np.float32))
    np.savez(d / 'size.npz', rgb=g.random((3, 16, 16), dtype=np.float32), lrhsi=g.random((31, 5, 4), dtype=np.float32))
    np.savez(d / 'nokeys.npz', x=np.zeros(3))
    (d / 'broken.npz').write_bytes(b'not a zip')
    r = run('fuse', d, '-o', tmp_path / 'out', '-c', tiny_fusion, '-q')
    assert r.returncode == 1
    err = r.stderr
    assert 'bands30.npz:lrhsi: the network takes 31 bands' in err
    assert 'flat.npz:lrhsi: expected a 3-D array (31 bands)' in err
    assert 'nan.npz:rgb: holds NaN or infinite values' in err
    assert 'size.npz: rgb is 16x16; the LR HSI must be 1/4 of it, got 5x4' in err
    assert "nokeys.npz: needs arrays 'rgb' and 'lrhsi'" in err
    assert 'broken.npz: not a readable .npz scene' in err
    assert 'Traceback' not in err and '6 of 7 scenes failed' in err
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['good.npy']   # nothing half-written for the others


def test_fuse_and_upscale_refuse_the_other_kind_of_network(tmp_path, tiny_fusion):
    torch.manual_seed(0)
    spec = {'name': 'edsr_baseline', 'kwargs': {'scale': 2, 'n_feats': 8, 'n_blocks': 1}}
    save_checkpoint(tmp_path / 'edsr.pt', {'format': INFERENCE_FORMAT, 'model_spec': spec,
                                           'state_dict': create_model(spec['name'], **spec['kwargs']).state_dict(), 'step': 0, 'best_score': math.nan})
    np.savez(tmp_path / 's.npz', rgb=np.zeros((3, 8, 8), np.float32), lrhsi=np.zeros((31, 2, 2), np.float32))
    r = run('fuse', tmp_path / 's.npz', '-o', tmp_path / 'o', '-c', tmp_path / 'edsr.pt')
    assert r.returncode == 2 and 'not a fusion network; use blindsr upscale' in r.stderr
    from blindsr.core import write_image
    write_image(tmp_path / 'x.png', torch.rand(3, 8, 8))
    r = run('upscale', tmp_path / 'x.png', '-o', tmp_path / 'o', '-c', tiny_fusion)
    assert r.returncode == 2 and 'use blindsr fuse' in r.stderr
    r = run('fuse', tmp_path / 's.npz', '-o', tmp_path / 'o', '-c', tiny_fusion, '--memory-budget', '-1')
    assert r.returncode == 2 and '--memory-budget must be a finite number of MB > 0' in r.stderr
