"""The plan of the house (../shared/DESIGN.md) as a test: every import inside blindsr/ is one its module's row allows,
and the check catches an import that breaks it (injected into a copy of the package)."""
import shutil

import pytest

from conftest import ROOT, _shared
from import_plan import read_plan, violations


@pytest.fixture(scope='module')
def plan():
    design = _shared('DESIGN.md')
    return read_plan(design)


def test_the_plan_is_read(plan):
    assert plan['blindsr.core'] == set()
    assert plan['blindsr.data'] == {'blindsr.core', 'blindsr.degradations', 'blindsr.download'}
    assert 'blindsr.distributed' not in plan['blindsr.models'] and 'blindsr.train' in plan
    assert {'blindsr.contrastive', 'blindsr.losses', 'blindsr.methods'} <= set(plan)


def test_blindsr_follows_the_plan(plan):
    bad = violations(ROOT / 'blindsr', plan)
    assert not bad, '\n'.join(bad)


@pytest.mark.parametrize('file,line,expected', [
    ('models/dasr.py', 'from blindsr.train import Trainer\n', 'blindsr.models.dasr imports blindsr.train'),
    ('models/dasr.py', 'from ..contrastive import MoCo\n', 'blindsr.models.dasr imports blindsr.contrastive'),
    ('cli.py', 'def _late():\n    from blindsr import train\n', 'blindsr.cli imports blindsr.train'),
    ('core.py', 'import blindsr.data\n', 'blindsr.core imports blindsr.data'),
])
def test_a_wrong_import_is_caught(plan, tmp_path, file, line, expected):
    pkg = tmp_path / 'blindsr'
    shutil.copytree(ROOT / 'blindsr', pkg, ignore=shutil.ignore_patterns('__pycache__'))
    assert not violations(pkg, plan)
    with open(pkg / file, 'a') as f: f.write('\n' + line)
    bad = violations(pkg, plan)
    assert len(bad) == 1 and expected in bad[0], bad


def test_a_module_outside_the_plan_is_caught(plan, tmp_path):
    pkg = tmp_path / 'blindsr'
    shutil.copytree(ROOT / 'blindsr', pkg, ignore=shutil.ignore_patterns('__pycache__'))
    (pkg / 'helpers.py').write_text('x = 1\n')
    assert violations(pkg, plan) == [f"{pkg / 'helpers.py'}: module blindsr.helpers is not in the plan"]
