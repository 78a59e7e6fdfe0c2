"""End-to-end runs of the experiment notebooks through papermill, as `make demo` and batch users run them."""
from pathlib import Path

import papermill as pm
import pytest

from conftest import ROOT

EXPERIMENTS = ROOT / 'nbs' / 'experiments'


def run_experiment(name, tmp_path, **params):
    out = tmp_path / f'{name}.out.ipynb'
    pm.execute_notebook(str(EXPERIMENTS / f'{name}.ipynb'), str(out), parameters=params,
                        kernel_name='python3', cwd=str(EXPERIMENTS), progress_bar=False)
    return out


def test_degradation_gallery_writes_its_figures(tmp_path):
    out = run_experiment('degradation_gallery', tmp_path, out_dir=str(tmp_path), seed=1)
    figs = sorted(tmp_path.glob('degradation_*.png'))
    assert figs, 'the gallery wrote no figure'
    from blindsr.core import read_image
    for f in figs:
        img, _ = read_image(f)
        assert min(img.shape[-2:]) > 200 and img.std() > 0.05, f'{f.name} looks empty'
    assert out.exists()


def test_bad_parameter_is_reported(tmp_path):
    with pytest.raises(pm.PapermillExecutionError, match='image'):
        run_experiment('degradation_gallery', tmp_path, out_dir=str(tmp_path), image='no_such_image')
