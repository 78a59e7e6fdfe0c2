"""blindsr.download.download / fetch against a local HTTP server on 127.0.0.1 (never the internet): full downloads with
checksums, interrupted and resumed downloads, servers that ignore Range, bad checksums, and archive installation."""
import hashlib
import http.server
import io
import re
import socket
import tarfile
import tempfile
import threading
import zipfile
from pathlib import Path

import pytest
import torch

from blindsr.core import write_image
from blindsr.download import DATASETS, ChecksumError, DatasetSource, DownloadError, download, extract_archive, fetch


class Server:
    "What the local server serves and how it misbehaves; `requests` records (path, Range header) of each GET."
    def __init__(self):
        self.files, self.cut_once, self.status = {}, {}, {}
        self.honour_range, self.requests = True, []
        self.url = None

    def add(self, path, payload: bytes):
        self.files[path] = payload
        return f'{self.url}{path}'


def _handler(state: Server):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args): pass

        def do_GET(self):
            path, rng = self.path.split('?')[0], self.headers.get('Range')
            state.requests.append((path, rng))
            if path in state.status: return self.send_error(state.status[path])
            payload = state.files.get(path)
            if payload is None: return self.send_error(404)
            start = 0
            if rng and state.honour_range:
                start = int(re.fullmatch(r'bytes=(\d+)-', rng).group(1))
                if start >= len(payload):
                    self.send_response(416)
                    self.send_header('Content-Range', f'bytes */{len(payload)}')
                    self.send_header('Content-Length', '0'); self.end_headers(); return
                self.send_response(206)
                self.send_header('Content-Range', f'bytes {start}-{len(payload) - 1}/{len(payload)}')
            else:
                self.send_response(200)
            body = payload[start:]
            self.send_header('Content-Length', str(len(body)))
            self.send_header('Content-Type', 'application/octet-stream')
            self.end_headers()
            cut = state.cut_once.pop(path, None)
            if cut is None:
                self.wfile.write(body); return
            self.wfile.write(body[:cut]); self.wfile.flush()            # then drop the connection mid-file
            self.close_connection = True
            try: self.connection.shutdown(socket.SHUT_RDWR)
            except OSError: pass
    return Handler


@pytest.fixture
def server():
    state = Server()
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _handler(state))
    httpd.handle_error = lambda *a: None                                   # cut connections are on purpose
    state.url = f'http://127.0.0.1:{httpd.server_address[1]}'
    t = threading.Thread(target=httpd.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True)
    t.start()
    yield state
    httpd.shutdown(); httpd.server_close(); t.join(5)


PAYLOAD = bytes(torch.randint(0, 256, (300_000,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)).tolist())
MD5, SHA256 = hashlib.md5(PAYLOAD).hexdigest(), hashlib.sha256(PAYLOAD).hexdigest()


# ---------------------------------------------------------------------------------------------- fetch

def test_full_download_with_checksums(server, tmp_path):
    url = server.add('/files/blob.bin', PAYLOAD)
    dest = fetch(url, tmp_path / 'blob.bin', size=len(PAYLOAD), md5=MD5, sha256=SHA256.upper(), verbose=False)
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / 'blob.bin.part').exists()
    assert server.requests == [('/files/blob.bin', None)]
    fetch(url, tmp_path / 'blob.bin', md5=MD5, verbose=False)                                  # there already: no request
    assert len(server.requests) == 1


def test_interrupted_then_resumed(server, tmp_path):
    url = server.add('/blob.bin', PAYLOAD)
    server.cut_once['/blob.bin'] = 120_000
    with pytest.raises(DownloadError, match=r'download interrupted .*120000 bytes are kept in .*blob.bin.part'):
        fetch(url, tmp_path / 'blob.bin', md5=MD5, retries=0, verbose=False)
    part = tmp_path / 'blob.bin.part'
    assert part.read_bytes() == PAYLOAD[:120_000] and not (tmp_path / 'blob.bin').exists()
    fetch(url, tmp_path / 'blob.bin', md5=MD5, retries=0, verbose=False)
    assert server.requests[-1] == ('/blob.bin', 'bytes=120000-')
    assert (tmp_path / 'blob.bin').read_bytes() == PAYLOAD and not part.exists()


