"""Build the offline documentation site of the notebooks without Quarto.

    python tools/build_docs.py [--out DIR] [--no-exec] [--skip-exec GLOB] [--jobs N] [--timeout S] [--strict] [--readme | --readme-only] [--no-site]

Steps (all output under the repository root unless --out is given):

1. ``_proc/``: every notebook under ``nbs/`` (recursively, skipping names starting with ``_`` or ``.``,
   as nbdev does) is executed with execnb in its own process, cwd = the notebook's folder, ``IN_TEST=1``,
   skipping the cells nbdev_test skips (``#| eval: false``, the ``tst_flags`` of settings.ini, and
   ``nbdev_export()`` calls, so building the docs never rewrites the library). Then nbdev's own notebook
   processors (``nbdev.processors.FilterDefaults``, what ``nbdev_proc_nbs`` applies) render ``show_doc``
   for exported functions and classes, hide ``#| hide`` / ``#| export`` sources and write the frontmatter.
   Any exported public function or class still without an API entry gets one from ``show_doc`` on the
   imported object. ``--no-exec`` skips execution (pages then show only the outputs stored in the notebooks; a test
   cell that nbdev runs for its imports but that needs earlier cells falls back to its import statements, with a WARNING);
   ``--skip-exec 'experiments/*'`` skips it for the matching notebooks only (the test suite does so: its
   papermill tests run the experiments end to end already).
2. ``_docs/``: each processed notebook becomes one Markdown page named by its nbdev ``output-file``
   (``02_metrics.ipynb`` -> ``metrics.md``, ``experiments/x.ipynb`` -> ``experiments/x.md``); figures are
   written beside the page, TeX is rendered to SVG with matplotlib's mathtext (no MathJax), and links that
   nbdev points at the doc host become relative links between pages (an ``#anchor`` no heading has is pointed at
   mkdocs' id for it: ``#trainer.fit`` -> ``#trainerfit``, a method without an entry -> its class). Images the readme
   notebook gives relative to the repository root (``figures/x.png``, right for README.md) are found there too.
3. ``mkdocs.yml``: generated (not meant to be edited): material theme with ``font: false``, no external
   JS/CSS (search works when the site is served, e.g. ``python -m http.server -d site``), ``use_directory_urls: false``; nav = index, library notebooks, then each
   sub-folder (``experiments/``) as a section, in notebook order.
4. ``site/``: ``mkdocs build``.

``--readme`` also writes README.md from ``nbs/index.ipynb`` (what ``nbdev_readme`` does with Quarto):
processed, not executed, math left as ``$...$`` for GitHub, links to the doc host pointed at the notebooks in ``nbs/``; ``--readme-only`` does
just that (a few seconds). Papermill-style notebooks (a cell tagged ``parameters``) get their output-folder
parameters (``out_dir``, ``fig_dir``, ...) pointed at a temporary folder while the docs execute them, and long
experiments run with the small parameters given for them in ``docs_params.json`` beside the notebook.
"""
from __future__ import annotations

import argparse
import fnmatch
import base64
import concurrent.futures as cf
import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------------------------------
# Step 1: execute + nbdev processing, one notebook per process


def _directives(cell) -> dict:
    from fastcore.basics import AttrDict
    from nbdev.process import extract_directives
    if cell.get('cell_type') != 'code': return {}
    return extract_directives(AttrDict(source=cell.source), remove=False) or {}


def _skip_cell(cell, flags) -> bool:
    "The cells nbdev_test would not run, plus `nbdev_export()` calls."
    if cell.cell_type != 'code': return True
    if 'nbdev_export' + '(' in cell.source: return True
    d = _directives(cell)
    if d.get('eval:', [''])[0].lower() == 'false': return True
    return bool(flags & d.keys())


_re_def_exp = re.compile(r'^\s*#\|\s*default_exp\s+(\S+)', re.M)


def _exported_defs(nb):
    "[(module, name)] of public top-level functions and classes in the `#| export(s)` cells of `nb`."
    import ast
    from nbdev.config import get_config
    m = next((_re_def_exp.search(c.source) for c in nb.cells if c.cell_type == 'code' and _re_def_exp.search(c.source)), None)
    default = m.group(1) if m else None
    lib = get_config().lib_name
    res = []
    for c in nb.cells:
        d = _directives(c)
        key = next((k for k in ('export', 'exports') if k in d), None)
        if key is None: continue
        mod = d[key][0] if d[key] else default
        if mod is None: continue
        src = '\n'.join(l for l in c.source.splitlines() if not l.lstrip().startswith(('%', '!')))
        try: tree = ast.parse(src)
        except SyntaxError: continue
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith('_'):
                res.append((f'{lib}.{mod}', node.name))
    return res


def _documented(nb) -> set:
    "Names given to `show_doc(...)` in code cells of the processed `nb`."
    out = set()
    for c in nb.cells:
        if c.cell_type == 'code' and c.get('source'):
            out.update(m.split('.')[-1] for m in re.findall(r'^\s*show_doc\(\s*([\w.]+)', c.source, re.M))
    return out


