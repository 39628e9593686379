"""Tests for edgecap.data.fetch against a real loopback HTTP server.

The archives served are built from the real IU X-Ray sample in shared/data/iu_xray:
the official NLMCXR_reports.tgz (copied as is, so its known checksum must verify) and
an NLMCXR_png.tgz made here from the real Open-i PNGs in images/.
"""

from __future__ import annotations

import hashlib
import io
import re
import socket
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from edgecap.data import fetch as F

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "iu_xray"
REPORTS = SHARED / "NLMCXR_reports.tgz"
IMAGES = SHARED / "images"

pytestmark = pytest.mark.skipif(
    not (REPORTS.is_file() and IMAGES.is_dir()),
    reason=f"shared IU X-Ray sample not found at {SHARED} (clone the repo beside shared/)",
)

REPORTS_NAME = "NLMCXR_reports.tgz"
PNG_NAME = "NLMCXR_png.tgz"


# --------------------------------------------------------------------------- server


class _State:
    def __init__(self, files: dict[str, bytes]):
        self.files = dict(files)
        self.drop_after: dict[str, int] = {}  # name -> K: first request sends K bytes, then drops
        self.ignore_range = False
        self.corrupt: set[str] = set()
        self.requests: list[dict] = []  # one per GET: name, range, status, sent
        self.lock = threading.Lock()

    def sent(self, name: str) -> int:
        return sum(r["sent"] for r in self.requests if r["name"] == name)

    def for_name(self, name: str) -> list[dict]:
        return [r for r in self.requests if r["name"] == name]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: _State  # set on the subclass per server

    def log_message(self, *args):  # keep pytest output quiet
        pass

    def do_GET(self):
        st = self.state
        name = self.path.rsplit("/", 1)[-1]
        data = st.files.get(name)
        rng = self.headers.get("Range")
        rec = {"name": name, "range": rng, "status": None, "sent": 0}
        with st.lock:
            st.requests.append(rec)
            first = len(st.for_name(name)) == 1
        if data is None:
            rec["status"] = 404
            self.send_error(404)
            return
        if name in st.corrupt:
            b = bytearray(data)
            mid = len(b) // 2
            b[mid : mid + 16] = bytes(x ^ 0xFF for x in b[mid : mid + 16])
            data = bytes(b)

        size = len(data)
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if m and not st.ignore_range:
            start = int(m.group(1))
            if start >= size:
                rec["status"] = 416
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            rec["status"] = 206
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            rec["status"] = 200
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Type", "application/x-gzip")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "none" if st.ignore_range else "bytes")
        self.end_headers()

        limit = st.drop_after.get(name) if first else None
        if limit is not None:
            chunk = body[:limit]
            self.wfile.write(chunk)
            self.wfile.flush()
            rec["sent"] += len(chunk)
            # Drop the connection abruptly, mid-body.
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        try:
            for i in range(0, len(body), 1 << 16):
                chunk = body[i : i + (1 << 16)]
                self.wfile.write(chunk)
                rec["sent"] += len(chunk)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (e.g. size mismatch)
            self.close_connection = True


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, bytes]:
    reports = REPORTS.read_bytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for png in sorted(IMAGES.glob("*.png")):
            tar.add(png, arcname=png.name)  # flat, like the Open-i archive
    return {REPORTS_NAME: reports, PNG_NAME: buf.getvalue()}


@pytest.fixture
def server(archives, monkeypatch):
    monkeypatch.setattr(F, "RETRY_BACKOFF_S", 0.0)
    state = _State(archives)
    handler = type("Handler", (_Handler,), {"state": state})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/imgs/collections/"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _fetch(server, out, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("timeout", 10)
    return F.fetch_iu_xray(out, base_url=server.url, **kw)


# --------------------------------------------------------------------------- tests


def test_table_matches_shared_checksum():
    rep = {f.name: f for f in F.IU_XRAY_FILES}
    assert set(rep) == {REPORTS_NAME, PNG_NAME}
    assert F.DEFAULT_BASE_URL == "https://openi.nlm.nih.gov/imgs/collections/"
    sums = F._read_sums(SHARED / "SHA256SUMS")
    assert rep[REPORTS_NAME].sha256 == sums[REPORTS_NAME] == F.sha256_file(REPORTS)
    assert rep[REPORTS_NAME].size == REPORTS.stat().st_size
    assert rep[PNG_NAME].sha256 is None


