"""nbs/experiments/train_pcl.ipynb end to end through papermill, on tiny parameters."""
import json

import papermill as pm
import pytest

from test_experiments import check_parameters, run_experiment

TINY_PCL = dict(backbone='edsr_baseline', variants=['l1', 'l1_pcl', 'l1_adv'], backbone_kwargs={'n_feats': 8, 'n_blocks': 1}, pretrain_steps=2, steps=2,
                steps_per_epoch=1, batch_size=2, hr_patch=32, pcl_k=1, disc_feats=8, benchmark_sets=['Set5'],
                precision='fp32', progress=False)


def test_train_pcl_writes_table_figures_and_resumes(tmp_path, benchmarks_dir):
    run, figs = tmp_path / 'run', tmp_path / 'figs'
    run_experiment('train_pcl', tmp_path, out_dir=str(run), figures_dir=str(figs), **TINY_PCL)
    table = (run / 'table.md').read_text()
    for row in ('Bicubic', 'edsr_baseline L1 ', 'edsr_baseline L1 + PCL', 'edsr_baseline L1 + adv'):
        assert row in table, row
    assert 'Set5' in table and 'Budget:' in table
    m = json.loads((run / 'metrics.json').read_text())
    assert set(m['variants']) == {'l1', 'l1_pcl', 'l1_adv'} and all(v['steps'] == 2 for v in m['variants'].values())
    assert {r['method'] for r in m['grid']} == {'Bicubic', 'edsr_baseline L1', 'edsr_baseline L1 + PCL', 'edsr_baseline L1 + adv'}
    for f in ('train_pcl_comparison.png', 'train_pcl_losses.png', 'train_pcl.md'):
        assert (figs / f).stat().st_size > 400, f
    for v in ('pretrain', 'l1', 'l1_pcl', 'l1_adv'):
        assert (run / v / 'checkpoints' / 'last.pt').exists() and (run / v / 'model_inference.pt').exists()
    # the second run finds every variant finished: nothing is retrained, the same numbers come out
    mtime = (run / 'l1_pcl' / 'checkpoints' / 'last.pt').stat().st_mtime_ns
    run_experiment('train_pcl', tmp_path, out_dir=str(run), **TINY_PCL)
    assert (run / 'l1_pcl' / 'checkpoints' / 'last.pt').stat().st_mtime_ns == mtime
    scores = lambda g: [(r['method'], r['set'], r['psnr'], r['ssim']) for r in g]   # seconds differ between runs
    assert scores(json.loads((run / 'metrics.json').read_text())['grid']) == scores(m['grid'])


@pytest.mark.parametrize('name,value,msg', [
    ('backbone', 'pcl_discriminator', 'must be a registered SR network'),
    ('variants', ['l1', 'pcl'], 'must be a non-empty list of distinct names'),
    ('backbone_kwargs', {'n_layers': 3}, 'edsr_baseline does not take them'),
    ('init', '/no/such/file.pth', 'is not a file'),
    ('vgg_weights', '/no/vgg19.pth', 'parameter vgg_weights'),
])
def test_train_pcl_rejects_bad_parameters(tmp_path, name, value, msg):
    with pytest.raises(ValueError, match=msg):
        check_parameters('train_pcl', out_dir=str(tmp_path / 'run'), **{**TINY_PCL, name: value})
    assert not (tmp_path / 'run').exists()


def test_train_pcl_bad_parameter_through_papermill(tmp_path):
    with pytest.raises(pm.PapermillExecutionError, match="parameter variants=\\['l1', 'pcl'\\]"):
        run_experiment('train_pcl', tmp_path, out_dir=str(tmp_path / 'run'), **{**TINY_PCL, 'variants': ['l1', 'pcl']})