def _dir_params(source: str, tmp: str) -> str:
    "Assignments that redirect the folder parameters (`out_dir`, `*_dir`, ...) of a papermill parameters cell to `tmp`."
    import ast
    try: tree = ast.parse(source)
    except SyntaxError: return ''
    names = [t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
             for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)]
    rx = re.compile(r'^(out|output|save|figs?|figures?|runs?|results?|plots?)_?(dir|path|folder)$')
    names = [n for n in names if rx.match(n.lower())]
    return '\n'.join(f'{n} = {str(Path(tmp) / n)!r}' for n in names)


def _docs_params(src: Path) -> dict:
    "Parameter overrides for notebook `src` from `docs_params.json` in its folder ({notebook stem: {name: value}})."
    f = src.parent / 'docs_params.json'
    if not f.exists(): return {}
    try: return json.loads(f.read_text()).get(src.stem, {})
    except json.JSONDecodeError as e: raise SystemExit(f'{f}: not valid JSON ({e})')


def _warn_title_cell(nb, src):
    "nbdev turns the first markdown cell with a `# title` into frontmatter and drops the rest of that cell: say so."
    for c in nb.cells:
        if c.cell_type != 'markdown' or not re.search(r'^#\s+\S', c.source, re.M): continue
        rest = [l for l in c.source.splitlines() if l.strip() and not re.match(r'^(#\s+\S|>\s|-\s+\S.*:)', l)]
        if rest: print(f'WARNING {src.name}: nbdev drops the text after the title/description in the title cell '
                       f'(move it to its own cell): {rest[0][:60]!r}', file=sys.stderr)
        return


def _unexecuted_procs(src: Path):
    """nbdev's processors for a notebook that is not executed, with a lenient `exec_show_docs`.

    nbdev renders show_doc by running, in a fresh shell, the export cells, the show_doc cells and every cell that
    contains an import. A test cell that mixes imports with code needing earlier (unexecuted) cells then fails the
    whole page (NameError). Here such a cell falls back to its import statements alone (each one; failures ignored,
    with a WARNING) and keeps the outputs stored in the notebook; export and show_doc cells must still run."""
    import ast
    from nbdev.processors import FilterDefaults, exec_show_docs, _do_eval
    class lenient_show_docs(exec_show_docs):
        def __call__(self, cell):
            if not getattr(self.nb, 'has_docs_', False) or not hasattr(self, 'k') or not _do_eval(cell): return
            if cell.directives_.keys() & {'export', 'exports', 'exporti', 'exec_doc'} or re.search(r'^\s*show_doc', cell.source, re.M):
                return super().__call__(cell)
            outs = cell.get('outputs')
            self.k.cell(cell)
            if not self.k.exc: return
            err = f'{type(self.k.exc).__name__}: {self.k.exc}'
            if outs is not None: cell['outputs'] = outs
            code = '\n'.join(l for l in cell.source.splitlines() if not l.lstrip().startswith(('%', '!', '#|')))
            try: imps = [ast.get_source_segment(code, n) for n in ast.walk(ast.parse(code)) if isinstance(n, (ast.Import, ast.ImportFrom))]
            except SyntaxError: imps = []
            for imp in imps:
                self.k.run(imp)
            self.k.exc = None
            print(f'WARNING {src.name}: cell {cell.idx_} failed unexecuted ({err[:120]}); ran its imports only', file=sys.stderr)
    class procs(FilterDefaults):
        def base_procs(self): return [lenient_show_docs if p is exec_show_docs else p for p in super().base_procs()]
    return procs