def test_full_download_verifies_and_extracts(server, archives, tmp_path):
    out = tmp_path / "iu"
    res = {r.name: r for r in _fetch(server, out, extract=True)}

    r = res[REPORTS_NAME]
    assert r.verified is True and r.resumed_from == 0 and not r.skipped
    assert r.sha256 == F.sha256_file(REPORTS) and r.bytes == REPORTS.stat().st_size
    assert (out / REPORTS_NAME).read_bytes() == REPORTS.read_bytes()

    p = res[PNG_NAME]
    assert p.verified is None  # no published checksum: size checked, sha reported
    assert p.sha256 == _sha(archives[PNG_NAME]) and p.bytes == len(archives[PNG_NAME])

    assert (out / "ecgen-radiology" / "1000.xml").is_file()
    pngs = sorted(IMAGES.glob("*.png"))
    assert len(pngs) == 11
    for src in pngs:
        assert (out / "images" / src.name).read_bytes() == src.read_bytes()

    sums = F._read_sums(out / "SHA256SUMS")
    assert sums == {REPORTS_NAME: r.sha256, PNG_NAME: p.sha256}
    assert not list(out.glob("*.part"))
    assert [q["status"] for q in server.requests] == [200, 200]


def test_complete_files_are_skipped(server, tmp_path):
    out = tmp_path / "iu"
    first = _fetch(server, out)
    n = len(server.requests)
    again = _fetch(server, out)
    assert len(server.requests) == n  # nothing downloaded again
    assert all(r.skipped for r in again)
    assert [(r.sha256, r.verified) for r in again] == [(r.sha256, r.verified) for r in first]


def test_interrupted_download_resumes(server, tmp_path):
    size = REPORTS.stat().st_size
    k = size // 3
    server.drop_after[REPORTS_NAME] = k
    out = tmp_path / "iu"
    (r,) = _fetch(server, out, files=[REPORTS_NAME])
    assert r.verified is True
    assert (out / REPORTS_NAME).read_bytes() == REPORTS.read_bytes()
    reqs = server.for_name(REPORTS_NAME)
    assert len(reqs) == 2
    assert reqs[0]["range"] is None and reqs[0]["sent"] == k
    assert reqs[1]["range"] == f"bytes={k}-" and reqs[1]["status"] == 206
    assert server.sent(REPORTS_NAME) == size < 2 * size


def test_interrupted_unchecksummed_download_resumes(server, archives, tmp_path):
    data = archives[PNG_NAME]
    k = len(data) // 2
    server.drop_after[PNG_NAME] = k
    (r,) = _fetch(server, tmp_path, files=[PNG_NAME])
    assert r.verified is None and r.sha256 == _sha(data)
    assert (tmp_path / PNG_NAME).read_bytes() == data
    reqs = server.for_name(PNG_NAME)
    assert [q["range"] for q in reqs] == [None, f"bytes={k}-"]
    assert server.sent(PNG_NAME) < 2 * len(data)


def test_out_of_retries_keeps_part_then_resumes(server, tmp_path):
    k = 100_000
    server.drop_after[REPORTS_NAME] = k
    with pytest.raises(F.FetchError, match="resume"):
        _fetch(server, tmp_path, files=[REPORTS_NAME], retries=0)
    assert (tmp_path / (REPORTS_NAME + ".part")).stat().st_size == k
    assert not (tmp_path / REPORTS_NAME).exists()
    (r,) = _fetch(server, tmp_path, files=[REPORTS_NAME], retries=0)
    assert r.verified is True and r.resumed_from == k


def test_existing_part_resumes(server, tmp_path):
    data = REPORTS.read_bytes()
    n = 400_000
    (tmp_path / (REPORTS_NAME + ".part")).write_bytes(data[:n])
    (r,) = _fetch(server, tmp_path, files=[REPORTS_NAME])
    assert r.verified is True and r.resumed_from == n
    assert (tmp_path / REPORTS_NAME).read_bytes() == data
    (req,) = server.for_name(REPORTS_NAME)
    assert req["range"] == f"bytes={n}-" and req["status"] == 206
    assert req["sent"] == len(data) - n
    assert not (tmp_path / (REPORTS_NAME + ".part")).exists()


def test_corrupted_payload_raises_and_leaves_no_file(server, tmp_path):
    server.corrupt.add(REPORTS_NAME)
    with pytest.raises(F.FetchError) as ei:
        _fetch(server, tmp_path, files=[REPORTS_NAME])
    msg = str(ei.value)
    assert "sha256 mismatch" in msg and "expected" in msg and "got" in msg
    assert F.IU_XRAY_FILES[0].sha256 in msg
    assert not (tmp_path / REPORTS_NAME).exists()
    assert not (tmp_path / (REPORTS_NAME + ".part")).exists()


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.ignore_range = True
    data = REPORTS.read_bytes()
    # A stale .part of garbage: if it were kept, the checksum would fail.
    (tmp_path / (REPORTS_NAME + ".part")).write_bytes(b"\0" * 300_000)
    (r,) = _fetch(server, tmp_path, files=[REPORTS_NAME])
    assert r.verified is True and r.resumed_from == 0
    assert (tmp_path / REPORTS_NAME).read_bytes() == data
    (req,) = server.for_name(REPORTS_NAME)
    assert req["range"] == "bytes=300000-" and req["status"] == 200


