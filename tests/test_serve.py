"""`edgecap serve` over real HTTP: uvicorn on 127.0.0.1 (a free port) in a thread, exercised with httpx and raw
sockets. A real bundle (the default one when installed, else conftest's caption_bundle) gives the same JSON
as `edgecap caption --format json`; every bad input gets its 4xx as application/problem+json; the queue,
deadline and streamed-size limits run against stub captioners whose timing the test controls.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from edgecap.runtime.manifest import DEFAULT_NOTICE  # noqa: E402
from edgecap.serve.settings import Settings  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "iu_xray"
FRONTAL = DATA / "images" / "CXR25_IM-1024-2001.png"
STUDY54 = (DATA / "images" / "CXR54_IM-2145-1001.png", DATA / "images" / "CXR54_IM-2145-1002.png")
API_KEY = "test-key-0123456789abcdef"
PROBLEM = "application/problem+json"


# ---- helpers (test_serve_schemathesis imports them) -----------------------------------------------
@contextmanager
def running_server(app):
    """uvicorn on 127.0.0.1, a free port, in a daemon thread -> base URL; stopped on exit. The configuration is
    `edgecap serve`'s (serve.connections.uvicorn_config of the app's settings: its protocol and deadlines)."""
    import uvicorn

    from edgecap.serve.connections import uvicorn_config

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, app.state.settings, timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_command(bundle: Path, port: int, log_file, *args: str) -> subprocess.Popen:
    """`python -m edgecap.cli serve` (what `edgecap serve` runs) on 127.0.0.1:port with `args`; returns once
    /v1/health answers. Its output goes to `log_file`; stop it with SIGINT."""
    cmd = [sys.executable, "-m", "edgecap.cli", "serve", "--bundle", str(bundle), "--port", str(port), *args]
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, "the server exited while starting"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.1)


def serve_bundle_path(request) -> Path:
    """The default bundle when installed, else conftest's caption_bundle (built once per session)."""
    from edgecap.runtime.captioner import default_bundle_path

    default = default_bundle_path()
    if (default / "manifest.json").is_file():
        return default
    return request.getfixturevalue("caption_bundle")


