"""Check the built docs site in a real browser: headless Chromium (Debian's package) through selenium.

    python tools/check_site.py SITE_DIR [--screenshots DIR] [--port 0] [--api-page models.html]

SITE_DIR (the ``site/`` folder tools/build_docs.py writes) is served by a threaded ``http.server`` on 127.0.0.1
(a free port unless --port is given) and every ``.html`` page in it is opened in headless Chromium. A page fails on

* a console message of level SEVERE (JavaScript errors, failed loads of css/js/fonts/images, 404s), and any request
  the server answered with an error status while the page loaded;
* an ``<img>`` that did not load (``naturalWidth == 0`` once loading ended; SVG figures included);
* an internal link (same origin) whose target does not answer 200, is a folder without ``index.html``, or names an
  ``#anchor`` that no element of the target page has (ids are read from the rendered DOM);
* a link to the configured doc host (settings.ini ``doc_host``; that site does not exist: pages must link to each
  other relatively) or to a host given with --bad-host;
* anything the page loaded from another host (the site must work offline; an online browser would not fail).

Other external links are not fetched (the site is offline); they are counted by host in the summary. Screenshots
(1280x900) of the home page and of one API page go to --screenshots (default: SITE_DIR/../site_check/) as
``home.png`` and ``api.png``. Prints one line per page, the problems under it, then totals; exit status 0 when
no page has a problem, 1 when some do, 2 when the check cannot run (no Chromium, chromedriver or selenium, no
site), 3 when it ran past --timeout.

Needs Debian's chromium and chromium-driver (``apt-get install -y chromium chromium-driver``: /usr/bin/chromium,
/usr/bin/chromedriver) and selenium (a dev requirement). Nothing is fetched from the network: the driver paths
are given to selenium, so Selenium Manager is not used.
"""
from __future__ import annotations

import argparse
import configparser
import functools
import html.parser
import http.server
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INSTALL_HINT = "install Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver"
CHROMIUM_CANDIDATES = ('/usr/bin/chromium', '/usr/bin/chromium-browser')
DRIVER_CANDIDATES = ('/usr/bin/chromedriver',)
WINDOW = (1280, 900)


class SetupError(Exception):
    "The check cannot run (exit status 2)."


# ----------------------------------------------------------------------------------------------------
# The server


class _Handler(http.server.SimpleHTTPRequestHandler):
    "Serves the site quietly and records (path, status) of every request, for the page being checked."
    record = None   # set per server: a callable(path, status)

    def log_request(self, code='-', size='-'):
        try: status = int(getattr(code, 'value', code))
        except (TypeError, ValueError): status = 0
        if self.record is not None: self.record(self.path, status, self.headers.get('X-Check-Site') == 'link')

    def log_message(self, format, *args): pass   # no access log on stderr


class SiteServer:
    "A threaded http.server for `root` on 127.0.0.1:`port` (0: a free port), run in a daemon thread."
    def __init__(self, root: Path, port: int = 0):
        self.lock, self.requests = threading.Lock(), []
        handler = type('Handler', (_Handler,), {'record': self._record})
        try: self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', port), functools.partial(handler, directory=str(root)))
        except OSError as e: raise SetupError(f'cannot serve on 127.0.0.1:{port}: {e}')
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.origin = f'http://127.0.0.1:{self.port}'
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={'poll_interval': 0.1}, daemon=True)

    def _record(self, path, status, from_link_check):
        if from_link_check: return
        with self.lock: self.requests.append((path, status))

    def take_requests(self):
        "The browser's requests since the last call: [(path, status)]."
        with self.lock:
            out, self.requests = self.requests, []
        return out

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


# ----------------------------------------------------------------------------------------------------
# The browser


def _find(explicit, candidates, name):
    if explicit:
        if not (Path(explicit).is_file() and os.access(explicit, os.X_OK)): raise SetupError(f'{name} {explicit}: not an executable file; {INSTALL_HINT}')
        return explicit
    for c in candidates:
        if Path(c).is_file() and os.access(c, os.X_OK): return c
    raise SetupError(f'{name} not found ({", ".join(candidates)}); {INSTALL_HINT}')


