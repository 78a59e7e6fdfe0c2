"""The README as a newcomer reads it: its Python blocks run as written, its links lead somewhere, its make targets exist."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / 'README.md').read_text(encoding='utf-8')


def _blocks(lang: str) -> list[str]:
    return re.findall(rf'^```{lang}\n(.*?)^```', README, flags=re.M | re.S)


def test_the_python_blocks_run_as_written(tmp_path):
    "Copied in order into one fresh interpreter, outside the repository: no hidden imports, no NameError."
    blocks = _blocks('python')
    assert blocks, 'the README has no Python block'
    script = tmp_path / 'readme_blocks.py'
    script.write_text('\n\n'.join(blocks), encoding='utf-8')
    p = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f'README Python blocks failed:\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}'
    assert 'bicubic baseline: PSNR-Y' in p.stdout


def test_links_are_relative_and_lead_to_files():
    links = re.findall(r'\]\(([^)\s]+)\)', README)
    assert links
    dead, hosts = [], []
    for url in links:
        if url.startswith(('http://', 'https://')):
            if 'blindsr.github.io' in url: hosts.append(url)   # a site that does not exist
            continue
        if url.startswith('#'): continue
        if not (ROOT / url.split('#')[0]).exists(): dead.append(url)
    assert not hosts, f'links to a host that does not exist: {hosts[:5]}'
    assert not dead, f'relative links to missing files: {dead[:5]}'


def test_the_make_targets_it_names_exist():
    makefile = (ROOT / 'Makefile').read_text()
    targets = set(re.findall(r'^([\w-]+):', makefile, flags=re.M))
    named = set(re.findall(r'`make ([\w-]+)', README)) | {t for b in _blocks('sh') for t in re.findall(r'^make ([\w-]+)', b, re.M)}
    assert named and not named - targets, f'the README names make targets the Makefile lacks: {sorted(named - targets)}'