def test_retries_resume_within_one_call(server, tmp_path):
    url = server.add('/blob.bin', PAYLOAD)
    server.cut_once['/blob.bin'] = 50_000
    fetch(url, tmp_path / 'blob.bin', size=len(PAYLOAD), sha256=SHA256, retries=2, retry_wait=0, verbose=False)
    assert server.requests == [('/blob.bin', None), ('/blob.bin', 'bytes=50000-')]
    assert (tmp_path / 'blob.bin').read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    url = server.add('/blob.bin', PAYLOAD)
    server.honour_range = False
    (tmp_path / 'blob.bin.part').write_bytes(b'\x00' * 1000)                  # a stale part that must not be kept
    fetch(url, tmp_path / 'blob.bin', md5=MD5, verbose=False)
    assert server.requests == [('/blob.bin', 'bytes=1000-')]
    assert (tmp_path / 'blob.bin').read_bytes() == PAYLOAD


def test_part_longer_than_file_restarts(server, tmp_path):
    "Size unknown and a .part at least as long as the file: the server answers 416, we start over."
    url = server.add('/blob.bin', PAYLOAD)
    (tmp_path / 'blob.bin.part').write_bytes(b'\x01' * (len(PAYLOAD) + 10))
    fetch(url, tmp_path / 'blob.bin', md5=MD5, retry_wait=0, verbose=False)
    assert [r for _, r in server.requests] == [f'bytes={len(PAYLOAD) + 10}-', None]
    assert (tmp_path / 'blob.bin').read_bytes() == PAYLOAD


def test_complete_part_needs_no_request(server, tmp_path):
    url = server.add('/blob.bin', PAYLOAD)
    (tmp_path / 'blob.bin.part').write_bytes(PAYLOAD)
    fetch(url, tmp_path / 'blob.bin', size=len(PAYLOAD), md5=MD5, verbose=False)
    assert server.requests == [] and (tmp_path / 'blob.bin').read_bytes() == PAYLOAD


def test_bad_checksum_is_reported_and_nothing_kept(server, tmp_path):
    url = server.add('/blob.bin', PAYLOAD)
    wrong = '0' * 32
    with pytest.raises(ChecksumError, match=f'md5: expected {wrong}, got {MD5}.*deleted and nothing was installed'):
        fetch(url, tmp_path / 'blob.bin', md5=wrong, verbose=False)
    assert not (tmp_path / 'blob.bin').exists() and not (tmp_path / 'blob.bin.part').exists()


def test_size_mismatch(server, tmp_path):
    url = server.add('/blob.bin', PAYLOAD)
    with pytest.raises(ChecksumError, match=f"server's file is {len(PAYLOAD)} bytes, expected 1234"):
        fetch(url, tmp_path / 'blob.bin', size=1234, verbose=False)
    assert not (tmp_path / 'blob.bin').exists()


def test_http_errors(server, tmp_path):
    with pytest.raises(DownloadError, match=r'/missing.bin: HTTP 404'):
        fetch(f'{server.url}/missing.bin', tmp_path / 'm.bin', verbose=False)
    server.add('/flaky.bin', PAYLOAD)
    server.status['/flaky.bin'] = 503
    with pytest.raises(DownloadError, match=r'download interrupted \(HTTP 503'):
        fetch(f'{server.url}/flaky.bin', tmp_path / 'f.bin', retries=1, retry_wait=0, verbose=False)
    assert len([r for r in server.requests if r[0] == '/flaky.bin']) == 2          # retried once
    with pytest.raises(DownloadError, match='interrupted'):                         # nothing listens there
        fetch('http://127.0.0.1:9/x.bin', tmp_path / 'x.bin', retries=0, timeout=5, verbose=False)


# ---------------------------------------------------------------------------------------------- download

def _png(seed):
    img = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(seed))
    with tempfile.TemporaryDirectory() as d:
        return write_image(Path(d) / 'x.png', img).read_bytes()


def _archive(kind, members: dict) -> bytes:
    buf = io.BytesIO()
    if kind == 'zip':
        with zipfile.ZipFile(buf, 'w') as z:
            for name, payload in members.items(): z.writestr(name, payload)
    else:
        with tarfile.open(fileobj=buf, mode='w:gz' if kind == 'tar.gz' else 'w') as t:
            for name, payload in members.items():
                info = tarfile.TarInfo(name); info.size = len(payload)
                t.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


MEMBERS = {**{f'bench/SetA/HR/{i}.png': _png(i) for i in range(3)}, 'bench/SetA/LR/x.png': _png(9),
           **{f'bench/SetB/HR/{i}.png': _png(10 + i) for i in range(2)}}