def test_server_ignoring_range_after_drop(server, tmp_path):
    server.ignore_range = True
    server.drop_after[REPORTS_NAME] = 250_000
    (r,) = _fetch(server, tmp_path, files=[REPORTS_NAME])
    assert r.verified is True
    assert (tmp_path / REPORTS_NAME).read_bytes() == REPORTS.read_bytes()
    assert [q["status"] for q in server.for_name(REPORTS_NAME)] == [200, 200]


def test_stale_part_with_wrong_prefix_is_redownloaded(server, tmp_path):
    (tmp_path / (REPORTS_NAME + ".part")).write_bytes(b"\x01" * 1000)
    (r,) = _fetch(server, tmp_path, files=[REPORTS_NAME])
    assert r.verified is True and r.resumed_from == 0
    assert [q["range"] for q in server.for_name(REPORTS_NAME)] == ["bytes=1000-", None]


def test_env_var_overrides_base_url(server, tmp_path, monkeypatch):
    monkeypatch.setenv(F.ENV_BASE_URL, server.url.rstrip("/"))
    assert F.resolve_base_url() == server.url
    (r,) = F.fetch_iu_xray(tmp_path, files=[REPORTS_NAME], progress=False, timeout=10)
    assert r.verified is True


def test_unknown_file_name_rejected(tmp_path):
    with pytest.raises(ValueError):
        F.fetch_iu_xray(tmp_path, files=["nope.tgz"], base_url="http://127.0.0.1:9/")


def _evil_tgz(kind: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        ok = tarfile.TarInfo("fine.png")
        ok.size = 3
        tar.addfile(ok, io.BytesIO(b"png"))
        if kind == "dotdot":
            ti = tarfile.TarInfo("../evil")
            ti.size = 4
            tar.addfile(ti, io.BytesIO(b"evil"))
        elif kind == "absolute":
            ti = tarfile.TarInfo("/tmp/evil-abs")
            ti.size = 4
            tar.addfile(ti, io.BytesIO(b"evil"))
        elif kind == "symlink":
            ti = tarfile.TarInfo("link")
            ti.type = tarfile.SYMTYPE
            ti.linkname = "../../outside"
            tar.addfile(ti)
    return buf.getvalue()


def test_tar_path_traversal_refused_on_extraction(server, tmp_path):
    server.files[PNG_NAME] = _evil_tgz("dotdot")
    out = tmp_path / "iu"
    with pytest.raises(F.FetchError, match="path traversal"):
        _fetch(server, out, files=[PNG_NAME], extract=True)
    assert not (out / "evil").exists() and not (tmp_path / "evil").exists()
    assert not (out / "images" / "fine.png").exists()  # nothing extracted at all


@pytest.mark.parametrize("kind", ["absolute", "symlink"])
def test_safe_extract_refuses_unsafe_members(tmp_path, kind):
    arc = tmp_path / "bad.tgz"
    arc.write_bytes(_evil_tgz(kind))
    dest = tmp_path / "dest"
    with pytest.raises(F.FetchError, match="refusing"):
        F.safe_extract(arc, dest)
    assert not (dest / "fine.png").exists()


def test_unrecorded_complete_file_confirmed_by_server_without_redownload(server, archives, tmp_path):
    data = archives[PNG_NAME]
    (tmp_path / PNG_NAME).write_bytes(data)  # complete, but no SHA256SUMS entry to trust
    (r,) = _fetch(server, tmp_path, files=[PNG_NAME])
    assert r.sha256 == _sha(data) and r.resumed_from == len(data)
    (req,) = server.for_name(PNG_NAME)
    assert req["range"] == f"bytes={len(data)}-" and req["status"] == 416 and req["sent"] == 0
    assert F._read_sums(tmp_path / "SHA256SUMS") == {PNG_NAME: _sha(data)}


def test_size_mismatch_with_table_raises(server, tmp_path):
    wrong = F.RemoteFile(REPORTS_NAME, sha256=F.IU_XRAY_FILES[0].sha256, size=123)
    with pytest.raises(F.FetchError, match="size mismatch"):
        _fetch(server, tmp_path, files=[wrong])
    assert not (tmp_path / REPORTS_NAME).exists()


def test_progress_bar_smoke(server, tmp_path, capsys):
    (r,) = _fetch(server, tmp_path, files=[REPORTS_NAME], progress=True)
    assert r.verified is True
    assert REPORTS_NAME in capsys.readouterr().err