def start_browser(chromium: str, chromedriver: str, profile: str, timeout: float):
    "Headless Chromium through selenium and Debian's chromedriver, console logs captured."
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:
        raise SetupError(f'selenium is not installed ({e}): pip install "selenium>=4.10" (a dev requirement of blindsr)')
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', f'--window-size={WINDOW[0]},{WINDOW[1]}',
              '--force-device-scale-factor=1', '--no-first-run', '--no-default-browser-check', '--disable-extensions',
              '--disable-background-networking', '--disable-component-update', '--disable-sync', '--mute-audio',
              '--hide-scrollbars', f'--user-data-dir={profile}', '--lang=en-US'):
        opts.add_argument(a)
    opts.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    opts.page_load_strategy = 'normal'
    os.environ.setdefault('SE_OFFLINE', 'true')   # never let Selenium Manager look for drivers online
    service = Service(executable_path=chromedriver, log_output=os.devnull)
    result = {}
    def _start():
        try: result['driver'] = webdriver.Chrome(service=service, options=opts)
        except Exception as e: result['error'] = e
    t = threading.Thread(target=_start, daemon=True)
    t.start(); t.join(timeout)
    if t.is_alive():
        try: service.stop()
        except Exception: pass
        raise SetupError(f'Chromium did not start within {timeout:.0f}s ({chromium} via {chromedriver})')
    if 'error' in result:
        msg = str(result['error']).strip().splitlines()
        raise SetupError(f'Chromium could not be started ({chromium} via {chromedriver}): {msg[0] if msg else result["error"]!r}')
    d = result['driver']
    d.set_window_size(*WINDOW)
    # the window includes the (invisible) browser frame: make the page's viewport itself 1280x900
    d.execute_cdp_cmd('Emulation.setDeviceMetricsOverride', {'width': WINDOW[0], 'height': WINDOW[1], 'deviceScaleFactor': 1, 'mobile': False})
    return d


_ACTIVE = {}   # the running driver, for the watchdog


def _descendants(pid: int):
    "Pids of the processes below `pid` (from /proc; empty where there is none)."
    children = defaultdict(list)
    for d in Path('/proc').glob('[0-9]*'):
        try: ppid = int((d / 'stat').read_text().rsplit(')', 1)[1].split()[1])
        except (OSError, ValueError, IndexError): continue
        children[ppid].append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []): out.append(c); todo.append(c)
    return out


def _stop_browser(driver, wait: float = 10):
    "driver.quit(), bounded; then kill chromedriver and the Chromium processes it started if they are still there."
    proc = getattr(getattr(driver, 'service', None), 'process', None)
    pids = _descendants(proc.pid) if proc is not None else []
    t = threading.Thread(target=lambda: driver.quit(), daemon=True)
    t.start(); t.join(wait)
    import signal
    for pid in ([proc.pid] if proc is not None and proc.poll() is None else []) + pids:
        try:   # only what is still a Chromium / chromedriver process (a pid is not reused for something else)
            if b'chrom' in Path(f'/proc/{pid}/cmdline').read_bytes(): os.kill(pid, signal.SIGKILL)
        except (OSError, ProcessLookupError, PermissionError): pass


def load(driver, url: str, timeout: float):
    """driver.get(url), then wait until that document has loaded: chromedriver now and then returns while the new
    document is still being parsed (readyState 'loading'), which would hide the end of the page from the check."""
    from selenium.common.exceptions import TimeoutException, WebDriverException
    driver.get(url)
    end, state = time.time() + timeout, None
    while time.time() < end:
        try: state = driver.execute_script('return [document.readyState, location.href.split("#")[0]]')
        except WebDriverException: state = None   # between two documents
        if state and state[0] == 'complete' and state[1] == url.split('#')[0]: return
        time.sleep(0.05)
    raise TimeoutException(f'{url}: document not complete after {timeout:.0f}s (state {state})')


