"""The benchmark scripts run end to end in their --quick smoke mode and report what they claim to measure. No timing
is asserted here (timings live in the scripts' own output, as ratios against a baseline measured in the same run)."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT

sys.path.insert(0, str(ROOT / 'benchmarks'))
import official_dasr   # noqa: E402
import train_step   # noqa: E402


def test_nudge_one_ulp_moves_every_weight_by_exactly_one_ulp():
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Linear(4, 2))
    before = [p.detach().clone() for p in m.parameters()]
    train_step.nudge_one_ulp(m)
    for b, p in zip(before, m.parameters()):
        assert torch.equal(p.detach(), torch.nextafter(b, torch.full_like(b, math.inf)))
        assert (p.detach() > b).all()


def test_train_step_quick(tmp_path):
    out = tmp_path / 'train_step.json'
    p = subprocess.run([sys.executable, 'benchmarks/train_step.py', '--quick', '--cases', 'fp32', 'bf16+channels_last',
                        '--threads', '1', '--json', str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    r = json.loads(out.read_text())
    cases = {c['case']: c for c in r['cases']}
    assert set(cases) == {'fp32', 'bf16+channels_last'} and all(c['status'] == 'ok' for c in cases.values()), cases
    assert cases['fp32']['speedup'] == 1.0 and cases['bf16+channels_last']['speedup'] > 0
    assert r['flops']['flops_per_step'] > 0 and 0 < cases['fp32']['frac_peak'] and r['peaks']['bf16'] > 0
    q = r['quality']
    assert [run['seed'] for run in q['runs']] == [0, 1] and q['bf16_case'] == 'bf16+channels_last'
    for run in q['runs']: assert all(math.isfinite(run[k]) for k in ('fp32', 'fp32+ulp', 'bf16+channels_last'))
    assert math.isclose(q['diff_db'], sum(run['bf16+channels_last'] - run['fp32'] for run in q['runs']) / 2)
    assert q['pass'] == (abs(q['diff_db']) <= 0.05)
    assert 'target bf16 >= 2x fp32' in p.stdout and 'noise floor' in p.stdout and 'bf16 - fp32: mean' in p.stdout


def test_train_step_rejects_bad_quality_arguments():
    for args, msg in [(['--quality-seeds', '0'], '--quality-seeds must be at least 1'),
                      (['--quality-ema', '1.5'], '--quality-ema must be in [0, 1)'),
                      (['--quality-steps', '-3'], '--quality-steps must be 0')]:
        p = subprocess.run([sys.executable, 'benchmarks/train_step.py', *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert p.returncode == 2 and msg in p.stderr, (args, p.stderr[-500:])


OFFICIAL_DASR = Path('/tmp/official_dasr')   # an export of LongguangWang/DASR (51524af), where a machine has one


@pytest.mark.skipif(official_dasr.check_official(OFFICIAL_DASR) is not None,
                    reason=f"no official DASR export at {OFFICIAL_DASR} (model/blindsr.py, moco/builder.py, ...)")
def test_official_dasr_quick(tmp_path):
    out = tmp_path / 'official_dasr.json'
    p = subprocess.run([sys.executable, 'benchmarks/official_dasr.py', '--quick', '--official', str(OFFICIAL_DASR),
                        '--json', str(out)], cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert '| work | blindsr case | official | blindsr | ratio' in p.stdout
    lines = [l for l in p.stdout.splitlines() if l.startswith('| ') and not l.startswith('| work')]
    assert len(lines) == 8 and not any('failed' in l for l in lines), p.stdout
    r = json.loads(out.read_text())
    assert r['official']['imports_blindsr'] is False and r['blindsr']['imports_official'] is False
    assert [(w['row'], w['case']) for w in r['rows']] == [(row, case) for row in official_dasr.ROWS
                                                         for case in official_dasr.ROW_CASES[row]]
    for w in r['rows']:
        assert len(w['ratios']) == 2 and all(x > 0 for x in w['ratios']) and w['ratio']['median'] > 0
        assert w['quietest_round']['ratio'] in w['ratios']
        assert sorted(w['order']) == ['blindsr', 'official']                       # the order alternates
        assert all(len(b) == 1 and b[0] > 0 for b in w['official'] + w['blindsr'])


def test_official_dasr_rejects_a_path_that_is_no_dasr_export(tmp_path):
    for path, msg in [(tmp_path / 'nowhere', 'no such directory'), (tmp_path, 'missing model/__init__.py, model/blindsr.py')]:
        p = subprocess.run([sys.executable, 'benchmarks/official_dasr.py', '--quick', '--official', str(path)],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert p.returncode != 0 and f"--official {path}" in p.stderr and msg in p.stderr, p.stderr[-1000:]


def test_official_dasr_calls_blindsrs_allocator_tuning_if_any(monkeypatch):
    import blindsr.core   # a stand-in for its tuning (the real one would change this process's malloc)
    monkeypatch.setattr(blindsr.core, 'tune_allocator', lambda: {'MALLOC_TRIM_THRESHOLD_': 1 << 30, 'other': 1}, raising=False)
    r = official_dasr.blindsr_allocator()
    assert r['called'] == 'tune_allocator' and r['malloc_env'] == {'MALLOC_TRIM_THRESHOLD_': str(1 << 30)}


import large_image   # noqa: E402


def test_large_image_reads_the_report_of_time_v():
    report = ("\tCommand being timed: \"blindsr upscale x.png\"\n\tElapsed (wall clock) time (h:mm:ss or m:ss): 1:02.35\n"
              "\tMaximum resident set size (kbytes): 2000000\n")
    assert large_image._time_v(report) == (62.35, 2000000 * 1024)
    assert large_image._time_v(report.replace('1:02.35', '1:00:02.5'))[0] == 3602.5
    with pytest.raises(RuntimeError, match='no wall time'): large_image._time_v('killed')


@pytest.mark.skipif(not Path('/usr/bin/time').exists(), reason='needs /usr/bin/time')
def test_large_image_cli_measures_the_command_on_a_small_photo(golden_dir):
    ckpt = golden_dir / 'dasr' / 'dasr_official_x4_state.pt'
    p = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'large_image.py'), '--cli', str(ckpt), '--cli-size', '96x64',
                        '--repeats', '2'], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(next(l for l in p.stdout.splitlines() if l.startswith('{')))
    assert res['case'] == '96x64' and res['repeats'] == 2 and res['ref_tiles'] == '1x1'
    assert 0 < res['wall_s_min'] <= res['wall_s_median'] <= res['wall_s_max'] and 0.1 < res['peak_rss_gib_max'] < 4
    assert res['psnr_vs_fp32_ref_db'] > 45      # the default precision against fp32, after 8-bit rounding
    assert 'blindsr: ' in p.stdout               # what the command said it chose


@pytest.mark.parametrize('args, message', [(['--cli-size', '1920'], '--cli-size must be WxH'), (['--repeats', '0'], '--repeats must be')])
def test_large_image_rejects_bad_cli_arguments(args, message):
    p = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'large_image.py'), '--cli', 'x.pt', *args], capture_output=True, text=True)
    assert p.returncode == 2 and message in p.stderr
