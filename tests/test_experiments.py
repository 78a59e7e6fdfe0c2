"""End-to-end runs of the experiment notebooks through papermill, as `make demo` and batch users run them."""
import json

import papermill as pm
import pytest

from conftest import ROOT

EXPERIMENTS = ROOT / 'nbs' / 'experiments'


def run_experiment(name, tmp_path, **params):
    out = tmp_path / f'{name}.out.ipynb'
    pm.execute_notebook(str(EXPERIMENTS / f'{name}.ipynb'), str(out), parameters=params,
                        kernel_name='python3', cwd=str(EXPERIMENTS), progress_bar=False)
    return out


@pytest.mark.parametrize('path', sorted(EXPERIMENTS.glob('*.ipynb')), ids=lambda p: p.stem)
def test_experiments_have_a_parameters_cell(path):
    "papermill injects parameters after the cell tagged `parameters`; nbdev_clean must keep that tag."
    cells = json.loads(path.read_text())['cells']
    first = next(c for c in cells if c['cell_type'] == 'code')
    assert 'parameters' in first['metadata'].get('tags', []), f'{path.name}: first code cell is not tagged "parameters"'


def test_degradation_gallery_writes_its_figures(tmp_path):
    out = run_experiment('degradation_gallery', tmp_path, out_dir=str(tmp_path / 'figs'), seed=1)
    from blindsr.core import read_image
    for name in ('kernels', 'dasr', 'diverse'):
        f = tmp_path / 'figs' / f'degradation_{name}.png'
        assert f.stat().st_size > 10_000, f'{f.name} missing or tiny'
        img, _ = read_image(f)
        assert min(img.shape[-2:]) > 200 and img.std() > 0.05, f'{f.name} looks empty'
    assert out.exists()


def test_bad_parameter_is_reported(tmp_path):
    with pytest.raises(pm.PapermillExecutionError, match="image='no_such_image'"):
        run_experiment('degradation_gallery', tmp_path, out_dir=str(tmp_path), image='no_such_image')