# Runs in the page once it has loaded: make lazy images load, wait (bounded) until every image has finished, then
# report images, links and the ids anchors can point at.
_COLLECT_JS = r"""
const done = arguments[arguments.length - 1], ms = arguments[0];
const imgs = Array.from(document.images);
for (const i of imgs) if (i.loading === 'lazy') i.loading = 'eager';
const settle = i => i.complete ? Promise.resolve() : new Promise(r => {
  i.addEventListener('load', r, {once: true}); i.addEventListener('error', r, {once: true}); });
const decode = i => (i.complete && i.naturalWidth > 0 && i.decode) ? i.decode().catch(() => null) : null;
Promise.race([Promise.all(imgs.map(settle)), new Promise(r => setTimeout(r, ms))]).then(() =>
  Promise.race([Promise.all(imgs.map(decode)), new Promise(r => setTimeout(r, ms))])).then(() => {
  const ids = new Set();
  for (const e of document.querySelectorAll('[id]')) ids.add(e.id);
  for (const e of document.querySelectorAll('a[name]')) ids.add(e.getAttribute('name'));
  done({
    title: document.title, href: location.href, ready: document.readyState,
    size: document.documentElement.outerHTML.length,
    images: imgs.map(i => ({src: i.currentSrc || i.src, raw: i.getAttribute('src'), complete: i.complete,
                            w: i.naturalWidth, h: i.naturalHeight})),
    links: Array.from(document.querySelectorAll('a[href]')).map(a => ({href: a.href, raw: a.getAttribute('href')})),
    ids: Array.from(ids),
    resources: performance.getEntriesByType('resource').map(e => e.name),
    // nbdev's show_doc entries: a heading followed by the signature's code block (def ... / class ...)
    apiEntries: Array.from(document.querySelectorAll('.md-content h2[id], .md-content h3[id], .md-content h4[id]')).filter(h => {
        const n = h.nextElementSibling; return n && /^\s*(async\s+)?(def|class)\s+\w+/.test(n.textContent); }).length,
  });
});
"""


# ----------------------------------------------------------------------------------------------------
# The check


class _IdParser(html.parser.HTMLParser):
    "Ids (and <a name>) of an HTML page that was not opened in the browser."
    def __init__(self):
        super().__init__(); self.ids = set()
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get('id'): self.ids.add(a['id'])
        if tag == 'a' and a.get('name'): self.ids.add(a['name'])


def _doc_hosts():
    "Hosts of settings.ini's doc_host (a site that does not exist: pages must not link to it)."
    cfg = configparser.ConfigParser()
    try: cfg.read(ROOT / 'settings.ini')
    except configparser.Error: return []
    host = cfg.get('DEFAULT', 'doc_host', fallback='').strip()
    h = urllib.parse.urlsplit(host).hostname if host else None
    return [h] if h else []


def _is_severe(entry) -> bool:
    return str(entry.get('level', '')).upper() in ('SEVERE', 'ERROR')