def process_one(src: Path, dst: Path, execute: bool, timeout: int | None) -> None:
    "Execute (optionally) and nbdev-process notebook `src`, writing the result to `dst`. Raises on errors."
    from execnb.nbio import read_nb, write_nb, mk_cell
    from fastcore.xtras import working_directory
    from nbdev.config import get_config
    from nbdev.processors import FilterDefaults
    os.environ['IN_TEST'] = '1'
    src, dst = Path(src).resolve(), Path(dst)
    nb = read_nb(src)
    exports = _exported_defs(nb)
    _warn_title_cell(nb, src)
    fm_skip = any(re.search(r'^\s*skip_exec\s*:\s*true', c.source, re.M | re.I) for c in nb.cells[:2] if c.cell_type in ('raw', 'markdown'))
    shell = None
    if execute and not fm_skip:
        from execnb.shell import CaptureShell
        flags = set(get_config().get('tst_flags', '').split())
        k = CaptureShell(src, timeout=timeout)
        tmp = tempfile.mkdtemp(prefix='build_docs_')
        def _inject(cell):
            # papermill-style notebooks: point output-folder parameters at a temporary folder, as papermill's `-p`
            # would, so that building the docs never writes into the repository
            if 'parameters' in (cell.get('metadata', {}).get('tags') or []):
                code = _dir_params(cell.source, tmp)
                if code: k.run_cell(code)
                # long experiments run on the small parameters of docs_params.json beside them (as papermill -p would)
                over = _docs_params(src)
                if over: k.run_cell('\n'.join(f'{n} = {v!r}' for n, v in over.items()))
        with working_directory(src.parent):
            try: k.run_all(nb, exc_stop=True, preproc=lambda c: _skip_cell(c, flags), postproc=_inject)
            except Exception:
                sys.stderr.write(k.prettytb(fname=src) + '\n')
                raise SystemExit(f'error while executing {src}')
            finally: shutil.rmtree(tmp, ignore_errors=True)
        shell = k
    if shell is None: procs = _unexecuted_procs(src)()
    else:
        # The notebook ran in `shell`: render show_doc there instead of nbdev's exec_show_docs, which re-runs the
        # export and import cells in a fresh shell (and so fails on cells that mix imports with other code).
        from nbdev.process import Processor
        from nbdev.processors import exec_show_docs
        class shell_show_docs(Processor):
            def begin(self): shell.run_cell('from nbdev.showdoc import show_doc')
            def __call__(self, cell):
                if cell.cell_type == 'code' and re.search(r'^show_doc', cell.source, re.M):
                    shell.cell(cell)
                    if shell.exc: raise Exception(f'error rendering {cell.source!r} in {src}') from shell.exc
        class procs(FilterDefaults):
            def base_procs(self): return [shell_show_docs if p is exec_show_docs else p for p in super().base_procs()]
        procs = procs()
    with working_directory(src.parent): procs(nb)
    # API entries for exported functions/classes that nbdev did not document (e.g. defined in a hidden cell)
    missing = [(m, n) for m, n in exports if n not in _documented(nb)]
    if missing:
        import importlib
        from nbdev.showdoc import show_doc
        nb.cells.append(mk_cell('## Other exported names', 'markdown'))
        for m, n in missing:
            obj = getattr(importlib.import_module(m), n, None)
            if obj is None: continue
            c = mk_cell(f'#| echo: false\n#| output: asis\nshow_doc({n})')
            c['outputs'] = [dict(output_type='display_data', metadata={},
                                 data={'text/markdown': show_doc(obj)._repr_markdown_()})]
            nb.cells.append(c)
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_nb(nb, dst)


# ----------------------------------------------------------------------------------------------------
# Step 2: processed notebook -> Markdown


_re_ansi = re.compile(r'\x1B(?:[@-Z\\-_]|\[[0-?]*[ -/]*[@-~])')
_re_dir = re.compile(r'^\s*#\|\s*([\w-]+)\s*:?\s*(.*?)\s*$')


def _fence(text: str, lang: str = '') -> str:
    n = max([3] + [len(m) + 1 for m in re.findall(r'`{3,}', text)])
    return f"{'`' * n}{lang}\n{text.rstrip()}\n{'`' * n}"


def _src(x) -> str: return ''.join(x) if isinstance(x, list) else (x or '')


def _slug(fragment: str) -> str:
    "A URL fragment as the id mkdocs' toc extension gives the heading of that text."
    from urllib.parse import unquote
    from markdown.extensions.toc import slugify
    return slugify(unquote(fragment), '-')


