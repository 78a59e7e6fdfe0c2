"""The encoder-only experiment (nbs/experiments/train_encoder.ipynb) end to end on tiny parameters, and its checks."""
import json

import pytest

from test_experiments import check_parameters, run_experiment

TINY = dict(steps=4, probe_every=2, lr_decay_every=2, encoder_width=4, batch_size=4, queue_size=8, probe_crops=3,
            probe_lr_size=16, probe_sigmas=[0.0, 2.4], probe_noises=[0.0, 10.0], test_sets=[], tsne=False, progress=False)


def test_train_encoder_curve_floor_ceiling_and_resume(tmp_path):
    run = tmp_path / 'run'
    params = dict(TINY, objective='degcon+estimator', images_per_degradation=2, hard_negatives=True, rescale=[0.5, 1.0],
                  out_dir=str(run))
    run_experiment('train_encoder', tmp_path, **params)
    from blindsr.analysis import read_probe_curve
    curve = read_probe_curve(run / 'probe_val.csv')
    assert [r['step'] for r in curve] == [2.0, 4.0]                       # a probe every probe_every steps
    assert all(-1.5 < r['sigma_r2'] <= 1 and 0 <= r['noise_accuracy'] <= 1 and 0 <= r['image_accuracy'] <= 1 for r in curve)
    assert [r['step'] for r in read_probe_curve(run / 'ceiling' / 'probe_val.csv')] == [2.0, 4.0]   # the estimator reference
    m = json.loads((run / 'metrics.json').read_text())
    assert set(m['probes']) == {'untrained', 'degcon+estimator', 'estimator (ceiling)'}
    assert m['probes']['degcon+estimator']['val']['sigma_r2'] == curve[-1]['sigma_r2']
    assert (run / 'figures' / 'train_encoder_curves.png').stat().st_size > 10_000
    assert 'noise accuracy' in (run / 'table.md').read_text()
    assert json.loads((run / 'parameters.json').read_text())['rescale'] == [0.5, 1.0]
    from blindsr.models import load_model
    enc = load_model(run / 'model_inference.pt')                          # the trained encoder, through the registry
    assert type(enc).__name__ == 'DegradationEncoder' and enc.fea_dim == 16
    log = (run / 'log.csv').read_text()
    run_experiment('train_encoder', tmp_path, **params)                   # again: the finished run is reused, not retrained
    assert (run / 'log.csv').read_text() == log
    assert json.loads((run / 'metrics.json').read_text())['curve'] == m['curve']


@pytest.mark.parametrize('name,value,msg', [
    ('positive', 'other_image', "'other_image' needs images_per_degradation >= 2"),
    ('steps', 5, 'must be a multiple of probe_every (2)'),
    ('objective', 'simclr', 'objective='),
    ('hard_negatives', True, 'needs a MoCo objective'),
    ('rescale', [0.0, 1.0], 'must be a (low, high) pair of factors'),
    ('rescale', [0.8, 1.5], '0 < low <= high <= 1'),
    ('encoder_pool', 'max', "parameter encoder_pool='max'"),
    ('n_train_images', 7, 'parameter n_train_images=7'),
])
def test_train_encoder_rejects_bad_parameters(tmp_path, name, value, msg):
    params = dict(TINY, objective='estimator', out_dir=str(tmp_path / 'run'))
    with pytest.raises(ValueError, match=msg.replace('(', r'\(').replace(')', r'\)')):
        check_parameters('train_encoder', **{**params, name: value})


def test_representation_grid_pairs_seeds_and_labels_the_floor(tmp_path):
    "The objective grid: every variant x seed run once (then reused), paired intervals, the floor and the choice on validation."
    budget = {**TINY, 'test_sets': ['Set5']}
    params = dict(objectives={'infonce': {'objective': 'infonce'}, 'estimator': {'objective': 'estimator'}}, seeds=[0, 1],
                  budget=budget, out_dir=str(tmp_path / 'grid'))
    run_experiment('representation', tmp_path, **params)
    md = (tmp_path / 'grid' / 'representation.md').read_text()
    assert '| untrained (floor) |' in md and 'test sigma R² vs infonce (95% CI)' in md
    assert 'chosen on validation' in md and ('undecided' in md or 'higher' in md or 'lower' in md)
    assert '[representation_sr.md](representation_sr.md)' in md                # the SR grid of these representations
    assert (tmp_path / 'grid' / 'representation_curves.png').stat().st_size > 10_000
    summary = json.loads((tmp_path / 'grid' / 'summary.json').read_text())
    assert summary['best'] in ('infonce', 'estimator') and len(summary['values']['estimator / test / sigma_r2']) == 2
    stamp = (tmp_path / 'grid' / 'infonce' / 'seed0' / 'metrics.json').stat().st_mtime
    run_experiment('representation', tmp_path, **params)                  # finished runs are reused
    assert (tmp_path / 'grid' / 'infonce' / 'seed0' / 'metrics.json').stat().st_mtime == stamp


def test_train_encoder_trains_on_the_first_n_photographs(tmp_path):
    "n_train_images: the data cell trains on the first n embedded photographs (how the probe scales with content)."
    from blindsr.data import EMBEDDED_SPLIT
    ns = check_parameters('train_encoder', upto='train_data = ', **dict(TINY, objective='estimator', n_train_images=2,
                                                                      out_dir=str(tmp_path / 'run')))
    assert ns['train_data'].names == list(EMBEDDED_SPLIT['train'][:2]) and len(ns['train_data']) == 200