class Checker:
    def __init__(self, site: Path, server: SiteServer, driver, page_timeout: float, bad_hosts):
        self.site, self.server, self.driver = site, server, driver
        self.page_timeout, self.bad_hosts = page_timeout, {h.lower() for h in bad_hosts}
        self.problems = defaultdict(list)     # page -> [message]
        self.ids = {}                          # site path ('a/b.html') -> set of ids (rendered DOM)
        self.links = defaultdict(list)         # page -> [(absolute href, raw href)]
        self.external = Counter()              # host -> links
        self.status = {}                       # site path -> (status, note) of a link target
        self.n_images = self.n_links = self.n_anchors = 0
        self.warnings = Counter()

    # -- helpers
    def url(self, rel: str) -> str: return f'{self.server.origin}/{urllib.parse.quote(rel)}'

    def rel_of(self, url: str):
        "Site path of an absolute URL on our origin ('' for the root), or None for another origin."
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ('http', 'https') or u.netloc != f'127.0.0.1:{self.server.port}': return None
        return urllib.parse.unquote(u.path).lstrip('/')

    def _target_file(self, rel: str):
        p = self.site / rel
        if rel == '' or rel.endswith('/') or p.is_dir(): p = p / 'index.html'
        return p

    def target_status(self, rel: str):
        "(status, note) of the internal target `rel`, fetched once from the server (HEAD)."
        if rel in self.status: return self.status[rel]
        p = self.site / rel
        if p.is_dir() and not (p / 'index.html').is_file():
            res = (0, 'a folder without index.html (the server shows a directory listing)')
        else:
            req = urllib.request.Request(self.url(rel), method='HEAD', headers={'X-Check-Site': 'link'})
            try:
                with urllib.request.urlopen(req, timeout=self.page_timeout) as r: res = (r.status, '')
            except urllib.error.HTTPError as e: res = (e.code, '')
            except (urllib.error.URLError, TimeoutError, OSError) as e: res = (0, f'no answer ({e})')
        self.status[rel] = res
        return res

    def page_ids(self, rel: str):
        f = self._target_file(rel)
        key = f.relative_to(self.site).as_posix() if f.is_relative_to(self.site) else rel
        if key not in self.ids:
            p = _IdParser()
            try: p.feed(f.read_text(encoding='utf-8', errors='replace'))
            except OSError: pass
            self.ids[key] = p.ids
        return self.ids[key]

    # -- one page
    def visit(self, rel: str):
        "Open page `rel`; record its problems, links and ids. Returns the collected data (or None)."
        from selenium.common.exceptions import TimeoutException, WebDriverException
        d, probs = self.driver, self.problems[rel]
        self.server.take_requests(); self._drain_logs()
        try:
            load(d, self.url(rel), self.page_timeout)
            data = d.execute_async_script(_COLLECT_JS, int(self.page_timeout * 1000 * 0.4))
        except TimeoutException:
            probs.append(f'timed out: the page did not finish loading within {self.page_timeout:.0f}s')
            try: d.execute_script('window.stop()')
            except WebDriverException: pass
            data = None
        except WebDriverException as e:
            probs.append(f'the browser failed on this page: {str(e).strip().splitlines()[0] if str(e).strip() else e!r}')
            data = None
        time.sleep(0.05)   # late console messages (the search worker) and requests
        logs = self._drain_logs()
        for e in logs:
            msg = ' '.join(str(e.get('message', '')).split())
            if _is_severe(e): probs.append(f'console {e.get("level")} ({e.get("source", "?")}): {msg}')
            elif str(e.get('level', '')).upper() == 'WARNING': self.warnings[msg[:160]] += 1
        console = ' '.join(str(e.get('message', '')) for e in logs)
        for path, status in self.server.take_requests():
            if status >= 400 and self.url(path.lstrip('/')) not in console and path not in console:
                probs.append(f'request {path} answered {status}')
        if data is None: return None
        self.ids[rel] = set(data['ids'])
        for im in data['images']:
            self.n_images += 1
            if not im['complete'] or not im['w']:
                why = 'did not finish loading' if not im['complete'] else 'did not load (naturalWidth 0)'
                probs.append(f'image {im["raw"]!r} {why}')
        for l in data['links']: self.links[rel].append((l['href'], l['raw']))
        # an offline site loads nothing from elsewhere (the browser may be online: such a load would not fail)
        for r in sorted(set(data.get('resources', []))):
            if urllib.parse.urlsplit(r).scheme in ('http', 'https') and self.rel_of(r) is None:
                probs.append(f'loads {r} from another host (the site must work offline)')
        return data

    def _drain_logs(self):
        try: return self.driver.get_log('browser')
        except Exception: return []

    # -- links, once every page's ids are known
    def check_links(self):
        for page, links in self.links.items():
            probs, seen = self.problems[page], set()
            for href, raw in links:
                if (href, raw) in seen: continue
                seen.add((href, raw))
                u = urllib.parse.urlsplit(href)
                if u.scheme in ('mailto', 'tel', 'javascript', 'data', 'blob'): continue
                rel = self.rel_of(href)
                if rel is None:
                    if u.scheme in ('http', 'https') and u.hostname:
                        host = u.hostname.lower()
                        self.external[host] += 1
                        if host in self.bad_hosts or any(host.endswith('.' + b) for b in self.bad_hosts):
                            probs.append(f'link to {href} ({host} does not exist: the doc host of settings.ini; link the page relatively)')
                    else: probs.append(f'link {raw!r}: unsupported scheme {u.scheme!r}')
                    continue
                self.n_links += 1
                status, note = self.target_status(rel)
                if status != 200:
                    probs.append(f'link {raw!r} -> /{rel}: ' + (note or f'answered {status}'))
                    continue
                frag = urllib.parse.unquote(u.fragment)
                if not frag or frag.lower() == 'top': continue
                self.n_anchors += 1
                if not self._target_file(rel).name.endswith(('.html', '.htm')): continue
                if frag not in self.page_ids(rel):
                    target = 'this page' if self._target_file(rel) == self._target_file(page) else f'/{rel}'
                    probs.append(f'link {raw!r}: no element with id {frag!r} on {target}')