def _registry(url, payload, **kw):
    md5 = hashlib.md5(payload).hexdigest()
    return {'SetA': DatasetSource(url, 'bench/SetA/HR', 3, md5=md5, **kw),
            'SetB': DatasetSource(url, 'bench/SetB/HR', 2, md5=md5, **kw)}


@pytest.mark.parametrize('kind', ['zip', 'tar', 'tar.gz'])
def test_download_installs_every_set_of_the_archive(server, tmp_path, kind):
    payload = _archive(kind, MEMBERS)
    url = server.add(f'/pack.{kind}', payload)
    reg = _registry(url, payload, size=len(payload))
    hr = download('SetA', tmp_path, registry=reg, verbose=False)
    assert hr == tmp_path / 'SetA' / 'HR' and sorted(p.name for p in hr.iterdir()) == ['0.png', '1.png', '2.png']
    assert (hr / '1.png').read_bytes() == MEMBERS['bench/SetA/HR/1.png']
    assert sorted(p.name for p in (tmp_path / 'SetB' / 'HR').iterdir()) == ['0.png', '1.png']   # same archive
    assert not (tmp_path / '.downloads' / f'pack.{kind}').exists()                       # archive removed
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.SetA')]               # no unpack leftovers
    n = len(server.requests)
    assert download('SetA', tmp_path, registry=reg) == hr and download('SetB', tmp_path, registry=reg)
    assert len(server.requests) == n                                                    # idempotent: no network


def test_download_resumes_an_interrupted_archive(server, tmp_path):
    payload = _archive('zip', MEMBERS)
    url = server.add('/pack.zip', payload)
    server.cut_once['/pack.zip'] = len(payload) // 3
    reg = _registry(url, payload)
    with pytest.raises(DownloadError, match='interrupted'):
        download('SetA', tmp_path, registry=reg, retries=0, verbose=False)
    assert not (tmp_path / 'SetA').exists()
    download('SetA', tmp_path, registry=reg, keep_archive=True, verbose=False)
    assert server.requests[-1][1] == f'bytes={len(payload) // 3}-'
    assert (tmp_path / '.downloads' / 'pack.zip').read_bytes() == payload


def test_download_bad_checksum_installs_nothing(server, tmp_path):
    payload = _archive('zip', MEMBERS)
    url = server.add('/pack.zip', payload)
    reg = {'SetA': DatasetSource(url, 'bench/SetA/HR', 3, md5='f' * 32)}
    with pytest.raises(ChecksumError, match=f"expected {'f' * 32}, got {hashlib.md5(payload).hexdigest()}"):
        download('SetA', tmp_path, registry=reg, verbose=False)
    assert not (tmp_path / 'SetA').exists()
    assert not [p for p in (tmp_path / '.downloads').iterdir() if p.suffix in ('.zip', '.part')]


def test_url_and_base_url_override(server, tmp_path):
    payload = _archive('zip', MEMBERS)
    server.add('/mirror/pack.zip', payload)
    reg = _registry('http://invalid.invalid/original/pack.zip', payload)
    assert download('SetA', tmp_path / 'a', registry=reg, base_url=f'{server.url}/mirror/', verbose=False).is_dir()
    assert download('SetB', tmp_path / 'b', registry=reg, url=f'{server.url}/mirror/pack.zip', verbose=False).is_dir()
    assert [p for p, _ in server.requests] == ['/mirror/pack.zip', '/mirror/pack.zip']
    with pytest.raises(ValueError, match='not both'):
        download('SetA', tmp_path / 'c', registry=reg, url='x', base_url='y')