def _heading_ids(md: str) -> set:
    "The ids mkdocs gives the headings of Markdown page `md` (first occurrences), plus explicit `{#id}` / `id=\"...\"`."
    md = re.sub(r'^(`{3,}|~{3,}).*?^\1[ \t]*$', '', md, flags=re.M | re.S)   # no headings in fenced code
    ids = set(re.findall(r'\{#([\w.:-]+)', md)) | set(re.findall(r'\bid="([^"]+)"', md))
    for h in re.findall(r'^#{1,6}[ \t]+(.+?)[ \t#]*$', md, re.M):
        h = re.sub(r'\{[^}]*\}\s*$', '', h)
        h = re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', re.sub(r'<[^>]+>', '', h)).replace('`', '').replace('*', '')
        ids.add(_slug(h))
    return ids


def fix_anchors(docs: Path) -> int:
    """Links between pages whose `#anchor` no heading has get the heading they mean: nbdev's anchors keep the dot of
    `Class.method` (`train.md#trainer.fit`) where mkdocs' ids do not (`trainerfit`), and nbdev links methods that have
    no entry of their own (`#trainconfig.params`), which then point at their class (`#trainconfig`). Links whose
    anchor exists, or for which neither exists, are left as they are. Returns the number of links changed."""
    mds = {p.relative_to(docs).as_posix(): p for p in docs.rglob('*.md')}
    heads = {k: _heading_ids(p.read_text(encoding='utf-8')) for k, p in mds.items()}
    rx = re.compile(r'\]\(((?:[\w.-]+/)*[\w.-]+\.md)?#([^)\s]+)\)')
    changed = 0
    for k, p in mds.items():
        text = p.read_text(encoding='utf-8')
        def fix(m):
            nonlocal changed
            target = os.path.normpath(os.path.join(os.path.dirname(k), m.group(1))).replace(os.sep, '/') if m.group(1) else k
            ids, frag = heads.get(target), m.group(2)
            if ids is None or frag in ids: return m.group(0)
            for cand in (_slug(frag), _slug(frag.rsplit('.', 1)[0]) if '.' in frag else None):
                if cand and cand in ids:
                    changed += 1
                    return f"]({m.group(1) or ''}#{cand})"
            return m.group(0)
        new = rx.sub(fix, text)
        if new != text: p.write_text(new, encoding='utf-8')
    return changed


def _cell_opts(source: str):
    "Split leading `#| key: value` lines off `source`: (options, code)."
    lines, opts = source.splitlines(), {}
    i = 0
    while i < len(lines):
        m = _re_dir.match(lines[i])
        if m: opts[m.group(1).lower()] = m.group(2).strip().strip('"\''); i += 1
        elif not lines[i].strip(): i += 1
        else: break
    return opts, '\n'.join(lines[i:]).strip('\n')


class MathRenderer:
    "TeX -> SVG files with matplotlib's mathtext (the subset it supports); None where it cannot."
    def __init__(self, outdir: Path):
        self.outdir, self.cache = outdir, {}
        import matplotlib
        matplotlib.use('Agg')

    def __call__(self, tex: str):
        if tex in self.cache: return self.cache[tex]
        import io
        from matplotlib import mathtext
        from matplotlib.font_manager import FontProperties
        t = ' '.join(tex.split())
        for a, b in ((r'\text{', r'\mathrm{'), (r'\operatorname{', r'\mathrm{'), (r'\textrm{', r'\mathrm{'),
                     (r'\dfrac', r'\frac'), (r'\tfrac', r'\frac'), (r'\lvert', '|'), (r'\rvert', '|'),
                     (r'\!', ''), (r'\;', r'\ '), (r'\quad', r'\ \ ')):
            t = t.replace(a, b)
        buf = io.BytesIO()
        try: depth = mathtext.math_to_image(f'${t}$', buf, prop=FontProperties(size=12), format='svg')
        except Exception: res = None
        else:
            svg = re.sub(rb'<!DOCTYPE[^>]*>\s*', b'', buf.getvalue())
            name = hashlib.sha1(tex.encode()).hexdigest()[:16] + '.svg'
            self.outdir.mkdir(parents=True, exist_ok=True)
            (self.outdir / name).write_bytes(svg)
            res = (name, float(depth))
        self.cache[tex] = res
        return res


_re_code = re.compile(r'(^(`{3,}|~{3,}).*?^\2\s*$|`+[^`\n]*?`+)', re.M | re.S)
_re_display = re.compile(r'\$\$(.+?)\$\$', re.S)
_re_inline = re.compile(r'(?<![\\$\w])\$(?![\s$])([^$\n]+?)(?<![\s\\])\$(?![\d$])')


class PageWriter:
    "Converts processed notebooks to Markdown pages under `docs`."
    def __init__(self, docs: Path, pages: dict, cfg, offline: bool = True, readme_root: Path | None = None):
        # pages: nb path (rel to nbs) -> page path (rel to docs); offline=False with readme_root: README mode
        self.docs, self.pages, self.offline, self.readme_root = docs, pages, offline, readme_root
        self.math = MathRenderer(docs / '_math') if offline else None
        host = (cfg.get('doc_host', '') or '').rstrip('/') + '/' + (cfg.get('doc_baseurl', '') or '').strip('/')
        self.re_host = re.compile(re.escape(host.rstrip('/') + '/') + r'([\w./-]+?)\.html') if cfg.get('doc_host') else None
        # nbdev also links private names, which have no API entry: keep just the text
        self.re_private = re.compile(r'\[([^\]]*)\]\(' + re.escape(host.rstrip('/') + '/') + r'[\w./-]+?\.html#_[^)]*\)') if cfg.get('doc_host') else None

    # -- markdown text
    def _rel(self, page: Path, target: str) -> str:
        return os.path.relpath(self.docs / target, (self.docs / page).parent).replace(os.sep, '/')

    def _math_html(self, page, tex, display):
        r = self.math(tex)
        if r is None:
            code = html.escape(tex.strip())
            return f'\n<div class="math-fallback"><code>{code}</code></div>\n' if display else f'<code class="math-fallback">{code}</code>'
        name, depth = r
        src = self._rel(page, f'_math/{name}')
        alt = html.escape(tex.strip(), quote=True)
        if display: return f'\n<div class="math-display"><img src="{src}" alt="{alt}" title="{alt}"></div>\n'
        return f'<img class="math-inline" src="{src}" alt="{alt}" title="{alt}" style="vertical-align:-{depth:.1f}pt">'

    def _prose(self, text, page):
        "Math and callouts in prose (not inside code)."
        if self.offline:
            text = _re_display.sub(lambda m: self._math_html(page, m.group(1), True), text)
            text = _re_inline.sub(lambda m: self._math_html(page, m.group(1), False), text)
        return text

    def markdown(self, text: str, page: Path, nb_dir: Path, files: Path) -> str:
        parts, last = [], 0
        for m in _re_code.finditer(text):
            parts.append(self._prose(text[last:m.start()], page)); parts.append(m.group(0)); last = m.end()
        parts.append(self._prose(text[last:], page))
        text = ''.join(parts)
        text = self._callouts(text, github=not self.offline)
        text = self._links(text, page)
        # images referenced relative to the notebook (e.g. ../figures/x.png): copy beside the page
        def _img(m):
            alt, url = m.group(1), m.group(2)
            if re.match(r'^[a-z]+:|^/|^#', url): return m.group(0)
            p = (nb_dir / url.split('#')[0]).resolve()
            if not p.is_file() and page.as_posix() in ('index.md', 'README.md'):
                # the readme notebook's paths may be relative to the repository root, where README.md lives
                q = (ROOT / url.split('#')[0]).resolve()
                if q.is_file(): p = q
            if not p.is_file(): return m.group(0)
            if self.readme_root is not None:   # README: point at the file in the repository
                return f'![{alt}]({os.path.relpath(p, self.readme_root)})'
            files.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, files / p.name)
            return f'![{alt}]({self._rel(page, (files / p.name).relative_to(self.docs).as_posix())})'
        return re.sub(r'!\[([^\]]*)\]\(([^)\s]+)\)', _img, text)

    def _links(self, text, page):
        "Links nbdev points at the doc host -> relative links between our pages (offline only)."
        if self.re_host is not None and self.offline:
            text = self.re_private.sub(r'\1', text)
            text = self.re_host.sub(lambda m: self._rel(page, self._page_for(m.group(1))), text)
        if self.re_host is not None and self.readme_root is not None:
            # README: the doc host is not a site anyone can open; point at the notebook in the repository instead
            text = self.re_private.sub(r'\1', text)
            text = self.re_host.sub(lambda m: self._notebook_for(m.group(1)), text)
        if not self.offline:   # GitHub shows pandoc link attributes literally
            text = re.sub(r'(\]\([^)\s]+\))\{[^}\n]*\}', r'\1', text)
        return text

    def _notebook_for(self, target: str) -> str:
        "Doc-host page name (e.g. `train`, `experiments/x`) -> the notebook's path relative to the repository root."
        if not hasattr(self, '_nb_pages'):
            nbs = ROOT / 'nbs'
            self._nb_pages = {_output_file(p, p.relative_to(nbs)).with_suffix('').as_posix(): p.relative_to(ROOT).as_posix()
                              for p in sorted(nbs.rglob('*.ipynb')) if not any(q.startswith(('_', '.')) for q in p.relative_to(nbs).parts)}
        return self._nb_pages.get(target, f'nbs/{target}.ipynb')

    def _page_for(self, target: str) -> str:
        "Doc-host page name (e.g. `core`, `experiments/x`) -> our .md path."
        return target + '.md'

    @staticmethod
    def _callouts(text, github=False):
        "Quarto `::: {.callout-note}` blocks -> admonitions (GitHub alerts if `github`); other fenced divs are unwrapped."
        out, stack = [], []
        for line in text.split('\n'):
            m = re.match(r'^:::+\s*\{?\.?callout-(\w+)[^}]*\}?\s*$', line)
            if m:
                k = m.group(1).lower()
                if github: out.append(f"> [!{k.upper() if k in ('note', 'tip', 'important', 'warning', 'caution') else 'NOTE'}]")
                else: out.append(f"!!! {({'important': 'warning', 'caution': 'danger'}).get(k, k)}")
                stack.append(True); continue
            if re.match(r'^:::+\s*\{.*\}\s*$', line) or re.match(r'^:::+\s*\S+', line): stack.append(False); continue
            if re.match(r'^:::+\s*$', line) and stack: stack.pop(); out.append(''); continue
            if any(stack): line = ('> ' + line).rstrip() if github else ('    ' + line if line else line)
            out.append(line)
        return '\n'.join(out)

    # -- outputs
    def _image(self, data, mime, meta, files, page, idx, cap):
        if not self.offline: return ''   # README: no figure files beside it
        ext = {'image/png': 'png', 'image/jpeg': 'jpg', 'image/svg+xml': 'svg'}[mime]
        files.mkdir(parents=True, exist_ok=True)
        fn = files / f'fig-{idx}.{ext}'
        if ext == 'svg': fn.write_text(_src(data))
        else: fn.write_bytes(base64.b64decode(_src(data)))
        width = (meta or {}).get(mime, {}).get('width') if isinstance((meta or {}).get(mime), dict) else None
        src = self._rel(page, fn.relative_to(self.docs).as_posix())
        alt = html.escape(cap or f'figure {idx}', quote=True)
        w = f' width="{int(width)}"' if width else ''
        img = f'<img src="{src}" alt="{alt}"{w}>'
        return f'<figure class="nb-figure">\n{img}\n' + (f'<figcaption>{html.escape(cap)}</figcaption>\n' if cap else '') + '</figure>'

    def outputs(self, outs, opts, files, page, counter):
        blocks, stream = [], []
        def flush():
            if stream: blocks.append(_fence(_re_ansi.sub('', ''.join(stream)), 'text')); stream.clear()
        for o in outs:
            ot = o.get('output_type')
            if ot == 'stream': stream.append(_src(o.get('text'))); continue
            flush()
            if ot == 'error':
                blocks.append(_fence(_re_ansi.sub('', '\n'.join(o.get('traceback') or [f"{o.get('ename')}: {o.get('evalue')}"])), 'text'))
                continue
            data = o.get('data', {})
            if 'text/markdown' in data: blocks.append(self._links(_src(data['text/markdown']).strip(), page))
            elif 'text/html' in data:
                h = _src(data['text/html']).strip()
                blocks.append(f'<div class="nb-html-output" markdown="0">\n{h}\n</div>')
            elif any(k in data for k in ('image/png', 'image/jpeg', 'image/svg+xml')):
                mime = next(k for k in ('image/png', 'image/jpeg', 'image/svg+xml') if k in data)
                counter[0] += 1
                blocks.append(self._image(data[mime], mime, o.get('metadata'), files, page, counter[0], opts.get('fig-cap')))
            elif 'text/latex' in data and self.offline:
                blocks.append(self._prose(_src(data['text/latex']), page))
            elif 'text/plain' in data:
                txt = _re_ansi.sub('', _src(data['text/plain']))
                blocks.append(txt.strip() if opts.get('output') == 'asis' else _fence(txt, 'text'))
        flush()
        return blocks

    # -- whole page
    def page(self, nb: dict, page: Path, nb_dir: Path) -> str:
        cells = nb['cells']
        fm = {}
        if cells and cells[0]['cell_type'] == 'raw' and _src(cells[0]['source']).lstrip().startswith('---'):
            import yaml
            fm = yaml.safe_load(_src(cells[0]['source']).strip().strip('-')) or {}
            cells = cells[1:]
        files = self.docs / page.parent / (page.stem + '_files')
        counter, blocks = [0], []
        title = fm.get('title') or page.stem
        blocks.append(f'# {title}')
        if fm.get('description'): blocks.append(f"> {fm['description']}")
        for c in cells:
            src = _src(c.get('source'))
            if c['cell_type'] == 'markdown':
                if '<!-- WARNING: THIS FILE WAS AUTOGENERATED' in src or not src.strip(): continue
                blocks.append(self.markdown(src, page, nb_dir, files).strip())
            elif c['cell_type'] == 'raw':
                continue
            elif c['cell_type'] == 'code':
                opts, code = _cell_opts(src)
                if opts.get('include') == 'false': continue
                if code.strip() and opts.get('echo') != 'false':
                    fenced = _fence(code, 'python')
                    if opts.get('code-fold') in ('show', 'true'):
                        summ = opts.get('code-summary') or 'Code'
                        adm = '???+' if opts['code-fold'] == 'show' else '???'
                        fenced = f'{adm} note "{summ}"\n\n' + '\n'.join('    ' + l if l else l for l in fenced.split('\n'))
                    blocks.append(fenced)
                if opts.get('output') != 'false':
                    blocks.extend(self.outputs(c.get('outputs', []), opts, files, page, counter))
        return '\n\n'.join(b for b in blocks if b) + '\n', title


# ----------------------------------------------------------------------------------------------------
# Step 3+4: mkdocs


_EXTRA_CSS = """\
.md-typeset .math-display { text-align: center; margin: 1em 0; overflow-x: auto; }
.md-typeset img.math-inline { display: inline; margin: 0; }
.md-typeset .math-fallback { white-space: pre-wrap; }
.md-typeset figure.nb-figure { margin: 1em 0; }
.md-typeset figure.nb-figure img { max-width: 100%; height: auto; }
.md-typeset .nb-html-output { overflow-x: auto; }
.md-grid { max-width: 76rem; }
[data-md-color-scheme="slate"] .md-typeset img.math-inline,
[data-md-color-scheme="slate"] .md-typeset .math-display img { filter: invert(1); }
"""


def _yaml_str(s: str) -> str: return json.dumps(s, ensure_ascii=False)


def mkdocs_yml(cfg, nav, docs_dir: str, site_dir: str) -> str:
    def nav_lines(items, ind):
        out = []
        for title, v in items:
            if isinstance(v, list): out.append(f"{' ' * ind}- {_yaml_str(title)}:"); out += nav_lines(v, ind + 4)
            else: out.append(f"{' ' * ind}- {_yaml_str(title)}: {_yaml_str(v)}")
        return out
    return '\n'.join([
        '# GENERATED by tools/build_docs.py -- do not edit; rebuild instead.',
        f"site_name: {_yaml_str(cfg.get('title', cfg.get('lib_name', 'docs')))}",
        f"site_description: {_yaml_str(cfg.get('description', ''))}",
        f"site_author: {_yaml_str(cfg.get('author', ''))}",
        f"copyright: {_yaml_str('Copyright ' + cfg.get('copyright', ''))}",
        f'docs_dir: {_yaml_str(docs_dir)}',
        f'site_dir: {_yaml_str(site_dir)}',
        'use_directory_urls: false',
        'theme:',
        '  name: material',
        '  font: false',
        '  language: en',
        '  features: [navigation.top, navigation.sections, toc.follow, content.code.copy]',
        '  palette:',
        '    - scheme: default',
        '      primary: indigo',
        '      toggle: {icon: material/brightness-7, name: Dark mode}',
        '    - scheme: slate',
        '      primary: indigo',
        '      toggle: {icon: material/brightness-4, name: Light mode}',
        'plugins:',
        '  - search',
        'extra_css: [stylesheets/extra.css]',
        'markdown_extensions:',
        '  - tables',
        '  - attr_list',
        '  - md_in_html',
        '  - admonition',
        '  - pymdownx.details',
        '  - pymdownx.superfences',
        '  - pymdownx.highlight: {use_pygments: true}',
        '  - toc: {permalink: true}',
        'validation: {links: {anchors: info}}',
        'nav:',
        *nav_lines(nav, 2),
        ''])


# ----------------------------------------------------------------------------------------------------
# Driver


def find_notebooks(nbs: Path):
    "Notebooks in doc order: index, top-level notebooks by name, then each sub-folder (by name) as a section."
    from nbdev.doclinks import nbglob
    files = sorted(Path(p).relative_to(nbs) for p in nbglob(nbs))
    top = [f for f in files if len(f.parts) == 1]
    sub = [f for f in files if len(f.parts) > 1]
    top.sort(key=lambda f: (f.name != 'index.ipynb', f.name))
    sub.sort(key=lambda f: (f.parts[:-1], f.name != 'index.ipynb', f.name))
    return top + sub


def _output_file(nb_path: Path, rel: Path) -> Path:
    "Page path (relative to the docs dir) nbdev would give `rel`, with .md."
    from nbdev.frontmatter import FrontmatterProc
    from nbdev.process import NBProcessor
    try:
        nb = NBProcessor(nb_path, procs=FrontmatterProc, process=True).nb
        out = getattr(nb, 'frontmatter_', {}).get('output-file')
    except Exception: out = None
    name = Path(out).stem if out else re.sub(r'^\d+[a-z]?_', '', rel.stem)
    return rel.parent / (name + '.md')


def _run_worker(src, dst, execute, timeout):
    t = time.time()
    cmd = [sys.executable, str(Path(__file__).resolve()), '--_one', str(src), str(dst), '--timeout', str(timeout)]
    if not execute: cmd.append('--no-exec')
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout + 120 if timeout else None)
    return p.returncode, p.stdout + p.stderr, time.time() - t


def build(out: Path = ROOT, execute: bool = True, jobs: int | None = None, timeout: int = 600,
          strict: bool = False, readme: bool = False, site: bool = True, verbose: bool = True, skip_exec=()):
    """Build the docs into `out` (`_proc/`, `_docs/`, `mkdocs.yml`, `site/`); return the site dir. Notebooks whose path
    (relative to nbs/) matches a glob of `skip_exec` are processed without being executed."""
    os.chdir(ROOT)
    from nbdev.config import get_config
    cfg = get_config()
    nbs = Path(cfg.nbs_path)
    out = Path(out).resolve()
    proc, docs, site_dir = out / '_proc', out / '_docs', out / 'site'
    log = print if verbose else (lambda *a, **k: None)
    t0 = time.time()
    nbfiles = find_notebooks(nbs)
    if not nbfiles: raise SystemExit(f'no notebooks found under {nbs}')
    shutil.rmtree(proc, ignore_errors=True); proc.mkdir(parents=True)
    def _nbs_files(): return {p for p in nbs.rglob('*') if p.is_file() and not {'__pycache__', '.ipynb_checkpoints'} & set(p.parts)}
    before = _nbs_files()
    jobs = jobs or min(len(nbfiles), os.cpu_count() or 1)
    run_it = {f: execute and not any(fnmatch.fnmatch(Path(f).as_posix(), g) for g in skip_exec) for f in nbfiles}
    log(f'[docs] executing+processing {len(nbfiles)} notebooks with {jobs} workers '
        f"({'executing' if execute else 'not executing'}{f', not executing {sum(not v for v in run_it.values())} matching {list(skip_exec)}' if execute and skip_exec else ''})")
    failed = []
    with cf.ThreadPoolExecutor(jobs) as ex:
        futs = {ex.submit(_run_worker, nbs / f, proc / f, run_it[f], timeout): f for f in nbfiles}
        for fu in cf.as_completed(futs):
            f = futs[fu]
            try: rc, msg, dt = fu.result()
            except subprocess.TimeoutExpired: rc, msg, dt = 1, 'timed out', float(timeout)
            log(f'[docs]   {f} {"ok" if rc == 0 else "FAILED"} ({dt:.1f}s)')
            for l in msg.splitlines():
                if rc == 0 and l.startswith('WARNING'): log(f'[docs]     {l}')
            if rc: failed.append((f, msg))
    if failed:
        for f, msg in failed: sys.stderr.write(f'\n==== {f} ====\n{msg[-6000:]}\n')
        raise SystemExit(f'[docs] {len(failed)} notebook(s) failed: ' + ', '.join(map(str, (f for f, _ in failed))))
    t1 = time.time()
    new = sorted(_nbs_files() - before)
    if new: print('[docs] WARNING: files appeared under nbs/ while the notebooks ran (written by a notebook? '
                  'or by someone else): ' + ', '.join(str(p) for p in new[:10]), file=sys.stderr)

    # Markdown pages
    shutil.rmtree(docs, ignore_errors=True); docs.mkdir(parents=True)
    pages = {f: _output_file(nbs / f, f) for f in nbfiles}
    writer = PageWriter(docs, pages, cfg)
    nav, sections = [], {}
    for f in nbfiles:
        nb = json.loads((proc / f).read_text(encoding='utf-8'))
        md, title = writer.page(nb, pages[f], (nbs / f).parent)
        (docs / pages[f]).parent.mkdir(parents=True, exist_ok=True)
        (docs / pages[f]).write_text(md, encoding='utf-8')
        entry = ('Home' if pages[f].as_posix() == 'index.md' else str(title), pages[f].as_posix())
        if len(f.parts) == 1: nav.append(entry)
        else:
            sec = ' / '.join(p.replace('_', ' ').capitalize() for p in f.parts[:-1])
            if sec not in sections: sections[sec] = []; nav.append((sec, sections[sec]))
            sections[sec].append(entry)
    if not (docs / 'index.md').exists():   # no nbs/index.ipynb yet: a minimal home page
        (docs / 'index.md').write_text(f"# {cfg.get('title', cfg.lib_name)}\n\n> {cfg.get('description', '')}\n")
        nav.insert(0, ('Home', 'index.md'))
    n_fixed = fix_anchors(docs)
    if n_fixed: log(f'[docs] {n_fixed} links pointed at the mkdocs id of their #anchor (nbdev writes `#class.method`)')
    (docs / 'stylesheets').mkdir(exist_ok=True)
    (docs / 'stylesheets' / 'extra.css').write_text(_EXTRA_CSS)
    yml = out / 'mkdocs.yml'
    yml.write_text(mkdocs_yml(cfg, nav, os.path.relpath(docs, out), os.path.relpath(site_dir, out)))
    log(f'[docs] wrote {len(nbfiles)} pages to {docs} and {yml}')

    if readme: build_readme(verbose=verbose)

    if site:
        cmd = [sys.executable, '-m', 'mkdocs', 'build', '--clean', '-q', '-f', str(yml)] + (['--strict'] if strict else [])
        p = subprocess.run(cmd, cwd=out, capture_output=True, text=True, env={**os.environ, 'NO_MKDOCS_2_WARNING': '1'})
        if p.returncode: raise SystemExit(f'[docs] mkdocs build failed:\n{p.stdout}\n{p.stderr}')
        if p.stderr.strip(): log(p.stderr.strip())
        log(f'[docs] site in {site_dir} (open {site_dir / "index.html"})')
    log(f'[docs] done in {time.time() - t0:.1f}s (notebooks {t1 - t0:.1f}s)')
    return site_dir


def build_readme(verbose: bool = True):
    "README.md from the readme notebook (nbs/index.ipynb): nbdev-processed, not executed, math and doc links kept."
    os.chdir(ROOT)
    from nbdev.config import get_config
    cfg = get_config()
    src = Path(cfg.nbs_path) / cfg.get('readme_nb', 'index.ipynb')
    if not src.exists():
        print(f'[docs] no {src}: README.md left as it is')
        return
    with tempfile.TemporaryDirectory() as tmp:
        dst = Path(tmp) / 'index.ipynb'
        rc, msg, _ = _run_worker(src, dst, False, 600)
        if rc: raise SystemExit(f'[docs] README: processing {src} failed\n{msg}')
        rw = PageWriter(Path(tmp), {}, cfg, offline=False, readme_root=ROOT)
        md, _ = rw.page(json.loads(dst.read_text(encoding='utf-8')), Path('README.md'), src.parent)
    readme = ROOT / 'README.md'
    if not readme.exists() or readme.read_text(encoding='utf-8') != md: readme.write_text(md, encoding='utf-8')
    if verbose: print(f'[docs] README.md from {src}')


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--out', default=str(ROOT), help='folder for _proc/, _docs/, mkdocs.yml and site/ (default: repo root)')
    ap.add_argument('--no-exec', action='store_true', help='do not execute the notebooks (no figures)')
    ap.add_argument('--skip-exec', action='append', default=[], metavar='GLOB',
                    help="process but do not execute notebooks matching GLOB (relative to nbs/, e.g. 'experiments/*'); repeatable")
    ap.add_argument('--jobs', type=int, default=None, help='notebooks processed in parallel (default: number of CPUs)')
    ap.add_argument('--timeout', type=int, default=600, help='seconds per notebook cell')
    ap.add_argument('--strict', action='store_true', help='mkdocs --strict: warnings are errors')
    ap.add_argument('--readme', action='store_true', help='also write README.md from nbs/index.ipynb')
    ap.add_argument('--readme-only', action='store_true', help='only write README.md from nbs/index.ipynb (fast, executes nothing)')
    ap.add_argument('--no-site', action='store_true', help='stop after writing the Markdown and mkdocs.yml')
    ap.add_argument('--_one', nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a._one:
        process_one(Path(a._one[0]), Path(a._one[1]), not a.no_exec, a.timeout)
        return
    if a.readme_only: return build_readme()
    build(Path(a.out), execute=not a.no_exec, jobs=a.jobs, timeout=a.timeout, strict=a.strict,
          readme=a.readme, site=not a.no_site, skip_exec=a.skip_exec)


if __name__ == '__main__':
    main()