def _pick_api_page(pages, infos, wanted):
    "The API page to screenshot: `wanted` if given, else models.html, else the page with the most show_doc entries."
    if wanted:
        if wanted not in pages: raise SetupError(f'--api-page {wanted}: no such page in the site')
        return wanted
    for c in ('models.html', 'inference.html'):
        if c in pages and infos.get(c, {}).get('apiEntries'): return c
    scored = sorted(((i.get('apiEntries', 0), p) for p, i in infos.items() if p != 'index.html'), reverse=True)
    return scored[0][1] if scored and scored[0][0] else next((p for p in pages if p != 'index.html'), pages[0])


def _screenshot(driver, url, dest: Path, scroll_to_api=False):
    load(driver, url, 30)
    driver.execute_async_script(_COLLECT_JS, 5000)
    if scroll_to_api:
        # the first API entry (nbdev's show_doc: a heading followed by a signature) near the top of the window
        driver.execute_script("""
            const hs = Array.from(document.querySelectorAll('.md-content h3[id], .md-content h4[id], .md-content h2[id]'));
            const h = hs.find(h => { const n = h.nextElementSibling; return n && /^\\s*(async\\s+)?(def|class)\\s+\\w+/.test(n.textContent); }) || hs[0];
            if (!h) return;
            // below the sticky header, with the entry's [source] link (the paragraph before the heading) in view
            const header = document.querySelector('.md-header'), prev = h.previousElementSibling;
            const top = (prev && prev.textContent.trim() === 'source' ? prev : h).getBoundingClientRect().top;
            window.scrollTo(0, top + window.scrollY - (header ? header.offsetHeight : 0) - 24);""")
        time.sleep(0.2)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not driver.save_screenshot(str(dest)): raise RuntimeError(f'could not write the screenshot {dest}')