def zero_png(width: int, height: int, rows_per_block: int = 100) -> bytes:
    """A valid 8-bit grey PNG of width x height zeros in a few hundred KB, built in milliseconds.

    One deflate block of `rows_per_block` zero rows, ended by a full flush, is byte-identical every time,
    so the IDAT is that unit repeated; the Adler-32 of n zero bytes is ((n mod 65521) << 16) | 1.
    """
    assert height % rows_per_block == 0
    co = zlib.compressobj(9)
    first = co.compress(b"\x00" * ((width + 1) * rows_per_block)) + co.flush(zlib.Z_FULL_FLUSH)
    header, unit = first[:2], first[2:]
    n = (width + 1) * height  # a filter byte + width samples per row
    idat = header + unit * (height // rows_per_block) + b"\x03\x00" + struct.pack(">I", ((n % 65521) << 16) | 1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def raw_request(base: str, head: bytes, body_chunks=(), timeout: float = 10.0) -> tuple[int, dict, bytes]:
    """Send a hand-made HTTP/1.1 request over a socket; read one response -> (status, headers, body)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(head)
        for c in body_chunks:
            try:
                s.sendall(c)
            except OSError:  # the server answered and closed: read what it said
                break
        data = b""
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
            block = s.recv(65536)
            if not block:
                break
            data += block
    head_part, _, body = data.partition(b"\r\n\r\n")
    lines = head_part.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def _length(data: bytes) -> int:
    m = re.search(rb"(?i)content-length:\s*(\d+)", data.partition(b"\r\n\r\n")[0])
    return int(m.group(1)) if m else 1 << 62


def assert_problem(r, status: int, code: str, *words: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM), r.headers
    body = r.json()
    assert {"type", "title", "status", "detail"} <= set(body), body
    assert body["status"] == status and body["code"] == code and body["type"].endswith(code), body
    for w in words:
        assert w.lower() in body["detail"].lower(), body["detail"]
    return body


def cli_json(*args: str) -> dict:
    """`edgecap caption ... --format json` -> its one record (the Typer function, in-process)."""
    import typer
    from typer.testing import CliRunner

    from edgecap.cli.caption import caption

    app = typer.Typer()
    app.command()(caption)
    result = CliRunner().invoke(app, [*args, "--format", "json", "--no-progress"])
    assert result.exit_code in (0, 3), result.output
    lines = [ln for ln in result.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stdout
    return json.loads(lines[0])


def comparable(report: dict) -> dict:
    """A report without what must differ between two runs or two front ends: timings (measured), inputs (a
    path on the command line, '<N bytes>' over HTTP) and the batch record's key / input."""
    return {k: v for k, v in report.items() if k not in ("timings", "inputs", "key", "input")}


# ---- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundle_path(request) -> Path:
    if not FRONTAL.is_file():
        pytest.skip(f"real IU X-Ray sample not found at {DATA}")
    return serve_bundle_path(request)


@pytest.fixture(scope="module")
def server(bundle_path):
    """The real bundle, default limits, two workers, no API key (loopback)."""
    from edgecap.serve.app import create_app

    with running_server(create_app(Settings(bundle=bundle_path, workers=2))) as base:
        yield base


@pytest.fixture(scope="module")
def keyed_server(bundle_path, tmp_path_factory):
    from edgecap.serve.app import create_app
    from edgecap.serve.settings import read_api_key

    key_file = tmp_path_factory.mktemp("key") / "key.txt"
    key_file.write_text(API_KEY + "\n")
    key_file.chmod(0o600)
    key, warnings = read_api_key(key_file)
    assert key == API_KEY and not warnings
    with running_server(create_app(Settings(bundle=bundle_path, api_key=key))) as base:
        yield base


class StubCaptioner:
    """Captioner's interface; caption() blocks until `gate` is set (at most 20 s)."""

    def __init__(self, gate: threading.Event):
        self.gate = gate
        manifest = {"format": "edgecap-bundle/1", "mode": "stub"}
        self.bundle = SimpleNamespace(manifest=SimpleNamespace(to_json=lambda: manifest))
        self.bundle_info = {
            "path": "stub",
            "mode": "stub",
            "interpreter": "none",
            "notice": "stub",
            "edgecap_version": "0",
        }

    def caption(self, frontal, lateral=None, beam=3):
        self.gate.wait(20)
        return SimpleNamespace(to_json=lambda **kw: json.dumps({"format": "edgecap-report/1", "text": "stub"}))


@contextmanager
def stub_server(**overrides):
    """Stub captioner, one worker, queue of one, 1 MiB body limit, 1 s deadline -> (base URL, gate)."""
    from edgecap.serve.app import create_app

    gate = threading.Event()
    settings = Settings(
        **{
            "workers": 1,
            "queue_size": 1,
            "max_request_bytes": 1 << 20,
            "timeout_s": 1.0,
            "retry_after_s": 3,
            **overrides,
        }
    )
    try:
        with running_server(create_app(settings, captioners=[StubCaptioner(gate)])) as base:
            yield base, gate
            gate.set()
    finally:
        gate.set()


def png_upload(path: Path = FRONTAL) -> dict:
    return {"frontal": (path.name, path.read_bytes(), "image/png")}


# ---- the report is the CLI's ----------------------------------------------------------------------
def test_report_is_the_cli_json(server, bundle_path):
    r = httpx.post(f"{server}/v1/reports", files=png_upload(), timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    api = r.json()
    cli = cli_json(str(FRONTAL), "--bundle", str(bundle_path))
    assert api["format"] == "edgecap-report/1" and api["text"]
    assert comparable(api) == comparable(cli)
    assert api["inputs"] == {"frontal": f"<{FRONTAL.stat().st_size} bytes>", "lateral": None}
    assert set(api["timings"]) == set(cli["timings"])


def test_demonstration_is_a_top_level_field(server, bundle_path):
    """Issue 16 item 11: the demonstration status was only inside `bundle.notice`; every report response and
    the health answer now carry it at the top level, as /openapi.json says."""
    notice = json.loads((bundle_path / "manifest.json").read_text())["notice"]
    api = httpx.post(f"{server}/v1/reports", files=png_upload(), data={"attention": "false"}, timeout=60).json()
    assert api["demonstration"] is True and api["notice"] == notice == DEFAULT_NOTICE
    assert httpx.get(f"{server}/v1/health").json()["demonstration"] is True
    schema = httpx.get(f"{server}/openapi.json").json()["components"]["schemas"]
    assert {"demonstration", "notice"} <= set(schema["ReportOut"]["required"])
    assert "demonstration" in schema["HealthOut"]["required"]


def test_beam_and_no_attention_match_the_cli(server, bundle_path):
    r = httpx.post(f"{server}/v1/reports", files=png_upload(), data={"beam": "1", "attention": "false"}, timeout=60)
    assert r.status_code == 200, r.text
    api = r.json()
    assert api["beam"] == 1 and "attention" not in api
    cli = cli_json(str(FRONTAL), "--bundle", str(bundle_path), "--beam", "1", "--no-attention")
    assert comparable(api) == comparable(cli)


def test_two_views_match_the_cli(server, bundle_path):
    manifest = httpx.get(f"{server}/v1/bundle").json()
    frontal, lateral = STUDY54
    files = {
        "frontal": (frontal.name, frontal.read_bytes(), "image/png"),
        "lateral": (lateral.name, lateral.read_bytes(), "image/png"),
    }
    r = httpx.post(f"{server}/v1/reports", files=files, timeout=60)
    if manifest["input"]["max_views"] < 2:
        assert_problem(r, 422, "invalid-request", "lateral")
        return
    assert r.status_code == 200, r.text
    cli = cli_json(str(frontal), "--lateral", str(lateral), "--bundle", str(bundle_path))
    assert comparable(r.json()) == comparable(cli)


def test_jpeg_and_dicom_uploads(server, make_dicom):
    import cv2

    gray = cv2.imread(str(FRONTAL), cv2.IMREAD_GRAYSCALE)  # (H, W) uint8
    jpeg = cv2.imencode(".jpg", gray, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    for name, data in (("chest.jpg", jpeg), ("chest.dcm", make_dicom(gray))):
        r = httpx.post(f"{server}/v1/reports", files={"frontal": (name, data, "application/octet-stream")}, timeout=60)
        assert r.status_code == 200, (name, r.text)
        assert r.json()["text"] and not r.json()["flagged"]


def test_concurrent_requests_give_identical_reports(server):
    """Two workers, six clients at once: each interpreter is used by one thread only."""
    data = FRONTAL.read_bytes()
    results: list = [None] * 6

    def one(i: int) -> None:
        results[i] = httpx.post(f"{server}/v1/reports", files={"frontal": ("x.png", data)}, timeout=60)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.status_code == 200 for r in results), [r.text for r in results]
    assert len({json.dumps(comparable(r.json()), sort_keys=True) for r in results}) == 1


def _colour_photo() -> bytes:
    """The real X-ray, tinted as a colour photo would be: flagged not_grayscale by runtime.sanity."""
    import cv2
    import numpy as np

    gray = cv2.imread(str(FRONTAL), cv2.IMREAD_GRAYSCALE).astype(np.float32)  # (H, W)
    bgr = np.stack([gray * 0.3, gray * 0.8, np.clip(gray * 1.4 + 60, 0, 255)], axis=-1).astype(np.uint8)
    return cv2.imencode(".png", bgr)[1].tobytes()


def test_a_flagged_input_gets_no_report_text(server, bundle_path, tmp_path):
    """#13 item 3: a colour photo is answered with status "flagged", text null and withheld (no tokens, no
    attention), the reasons in warnings, as `edgecap caption` writes it; show_flagged_text=true returns the
    model's text in flagged_text."""
    from edgecap.runtime.sanity import FLAG_CODES

    photo_file = tmp_path / "photo.png"
    photo_file.write_bytes(_colour_photo())
    photo = {"frontal": ("photo.png", photo_file.read_bytes(), "image/png")}
    r = httpx.post(f"{server}/v1/reports", files=photo, timeout=60)
    assert r.status_code == 200, r.text
    report = r.json()
    assert comparable(report) == comparable(cli_json(str(photo_file), "--bundle", str(bundle_path)))
    assert report["status"] == "flagged" and report["flagged"] is True
    assert report["text"] is None and report["text_withheld"] is True and report["tokens"] == []
    assert "attention" not in report and "flagged_text" not in report
    assert {w["code"] for w in report["warnings"]} & FLAG_CODES
    shown = httpx.post(f"{server}/v1/reports", files=photo, data={"show_flagged_text": "true"}, timeout=60).json()
    assert shown["status"] == "flagged" and shown["text"] is None and shown["text_withheld"] is False
    assert isinstance(shown["flagged_text"], str) and shown["flagged_text"] and shown["tokens"]
    ok = httpx.post(f"{server}/v1/reports", files=png_upload(), data={"show_flagged_text": "true"}, timeout=60)
    assert ok.json()["status"] == "ok" and ok.json()["text"] and "flagged_text" not in ok.json()


# ---- bad input: the right 4xx, as problem+json, with a clear message ------------------------------
def _multipart(field: str, filename: str, data: bytes, ctype: str = "image/png") -> dict:
    return {"files": {field: (filename, data, ctype)}}


def _truncated_png() -> bytes:
    return FRONTAL.read_bytes()[:3000]


BAD_INPUTS = [
    # id, request kwargs (built lazily), status, code, words in detail
    ("empty-body", lambda: {}, 422, "missing-image", ["empty", "frontal"]),
    (
        "wrong-field-name",
        lambda: _multipart("image", "x.png", FRONTAL.read_bytes()),
        422,
        "validation-error",
        ["frontal", "received fields: image"],
    ),
    (
        "not-an-image",
        lambda: _multipart("frontal", "notes.txt", b"patient notes, not pixels\n" * 20, "text/plain"),
        415,
        "unsupported-image-format",
        ["not a png, jpeg"],
    ),
    (
        "pdf",
        lambda: _multipart("frontal", "scan.pdf", b"%PDF-1.7\n" + b"0" * 500),
        415,
        "unsupported-image-format",
        ["pdf"],
    ),
    ("empty-file", lambda: _multipart("frontal", "x.png", b""), 422, "empty-image", ["frontal", "empty"]),
    (
        "truncated-png",
        lambda: _multipart("frontal", "x.png", _truncated_png()),
        422,
        "unreadable-image",
        ["frontal", "truncated"],
    ),
    (
        "corrupt-png-header",
        lambda: _multipart("frontal", "x.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40),
        422,
        "unreadable-image",
        ["ihdr"],
    ),
    (
        "20000x20000-png",
        lambda: _multipart("frontal", "bomb.png", zero_png(20000, 20000)),
        413,
        "image-too-large",
        ["20000 x 20000", "400.0 MP"],
    ),
    (
        "json-content-type",
        lambda: {"content": b'{"frontal": "x"}', "headers": {"content-type": "application/json"}},
        415,
        "unsupported-media-type",
        ["application/json", "multipart/form-data"],
    ),
    (
        "urlencoded",
        lambda: {"data": {"frontal": "abc"}},
        415,
        "unsupported-media-type",
        ["application/x-www-form-urlencoded"],
    ),
    ("beam-0", lambda: {"files": png_upload(), "data": {"beam": "0"}}, 422, "validation-error", ["beam"]),
    ("beam-6", lambda: {"files": png_upload(), "data": {"beam": "6"}}, 422, "validation-error", ["beam"]),
    ("beam-text", lambda: {"files": png_upload(), "data": {"beam": "wide"}}, 422, "validation-error", ["beam"]),
    (
        "frontal-as-text-field",
        lambda: {"data": {"frontal": "abc"}, "files": {"x": ("x", b"x")}},
        422,
        "validation-error",
        ["frontal"],
    ),
    (
        "two-frontal-files",
        lambda: {"files": [("frontal", ("a.png", FRONTAL.read_bytes())), ("frontal", ("b.png", FRONTAL.read_bytes()))]},
        422,
        "validation-error",
        ["2 'frontal' fields", "one study"],
    ),
    (
        "broken-multipart",
        lambda: {"content": b"--zz\r\nnonsense", "headers": {"content-type": "multipart/form-data; boundary=b"}},
        400,
        "bad-request",
        ["multipart"],
    ),
]


@pytest.mark.parametrize("make, status, code, words", [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS])
def test_bad_input(server, make, status, code, words):
    t0 = time.perf_counter()
    r = httpx.post(f"{server}/v1/reports", timeout=30, **make())
    assert_problem(r, status, code, *words)
    assert r.json()["instance"].startswith("urn:uuid:")
    assert time.perf_counter() - t0 < 5


def test_decompression_bomb_is_refused_from_its_header(server):
    """400 MP declared: answered without decoding (a decode would allocate 400 MB and take seconds)."""
    bomb = zero_png(20000, 20000)
    assert len(bomb) < 1_000_000
    t0 = time.perf_counter()
    r = httpx.post(f"{server}/v1/reports", files={"frontal": ("bomb.png", bomb)}, timeout=30)
    assert_problem(r, 413, "image-too-large", "limit of 30.0 MP")
    assert time.perf_counter() - t0 < 1.0


def test_jpeg_dimensions_come_from_the_sof_marker():
    import cv2
    import numpy as np

    from edgecap.serve.image_check import check_image
    from edgecap.serve.problems import Problem

    jpeg = cv2.imencode(".jpg", np.zeros((60, 90), np.uint8))[1].tobytes()
    info = check_image(jpeg, 10_000, "frontal")
    assert (info.format, info.width, info.height) == ("jpeg", 90, 60)
    with pytest.raises(Problem) as e:
        check_image(jpeg, 5_000, "lateral")
    assert e.value.status == 413 and e.value.detail.startswith("lateral image: 90 x 60")
    with pytest.raises(Problem) as e:
        check_image(jpeg[:20], 10_000, "frontal")
    assert e.value.status == 422


def test_other_routes_answer_problems(server):
    assert_problem(httpx.get(f"{server}/v1/nothing"), 404, "not-found", "/v1/nothing")
    r = httpx.delete(f"{server}/v1/reports")
    assert_problem(r, 405, "method-not-allowed", "DELETE")
    assert "POST" in r.headers["allow"]


def test_oversize_request_is_refused_before_its_body(server):
    """Content-Length over 20 MiB: 413 at once, while the client has sent no byte of the body."""
    head = (
        b"POST /v1/reports HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        b"Content-Length: 25000000\r\n\r\n"
    )
    t0 = time.perf_counter()
    status, headers, body = raw_request(server, head)
    assert status == 413 and headers["content-type"].startswith(PROBLEM)
    assert json.loads(body)["code"] == "request-too-large" and "25,000,000 bytes" in json.loads(body)["detail"]
    assert time.perf_counter() - t0 < 2


def test_oversize_streamed_request_is_cut_off():
    """No Content-Length (chunked): counted as it streams in, 413 once past the limit (1 MiB here)."""
    with stub_server() as (base, _):
        part = (
            b'--b\r\nContent-Disposition: form-data; name="frontal"; filename="x.png"\r\n'
            b"Content-Type: image/png\r\n\r\n"
        )

        def chunked(data: bytes) -> bytes:
            return b"%x\r\n%s\r\n" % (len(data), data)

        head = (
            b"POST /v1/reports HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunks = [chunked(part)] + [chunked(b"\x00" * 65536)] * 40 + [b"0\r\n\r\n"]
        status, headers, body = raw_request(base, head, chunks)
        assert status == 413 and json.loads(body)["code"] == "request-too-large"
        # httpx streaming a generator body: the same answer
        r = httpx.post(
            f"{base}/v1/reports",
            content=(c for c in [part] + [b"\x00" * 65536] * 40),
            headers={"content-type": "multipart/form-data; boundary=b"},
        )
        assert_problem(r, 413, "request-too-large", "1 MiB")


# ---- the connection level (serve.connections) ------------------------------------------------------
def test_malformed_requests_get_a_problem_400(server):
    """#13 item 13: what h11 cannot parse (an invalid Content-Length, a bad header line) is a 400
    application/problem+json, not uvicorn's plain text."""
    for head in (
        b"POST /v1/reports HTTP/1.1\r\nHost: localhost\r\nContent-Length: abc\r\n\r\n",
        b"POST /v1/reports HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nno colon here\r\n\r\n",
    ):
        status, headers, body = raw_request(server, head)
        assert status == 400 and headers["content-type"].startswith(PROBLEM), (head, headers, body)
        problem = json.loads(body)
        assert problem["code"] == "bad-request" and "not valid HTTP/1.1" in problem["detail"]
        assert problem["instance"].startswith("urn:uuid:") and headers["connection"] == "close"


def _closing_upload(png: bytes) -> tuple[bytes, bytes]:
    """(head, body) of a report request that ends its connection (Connection: close)."""
    body = (
        b'--b\r\nContent-Disposition: form-data; name="frontal"; filename="x.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + png + b"\r\n--b--\r\n"
    )
    head = (
        b"POST /v1/reports HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    return head, body


def test_bytes_after_a_closing_request_are_not_a_request(caplog):
    """#13 item 7: bytes after the declared body of a request that ends its connection (a short Content-Length)
    reached h11 while the app was still working: uvicorn answered the request with a plain 400, then the
    app's own answer raised inside h11 (a false "500 (internal error)" and a 50-line traceback). Now the
    bytes are dropped and the request gets its own answer."""
    caplog.set_level(logging.INFO)
    with stub_server(timeout_s=30.0) as (base, gate):
        head, body = _closing_upload(zero_png(100, 100))
        with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])), timeout=10) as s:
            s.sendall(head + body)
            _wait_for(base, lambda q: q["running"] == 1)  # the stub captioner holds the job
            s.sendall(b"EXTRA BYTES AFTER THE BODY\r\n\r\n")
            httpx.get(f"{base}/v1/health")  # a round trip on the server's loop: the extra bytes have arrived
            gate.set()
            answer = b""
            while block := s.recv(65536):
                answer += block
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
        # the race of the probe: the extra bytes arrive while a fast answer (a 422) is being written
        base_port = int(base.rsplit(":", 1)[1])
        short = (
            b"POST /v1/reports HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 5\r\nConnection: close\r\n\r\n--b\r\n"
        )
        statuses = set()
        for i in range(40):
            with socket.create_connection(("127.0.0.1", base_port), timeout=10) as s:
                s.sendall(short)
                time.sleep((i % 8) * 0.0005)
                try:
                    s.sendall(b"EXTRA BYTES\r\n\r\n")
                    statuses.add(s.recv(64)[:12])
                except OSError:  # the server answered and closed first
                    pass
    time.sleep(0.2)
    assert b"HTTP/1.1 500" not in statuses and b"HTTP/1.1 400" not in statuses, statuses
    logged = [r for r in caplog.records if r.name.startswith(("uvicorn", "edgecap"))]
    assert not [r for r in logged if r.levelno >= logging.ERROR or r.exc_info], [r.getMessage() for r in logged]
    assert not [r for r in logged if "-> 500" in r.getMessage()]


# ---- API key ------------------------------------------------------------------------------------
def test_api_key_required(keyed_server):
    base = keyed_server
    body = assert_problem(httpx.get(f"{base}/v1/bundle"), 401, "unauthorized", "X-API-Key")
    assert "api key" in body["detail"].lower()
    r = httpx.get(f"{base}/v1/bundle", headers={"X-API-Key": "wrong-key-0123456789abcdef"})
    assert_problem(r, 401, "unauthorized", "not valid")
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert_problem(httpx.get(f"{base}/v1/bundle", headers={"Authorization": f"Bearer {API_KEY}x"}), 401, "unauthorized")
    # the key is checked before the upload is read or its type judged
    assert_problem(
        httpx.post(f"{base}/v1/reports", content=b"x", headers={"content-type": "text/plain"}), 401, "unauthorized"
    )
    assert httpx.get(f"{base}/v1/bundle", headers={"X-API-Key": API_KEY}).status_code == 200
    assert httpx.get(f"{base}/v1/bundle", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200
    assert httpx.get(f"{base}/v1/health").status_code == 200  # liveness needs no key
    r = httpx.post(f"{base}/v1/reports", files=png_upload(), headers={"X-API-Key": API_KEY}, timeout=60)
    assert r.status_code == 200 and r.json()["format"] == "edgecap-report/1"
    spec = httpx.get(f"{base}/openapi.json").json()
    assert set(spec["components"]["securitySchemes"]) == {"ApiKeyHeader", "BearerAuth"}
    assert "401" in spec["paths"]["/v1/reports"]["post"]["responses"]


# ---- queue, deadline ------------------------------------------------------------------------------
def _wait_for(base: str, predicate, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        q = httpx.get(f"{base}/v1/health").json()["queue"]
        if predicate(q):
            return q
        time.sleep(0.02)
    raise AssertionError(f"queue never reached the state; last {q}")


def test_queue_full_answers_503_with_retry_after():
    with stub_server(timeout_s=30.0) as (base, gate):
        png = zero_png(100, 100)  # stub captioners: any valid PNG will do
        answers: dict = {}

        def post(name: str) -> None:
            answers[name] = httpx.post(f"{base}/v1/reports", files={"frontal": ("x.png", png)}, timeout=30)

        first = threading.Thread(target=post, args=("running",))
        first.start()
        _wait_for(base, lambda q: q["running"] == 1)
        second = threading.Thread(target=post, args=("waiting",))
        second.start()
        _wait_for(base, lambda q: q["waiting"] == 1)
        t0 = time.perf_counter()
        r = httpx.post(f"{base}/v1/reports", files={"frontal": ("x.png", png)}, timeout=30)
        assert time.perf_counter() - t0 < 2
        assert_problem(r, 503, "queue-full", "busy", "retry")
        assert r.headers["retry-after"] == "3"
        gate.set()
        first.join(30)
        second.join(30)
        assert answers["running"].status_code == 200 and answers["waiting"].status_code == 200
        assert _wait_for(base, lambda q: q["running"] == q["waiting"] == 0)["capacity"] == 2


def test_deadline_answers_504_and_frees_the_queue():
    with stub_server(timeout_s=1.0) as (base, gate):
        t0 = time.perf_counter()
        stub_png = {"frontal": ("x.png", zero_png(100, 100))}
        r = httpx.post(f"{base}/v1/reports", files=stub_png, timeout=30)
        assert_problem(r, 504, "timeout", "1 s")
        assert 0.9 < time.perf_counter() - t0 < 3
        assert _wait_for(base, lambda q: q["running"] == 1)  # the worker still runs the abandoned job ...
        gate.set()
        _wait_for(base, lambda q: q["running"] == q["waiting"] == 0)  # ... and then its place is free again
        assert httpx.post(f"{base}/v1/reports", files=stub_png, timeout=30).status_code == 200


def test_slow_upload_answers_408():
    with stub_server(timeout_s=1.0) as (base, _):
        head = (
            b"POST /v1/reports HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 5000\r\n\r\n--b\r\n"
        )
        status, _, body = raw_request(base, head)  # 5,000 bytes promised, 5 sent
        assert status == 408 and json.loads(body)["code"] == "request-timeout"


# ---- logs carry no patient data -------------------------------------------------------------------
def test_logs_hold_no_image_bytes_or_report_text(server, caplog):
    caplog.set_level(logging.DEBUG)
    png = FRONTAL.read_bytes()
    r = httpx.post(f"{server}/v1/reports", files={"frontal": ("patient-name.png", png)}, timeout=60)
    assert r.status_code == 200
    text = r.json()["text"]
    bad = httpx.post(f"{server}/v1/reports", files={"frontal": ("x.png", png[:3000])}, timeout=60)
    assert bad.status_code == 422
    time.sleep(0.2)  # the access line is written after the answer
    logged = "\n".join(f"{rec.name} {rec.getMessage()} {rec.exc_text or ''}" for rec in caplog.records)
    assert "POST /v1/reports -> 200" in logged and "POST /v1/reports -> 422" in logged  # the capture works
    for secret in (text, *text.split(". ")[:2], "patient-name", "IHDR", repr(png[:16]), png[:16].hex()):
        assert secret and secret not in logged, secret


# ---- bundle, health, docs -----------------------------------------------------------------------
def test_bundle_health_openapi_and_offline_docs(server, bundle_path):
    assert httpx.get(f"{server}/v1/bundle").json() == json.loads((bundle_path / "manifest.json").read_text())
    health = httpx.get(f"{server}/v1/health").json()
    assert health["status"] == "ok" and health["queue"]["workers"] == 2 and health["bundle"]["mode"]
    spec = httpx.get(f"{server}/openapi.json").json()
    post = spec["paths"]["/v1/reports"]["post"]
    assert {"200", "400", "408", "413", "415", "422", "503", "504"} <= set(post["responses"])
    assert PROBLEM in post["responses"]["413"]["content"]
    assert "securitySchemes" not in spec.get("components", {})  # no key configured
    page = httpx.get(f"{server}/docs")
    assert page.status_code == 200 and "openapi.json" in page.text
    assert not re.search(r"https?://", page.text), "the docs page must not load anything from the network"
    if "/docs-assets/" in page.text:
        for asset in re.findall(r'(?:src|href)="(/docs-assets/[^"]+)"', page.text):
            assert httpx.get(f"{server}{asset}").status_code == 200, asset


def test_lateral_is_an_optional_file_never_null(server):
    """#13 item 15: the schema said `lateral` could be null, yet multipart has no null and a text part
    `lateral=null` is (rightly) a 422. The schema now says what the server does: a file, or no part at all."""
    spec = httpx.get(f"{server}/openapi.json").json()
    ref = spec["paths"]["/v1/reports"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
    body = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert body["properties"]["lateral"]["type"] == "string" and "anyOf" not in body["properties"]["lateral"]
    assert body["required"] == ["frontal"]
    flag = body["properties"]["show_flagged_text"]
    assert flag["type"] == "boolean" and flag["default"] is False
    r = httpx.post(f"{server}/v1/reports", files=png_upload(), data={"lateral": "null"}, timeout=60)
    assert assert_problem(r, 422, "validation-error", "lateral")["errors"][0]["field"] == "lateral"
    ref = spec["paths"]["/v1/reports"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    report = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert {"status", "text_withheld", "flagged_text"} <= set(report["properties"])
    assert {"type": "null"} in report["properties"]["text"]["anyOf"]


# ---- the command ----------------------------------------------------------------------------------
def _serve_cli(*args: str):
    import typer
    from typer.testing import CliRunner

    from edgecap.cli.serve import serve

    app = typer.Typer()
    app.command()(serve)
    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "example.org"])
def test_cli_refuses_a_public_bind_without_a_key(host):
    r = _serve_cli("--host", host, "--bundle", "/nonexistent")
    assert r.exit_code == 2 and "without an API key" in r.output and "--api-key-file" in r.output


def test_cli_usage_errors(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("abc\n")
    r = _serve_cli("--host", "0.0.0.0", "--api-key-file", str(short))
    assert r.exit_code == 2 and "at least 16" in r.output
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    assert _serve_cli("--api-key-file", str(empty)).exit_code == 2
    assert _serve_cli("--api-key-file", str(tmp_path / "missing.txt")).exit_code == 2
    r = _serve_cli("--bundle", str(tmp_path))
    assert r.exit_code == 2 and "manifest.json" in r.output
    r = _serve_cli("--ssl-certfile", str(short))
    assert r.exit_code == 2 and "go together" in r.output


def test_cli_on_a_busy_port_exits_1(bundle_path):
    """#13 item 13: uvicorn exits 3 when it cannot listen; the documented status is 1, with one error line."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = _serve_cli("--bundle", str(bundle_path), "--port", str(port), "--log-level", "critical")
    assert r.exit_code == 1, r.output
    assert f"error: the server did not start on 127.0.0.1:{port}" in r.output and "Traceback" not in r.output


def _peak_rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s*(\d+) kB", status).group(1)) / 1024


def test_memory_of_a_29_megapixel_upload(bundle_path, tmp_path):
    """#13 item 4: docs/serve.md's memory figure, measured again. One 29 MP 16-bit RGBA PNG (the real X-ray
    resized to 5,385 px a side) raised the server's peak RSS by 565 MiB with the old read path (the issue's
    probe: 445 MiB) where the docs said 240 MB; with the alpha plane dropped at decode it is ~340 MiB, which
    docs/serve.md now says (bound here: 400 MiB)."""
    import cv2
    import numpy as np

    if not Path("/proc/self/status").is_file():
        pytest.skip("peak RSS is read from /proc (Linux)")
    gray = cv2.imread(str(FRONTAL), cv2.IMREAD_GRAYSCALE)
    side = 5385  # 29.0 MP
    big = cv2.resize(gray, (side, side), interpolation=cv2.INTER_LINEAR).astype(np.uint16) * 257
    rgba = cv2.merge([big, big, big, np.full_like(big, 65535)])  # (H, W, 4) uint16
    png = cv2.imencode(".png", rgba, [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes()
    del big, rgba
    assert len(png) < 20 * 2**20  # under the default request limit
    port = free_port()
    with open(tmp_path / "server.log", "wb") as log_file:
        proc = start_command(bundle_path, port, log_file, "--log-level", "warning", "--timeout", "120")
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(2):  # warm: interpreters, allocator pools
            assert httpx.post(f"{base}/v1/reports", files=png_upload(), timeout=60).status_code == 200
        before = _peak_rss_mib(proc.pid)
        r = httpx.post(f"{base}/v1/reports", files={"frontal": ("big.png", png)}, timeout=120)
        assert r.status_code == 200, r.text
        growth = _peak_rss_mib(proc.pid) - before
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    print(f"29 MP 16-bit RGBA PNG ({len(png) / 2**20:.1f} MiB): peak RSS {before:.0f} MiB + {growth:.0f} MiB")
    assert growth < 400, growth


def test_loopback_detection():
    from edgecap.serve.settings import is_loopback

    assert all(map(is_loopback, ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.1", "example.org", ""]))


def test_served_with_tensorflow_unimportable(bundle_path):
    code = f"""
import sys
sys.modules["tensorflow"] = None
sys.modules["keras"] = None
from pathlib import Path
import edgecap.cli.serve
from edgecap.serve import app, connections, error_handlers, guards, image_check, middleware
from edgecap.serve import openapi, pool, problems, routes, settings, swagger
a = app.create_app(settings.Settings(bundle=Path({str(bundle_path)!r})))
from edgecap.runtime.captioner import Captioner
captioner = Captioner.from_bundle({str(bundle_path)!r})
report = routes.caption_job(Path({str(FRONTAL)!r}).read_bytes(), None, 2, False, captioner)
assert b'"format": "edgecap-report/1"' in report
print("ok")
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip().endswith("ok"), p.stderr[-3000:]


def test_the_command_serves_https_and_stops(bundle_path, tmp_path):
    """`python -m edgecap.cli serve` (what `edgecap serve` runs) with a key and TLS: up, keyed, answering over
    HTTPS; SIGINT stops it with status 0."""
    import shutil
    import ssl

    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make a test certificate")
    cert, pem_key = tmp_path / "cert.pem", tmp_path / "tls-key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(pem_key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    key_file = tmp_path / "key.txt"
    key_file.write_text(API_KEY)
    key_file.chmod(0o600)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgecap.cli",
            "serve",
            "--bundle",
            str(bundle_path),
            "--port",
            str(port),
            "--api-key-file",
            str(key_file),
            "--ssl-certfile",
            str(cert),
            "--ssl-keyfile",
            str(pem_key),
            "--log-level",
            "warning",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"https://127.0.0.1:{port}"
    client = httpx.Client(verify=ssl.create_default_context(cafile=str(cert)), timeout=10)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if client.get(f"{base}/v1/health").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        assert_problem(client.get(f"{base}/v1/bundle"), 401, "unauthorized")
        assert client.get(f"{base}/v1/bundle", headers={"X-API-Key": API_KEY}).json()["format"] == "edgecap-bundle/1"
    finally:
        client.close()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert f"https://127.0.0.1:{port}" in out and "API key required" in out
