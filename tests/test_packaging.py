"""What a newcomer or a packager gets: ranges in the requirements, the data in the wheel, a demo that writes only under runs/."""
import configparser
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _cfg():
    c = configparser.ConfigParser(delimiters=['=']); c.read(ROOT / 'settings.ini'); return c['DEFAULT']


def test_requirements_are_ranges_and_pins_live_in_constraints():
    reqs = _cfg()['requirements'].split() + _cfg()['dev_requirements'].split()
    pinned = [r for r in reqs if '==' in r]
    assert not pinned, f'settings.ini pins exact versions (they belong in constraints.txt): {pinned}'
    assert any(r.startswith('torch>=') for r in reqs) and any(r.startswith('spandrel') for r in reqs)
    assert {'tensorboard', 'ipywidgets'} <= {re.split(r'[<>=!]', r)[0] for r in reqs}
    constraints = (ROOT / 'constraints.txt').read_text()
    assert re.search(r'^torch==\d', constraints, re.M) and re.search(r'^torchvision==\d', constraints, re.M)


def test_the_wheel_carries_the_benchmark_sets_and_the_cave_scene(tmp_path):
    p = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w', str(tmp_path), str(ROOT)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    wheel = next(tmp_path.glob('blindsr-*.whl'))
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ('Set5/HR/baby.png', 'Set14/HR/zebra.png', 'CAVE/balloons_ms.npy', 'Set5/SOURCE.md', 'Set14/SOURCE.md', 'CAVE/SOURCE.md'):
        assert f'blindsr/datasets/{f}' in names, f'{f} is not in the wheel'
    assert sum(n.startswith('blindsr/datasets/Set14/HR/') for n in names) == 14


def test_the_packaged_data_is_the_reference_data(benchmarks_dir, golden_dir):
    "Set5/Set14 pixel for pixel as ../shared/benchmarks, the CAVE scene as the golden one."
    from blindsr.core import datasets_dir, read_image
    for name in ('Set5', 'Set14'):
        ours = sorted((datasets_dir() / name / 'HR').glob('*.png'))
        ref = sorted((benchmarks_dir / name / 'HR').glob('*.png'))
        assert [p.name for p in ours] == [p.name for p in ref]
        for a, b in zip(ours, ref):
            assert (read_image(a)[0] == read_image(b)[0]).all(), f'{name}/{a.name} differs from the reference copy'
    assert np.array_equal(np.load(datasets_dir() / 'CAVE' / 'balloons_ms.npy'), np.load(golden_dir / 'psrt' / 'balloons_ms.npy'))


def test_make_demo_writes_only_under_runs():
    "Every folder `make demo` hands to its notebooks is under $(RUNS); `make figures` is the target that writes figures/."
    out = subprocess.run(['make', '-n', '-s', 'demo', 'STAMP=/dev/null', 'RUNS=runs'], cwd=ROOT, capture_output=True, text=True).stdout
    dirs = re.findall(r'-p (\w+_dir) "?([^"\s]+)"?', out)
    assert dirs and {k for k, _ in dirs} >= {'out_dir'}, out
    bad = [(k, v) for k, v in dirs if not v.startswith(f'{ROOT}/runs/')]
    assert not bad, f'make demo writes outside runs/: {bad}'
    figures = subprocess.run(['make', '-n', '-s', 'figures', 'STAMP=/dev/null'], cwd=ROOT, capture_output=True, text=True).stdout
    assert 'figures/' in figures and 'cp ' in figures