def run(site: Path, screenshots: Path, port: int, page_timeout: float, start_timeout: float, api_page: str | None,
        chromium: str | None, chromedriver: str | None, bad_hosts, quiet: bool) -> int:
    t0 = time.time()
    site = site.resolve()
    if not site.is_dir(): raise SetupError(f'{site}: no such folder (build the docs first: python tools/build_docs.py --no-exec)')
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob('*.html'))
    if not pages: raise SetupError(f'{site}: no .html pages')
    if 'index.html' not in pages: raise SetupError(f'{site}: no index.html (is this the site/ folder?)')
    chromium = _find(chromium, CHROMIUM_CANDIDATES, 'chromium')
    chromedriver = _find(chromedriver, DRIVER_CANDIDATES, 'chromedriver')
    profile = tempfile.mkdtemp(prefix='check_site_chromium_')
    _ACTIVE['profile'] = profile
    driver = None
    try:
        with SiteServer(site, port) as server:
            print(f'[check-site] {len(pages)} pages of {site} served on {server.origin}; {chromium} (headless) via {chromedriver}')
            driver = start_browser(chromium, chromedriver, profile, start_timeout)
            _ACTIVE['driver'] = driver
            driver.set_page_load_timeout(page_timeout)
            driver.set_script_timeout(page_timeout)
            ck = Checker(site, server, driver, page_timeout, bad_hosts)
            infos, took = {}, {}
            for i, rel in enumerate(pages):
                _ACTIVE['page'] = f'{rel} ({i + 1} of {len(pages)})'
                t = time.time()
                data = ck.visit(rel)
                took[rel] = time.time() - t
                if data: infos[rel] = data
                if ck.problems[rel] and not quiet: print(f'  ... {rel}: {len(ck.problems[rel])} problems while loading')
            _ACTIVE['page'] = 'the link check'
            ck.check_links()   # once every page's ids are known
            shots = {}
            api = _pick_api_page(pages, infos, api_page)
            for name, rel, scroll in (('home.png', 'index.html', False), ('api.png', api, True)):
                dest = screenshots / name
                _ACTIVE['page'] = f'the screenshot of {rel}'
                try: _screenshot(driver, ck.url(rel), dest, scroll); shots[name] = (rel, dest)
                except Exception as e: ck.problems[rel].append(f'screenshot {dest} failed: {e}')
        bad = {p: v for p, v in ck.problems.items() if v}
        for rel in pages:
            probs, data = ck.problems.get(rel, []), infos.get(rel)
            if quiet and not probs: continue
            what = f', {len(data["images"])} images, {len(data["links"])} links' if data else ''
            print(f'  {"ok  " if not probs else "FAIL"} {rel} ({took.get(rel, 0):.1f}s{what})' + (f': {len(probs)} problems' if probs else ''))
            for m in probs: print(f'         - {m}')
        if ck.external:
            print(f'[check-site] external links (not fetched): {sum(ck.external.values())} to {len(ck.external)} hosts: '
                  + ', '.join(f'{h} {n}' for h, n in ck.external.most_common()))
        if ck.warnings:
            print(f'[check-site] console warnings (not failures): {sum(ck.warnings.values())}; most common: '
                  + '; '.join(f'{n}x {m}' for m, n in ck.warnings.most_common(3)))
        for name, (rel, dest) in shots.items(): print(f'[check-site] screenshot of {rel}: {dest}')
        n_probs = sum(len(v) for v in bad.values())
        print(f'[check-site] {len(pages)} pages, {ck.n_images} images, {ck.n_links} internal links ({ck.n_anchors} with anchors, '
              f'{len(ck.status)} distinct targets), {sum(ck.external.values())} external links: '
              f'{"OK" if not n_probs else f"{n_probs} problems on {len(bad)} pages"} in {time.time() - t0:.1f}s')
        return 1 if n_probs else 0
    finally:
        if driver is not None: _stop_browser(driver)
        _ACTIVE.clear()
        shutil.rmtree(profile, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('site', type=Path, help='the built site folder (tools/build_docs.py: OUT/site)')
    ap.add_argument('--screenshots', type=Path, default=None, help='folder for home.png and api.png (default: SITE/../site_check)')
    ap.add_argument('--port', type=int, default=0, help='port on 127.0.0.1 (default 0: a free one)')
    ap.add_argument('--api-page', default=None, help='site path of the API page to screenshot (default: models.html)')
    ap.add_argument('--page-timeout', type=float, default=30, help='seconds for one page to load (default 30)')
    ap.add_argument('--start-timeout', type=float, default=60, help='seconds for Chromium to start (default 60)')
    ap.add_argument('--timeout', type=float, default=900, help='seconds for the whole check (default 900)')
    ap.add_argument('--bad-host', action='append', default=[], help="a host no link may point to (repeatable; settings.ini's doc_host always)")
    ap.add_argument('--chromium', default=None, help='the Chromium binary (default /usr/bin/chromium)')
    ap.add_argument('--chromedriver', default=None, help='chromedriver (default /usr/bin/chromedriver)')
    ap.add_argument('-q', '--quiet', action='store_true', help='print only the pages with problems')
    a = ap.parse_args(argv)
    screenshots = a.screenshots or a.site.resolve().parent / 'site_check'

    def _watchdog():
        print(f'[check-site] ERROR: the check ran past --timeout {a.timeout:.0f}s, during {_ACTIVE.get("page", "the start")}; stopped',
              file=sys.stderr, flush=True)
        if 'driver' in _ACTIVE: _stop_browser(_ACTIVE['driver'])
        if 'profile' in _ACTIVE: shutil.rmtree(_ACTIVE['profile'], ignore_errors=True)
        os._exit(3)   # the server runs in daemon threads: they end with the process
    dog = threading.Timer(a.timeout, _watchdog); dog.daemon = True; dog.start()
    try:
        rc = run(a.site, screenshots, a.port, a.page_timeout, a.start_timeout, a.api_page, a.chromium, a.chromedriver,
                 _doc_hosts() + a.bad_host, a.quiet)
    except SetupError as e:
        print(f'[check-site] ERROR: {e}', file=sys.stderr)
        rc = 2
    except KeyboardInterrupt:
        print('[check-site] interrupted', file=sys.stderr)
        rc = 130
    finally:
        dog.cancel()
    return rc


if __name__ == '__main__':
    sys.exit(main())