def test_archive_layout_errors(server, tmp_path):
    payload = _archive('zip', MEMBERS)
    url = server.add('/pack.zip', payload)
    md5 = hashlib.md5(payload).hexdigest()
    with pytest.raises(DownloadError, match=r"no folder 'bench/SetC/HR' inside \(top level: \['bench'\]\)"):
        download('SetC', tmp_path, registry={'SetC': DatasetSource(url, 'bench/SetC/HR', md5=md5)}, verbose=False)
    with pytest.raises(DownloadError, match='bench/SetA/HR holds 3 images, expected 5'):
        download('SetA', tmp_path, registry={'SetA': DatasetSource(url, 'bench/SetA/HR', 5, md5=md5)}, verbose=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['.downloads']                  # nothing half-installed


def test_unsafe_archives_are_refused(tmp_path):
    for kind in ('zip', 'tar'):
        bad = tmp_path / f'bad.{kind}'
        bad.write_bytes(_archive(kind, {'../escape.txt': b'x'}))
        with pytest.raises(DownloadError, match='outside|unsafe'):
            extract_archive(bad, tmp_path / f'out_{kind}')
        assert not (tmp_path / 'escape.txt').exists()
    (tmp_path / 'plain.bin').write_bytes(b'neither')
    with pytest.raises(DownloadError, match='neither a zip nor a tar archive'):
        extract_archive(tmp_path / 'plain.bin', tmp_path / 'out')


def test_registry():
    assert {'DIV2K_train', 'DIV2K_valid', 'Flickr2K', 'Set5', 'Set14', 'B100', 'Urban100'} <= set(DATASETS)
    for name, s in DATASETS.items():
        assert s.url.startswith(('http://', 'https://')) and s.images
        assert s.md5 is None or re.fullmatch(r'[0-9a-f]{32}', s.md5), name
    assert len({DATASETS[n].url for n in ('Set5', 'Set14', 'B100', 'Urban100')}) == 1
    assert DATASETS['DIV2K_train'].filename == 'DIV2K_train_HR.zip'
    with pytest.raises(ValueError, match="unknown dataset 'div2k'"):
        download('div2k')


# ---------------------------------------------------------------------------------------------- CAVE

def _cave_zip(scenes, size=8):
    "A zip in the distributed CAVE layout: <scene>_ms/<scene>_ms/<scene>_ms_01..31.png (16-bit) and an RGB bmp."
    buf = io.BytesIO()
    with tempfile.TemporaryDirectory() as d, zipfile.ZipFile(buf, 'w') as z:
        for k, name in enumerate(scenes):
            for b in range(31):
                p = Path(d) / f'{name}_{b}.png'
                write_image(p, torch.full((1, size, size), (k * 31 + b) / 1000), bit_depth=16)
                z.write(p, f'{name}_ms/{name}_ms/{name}_ms_{b + 1:02d}.png')
            z.writestr(f'{name}_ms/{name}_ms/{name}_RGB.bmp', b'BM not really')
    return buf.getvalue()


def test_download_cave_unpacks_the_distributed_layout(server, tmp_path):
    from blindsr.hsi import download_cave, find_cave_scenes, read_cave_scene
    url = server.add('/complete_ms_data.zip', _cave_zip(['balloons', 'beads']))
    root = download_cave(tmp_path, url=url, min_scenes=2, verbose=False)
    assert root == tmp_path / 'CAVE'
    scenes = find_cave_scenes(root)
    assert sorted(scenes) == ['balloons', 'beads']
    cube = read_cave_scene(scenes['beads'])
    assert cube.shape == (31, 8, 8) and abs(cube[3, 0, 0].item() - (31 + 3) / 1000) < 1e-4
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.CAVE')]          # no unpack leftovers
    n = len(server.requests)
    assert download_cave(tmp_path, url=url, min_scenes=2) == root and len(server.requests) == n   # idempotent


def test_download_cave_offline_names_the_address_and_leaves_nothing(server, tmp_path):
    from blindsr.hsi import download_cave
    url = f'{server.url}/missing/complete_ms_data.zip'          # 404, as an unreachable mirror would fail
    with pytest.raises(DownloadError, match=re.escape(url)):
        download_cave(tmp_path, url=url, retries=0, verbose=False)
    assert not (tmp_path / 'CAVE').exists()
    small = server.add('/two.zip', _cave_zip(['balloons']))
    with pytest.raises(DownloadError, match='1 CAVE scenes inside, expected at least 31'):
        download_cave(tmp_path, url=small, verbose=False)
    assert not (tmp_path / 'CAVE').exists()


def test_download_cave_concurrent_calls_install_once(server, tmp_path):
    "Two downloads at once (threads here; processes alike, the lock is flock): one installs, the other waits and finds it."
    import threading
    from blindsr.hsi import download_cave, find_cave_scenes
    url = server.add('/complete_ms_data.zip', _cave_zip(['balloons', 'beads']))
    results, errors = [], []
    def call():
        try: results.append(download_cave(tmp_path, url=url, min_scenes=2, verbose=False))
        except Exception as e: errors.append(e)
    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads: t.start()
    for t in threads: t.join(timeout=60)
    assert not errors, errors
    assert results == [tmp_path / 'CAVE'] * 3 and sorted(find_cave_scenes(tmp_path / 'CAVE')) == ['balloons', 'beads']
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.CAVE')]
