"""The offline docs site (tools/build_docs.py): built once into a temporary folder, then checked.

Run alone with `pytest tests/test_docs.py`; it executes every library notebook (the experiments are rendered without
execution: their papermill tests run them), so it takes as long as they do. `make docs` executes everything."""
import html
import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / 'nbs'
sys.path.insert(0, str(ROOT / 'tools'))
import build_docs  # noqa: E402


def _notebooks():
    "Every notebook under nbs/, recursively, less nbdev's skipped names (starting with '_' or '.')."
    return sorted(p.relative_to(NBS) for p in NBS.rglob('*.ipynb')
                  if not any(part.startswith(('_', '.')) for part in p.relative_to(NBS).parts))


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp('docs')
    # experiments are not executed here: tests/test_experiments.py and test_pcl_experiment.py run them end to end
    # through papermill; executing them again for their pages would double the suite's slowest part
    p = subprocess.run([sys.executable, str(ROOT / 'tools' / 'build_docs.py'), '--out', str(out), '--skip-exec', 'experiments/*'],
                       cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, f'docs build failed:\n{p.stdout[-4000:]}\n{p.stderr[-8000:]}'
    return out


@pytest.fixture(scope='module')
def pages(site):
    return {p.relative_to(site / 'site').as_posix(): p.read_text(encoding='utf-8') for p in (site / 'site').rglob('*.html')}


def _text(h):
    "Visible text of an HTML page, whitespace collapsed."
    h = re.sub(r'<(script|style)\b.*?</\1>', ' ', h, flags=re.S)
    return ' '.join(html.unescape(re.sub(r'<[^>]+>', ' ', h)).split())


def _norm(s): return re.sub(r'[^0-9a-z]+', '', s.lower())


def test_every_notebook_has_a_page(site, pages):
    nbs = _notebooks()
    assert nbs, 'no notebooks found'
    yml = (site / 'mkdocs.yml').read_text()
    for nb in nbs:
        page = build_docs._output_file(NBS / nb, nb)
        html_name = page.with_suffix('.html').as_posix()
        assert html_name in pages, f'{nb}: no page {html_name}'
        assert f'"{page.as_posix()}"' in yml, f'{nb}: {page} missing from the nav'
    assert 'index.html' in pages


def _exported():
    "(module, name, object) for every public function and class in the `__all__` of the library's modules."
    import pkgutil
    import blindsr
    res = []
    for info in pkgutil.iter_modules(blindsr.__path__, 'blindsr.'):
        if info.name.rsplit('.', 1)[-1].startswith('_'): continue
        mod = importlib.import_module(info.name)
        for n in getattr(mod, '__all__', []):
            o = getattr(mod, n, None)
            if (inspect.isfunction(o) or inspect.isclass(o)) and getattr(o, '__module__', None) == info.name:
                res.append((info.name, n, o))
    return res


def test_api_entries(pages):
    exported = _exported()
    assert exported, 'the library exports nothing?'
    texts = {k: _text(v) for k, v in pages.items()}
    missing = []
    for m, n, o in exported:
        slug = re.sub(r'[^\w\s-]', '', n).strip().lower()
        where = [k for k, h in pages.items() if re.search(rf'<h[2-4][^>]*\bid="{re.escape(slug)}"', h)]
        if not where: missing.append(f'{m}.{n}: no heading'); continue
        doc = (inspect.getdoc(o) or '').strip().split('\n')[0]
        if doc and not any(_norm(doc) in _norm(texts[k]) for k in where):
            missing.append(f'{m}.{n}: docstring not on {where}')
        if not any(re.search(rf'\b(def|class)\b\W+{re.escape(n)}\b', texts[k]) for k in where):
            missing.append(f'{m}.{n}: no signature on {where}')
    assert not missing, '\n'.join(missing)


def test_rendered_figure(site, pages):
    figs = []
    for name, h in pages.items():
        for src in re.findall(r'<img[^>]+src="([^"]+_files/fig-\d+\.(?:png|jpg|svg))"', h):
            f = (site / 'site' / name).parent / src
            assert f.is_file(), f'{name}: missing {src}'
            figs.append(f)
    assert figs, 'no rendered figure in any page'
    assert any(f.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and f.stat().st_size > 1000 for f in figs)


_EXTERNAL = [re.compile(r'<script\b[^>]*\bsrc\s*=\s*["\']?(?:https?:)?//', re.I),
             re.compile(r'<link\b[^>]*\bhref\s*=\s*["\']?(?:https?:)?//[^>]*>', re.I),
             re.compile(r'@import\s+(?:url\()?\s*["\']?(?:https?:)?//', re.I)]


def test_no_external_scripts_or_styles(site):
    bad = []
    for f in (site / 'site').rglob('*'):
        if f.suffix not in ('.html', '.css'): continue
        s = f.read_text(encoding='utf-8', errors='replace')
        for rx in _EXTERNAL:
            for m in rx.finditer(s):
                tag = m.group(0)
                # <link rel="canonical"/"alternate" ...> is not a stylesheet or script
                if tag.lower().startswith('<link') and not re.search(r'rel\s*=\s*["\']?(stylesheet|preload|modulepreload|preconnect)', tag, re.I):
                    continue
                bad.append(f'{f.relative_to(site)}: {tag[:120]}')
    assert not bad, '\n'.join(bad)


def _browser_missing():
    "Why the browser check cannot run here ('' when it can): Debian's chromium and chromedriver, and selenium."
    import importlib.util
    import os
    missing = [p for p in ('/usr/bin/chromium', '/usr/bin/chromedriver') if not os.access(p, os.X_OK)]
    if missing: return f"no {', '.join(missing)}: install Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)"
    if importlib.util.find_spec('selenium') is None: return 'selenium is not installed (a dev requirement: pip install "selenium>=4.10")'
    return ''


def test_the_site_in_a_browser(site, tmp_path):
    "tools/check_site.py: every page opened in headless Chromium, no console error, broken image, link or anchor."
    import os
    import numpy as np
    from PIL import Image
    why = _browser_missing()
    if why:
        if os.environ.get('CI'): pytest.fail(f'CI must run the browser check of the site: {why}')
        pytest.skip(why)
    shots = tmp_path / 'shots'
    p = subprocess.run([sys.executable, str(ROOT / 'tools' / 'check_site.py'), str(site / 'site'), '--screenshots', str(shots), '-q'],
                       cwd=ROOT, capture_output=True, text=True, timeout=840)
    assert p.returncode == 0, f'the site fails in the browser (exit {p.returncode}):\n{p.stdout[-8000:]}\n{p.stderr[-4000:]}'
    for name in ('home.png', 'api.png'):
        f = shots / name
        assert f.is_file(), f'no screenshot {f}:\n{p.stdout[-2000:]}'
        assert f.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n', f'{name} is not a PNG'
        assert f.stat().st_size > 20_000, f'{name}: {f.stat().st_size} bytes, an empty page?'
        with Image.open(f) as im:
            assert im.size == (1280, 900), f'{name}: {im.size}, not the 1280x900 window'
            px = np.asarray(im.convert('L'), dtype=np.float32)
        assert px.std() > 10, f'{name}: nearly a single colour (pixel std {px.std():.1f}): nothing rendered?'
        assert len(np.unique(px)) > 32, f'{name}: {len(np.unique(px))} grey levels, no text or figures?'
