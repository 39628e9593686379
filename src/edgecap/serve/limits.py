"""What keeps `edgecap serve` up under bad or heavy input: sizes, pixel counts, admission, deadlines.

    RequestLimits      ASGI middleware: the request body limit (Content-Length first, then counted while it
                       streams in: 413 before the body is read), the per-request deadline (504; 408 while
                       the upload is still arriving), a request id, one log line per request
    check_image        an upload's format from its magic bytes (PNG, JPEG, DICOM Part 10: else 415) and its
                       pixel count from its header (PNG IHDR, JPEG SOF, DICOM Rows x Columns) BEFORE any
                       decoder allocates it: a 20,000 x 20,000 PNG is a 413 in microseconds
    InferencePool      `workers` threads, each owning one Captioner (a TFLite interpreter is not thread-safe);
                       at most workers + queue_size requests admitted, the next gets 503 + Retry-After
    Problem            an RFC 9457 problem (type, title, status, detail): every error the server answers

Logs carry method, path, status, sizes and times; never image bytes, report text or query strings.
Device-safe: stdlib only (and pydicom, when installed, to read a DICOM header).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import json
import logging
import queue
import struct
import threading
import time
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Callable, Optional

log = logging.getLogger("edgecap.serve")

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:edgecap:problem:"  # + code; docs/serve.md lists the codes
REQUEST_ID_KEY = "edgecap.request_id"  # ASGI scope key


# ---- problems -------------------------------------------------------------------------------------
class Problem(Exception):
    """An error answered as application/problem+json (RFC 9457).

    Attributes:
        status: HTTP status.
        code: stable machine-readable code; the `type` member is PROBLEM_TYPE_PREFIX + code.
        detail: a sentence for people about this occurrence (never patient data).
        headers: extra response headers (Retry-After, WWW-Authenticate, Allow).
        extra: extension members (e.g. validation `errors`).
    """

    def __init__(self, status: int, code: str, detail: str, headers: Optional[dict[str, str]] = None,
                 title: Optional[str] = None, **extra: Any):
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.title = title or HTTPStatus(status).phrase
        self.headers = dict(headers or {})
        self.extra = extra

    def body(self, request_id: Optional[str] = None) -> dict[str, Any]:
        d = {"type": PROBLEM_TYPE_PREFIX + self.code, "title": self.title, "status": self.status,
             "detail": self.detail, "code": self.code}
        if request_id:
            d["instance"] = f"urn:uuid:{request_id}"
        d.update(self.extra)
        return d

    async def send(self, scope, send) -> None:
        """Answer on a raw ASGI `send` (middleware, before or instead of the app)."""
        rid = scope.get(REQUEST_ID_KEY)
        content = json.dumps(self.body(rid)).encode()
        headers = [(b"content-type", PROBLEM_MEDIA_TYPE.encode()), (b"content-length", str(len(content)).encode())]
        if rid:
            headers.append((b"x-request-id", rid.encode()))
        headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        if self.status in (408, 413):  # the rest of the body will not be read: the connection cannot be reused
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": content})


# ---- image headers --------------------------------------------------------------------------------
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
DICOM_OFFSET, DICOM_MAGIC = 128, b"DICM"
# start-of-frame markers carrying the frame size (not DHT C4, JPG C8, DAC CC)
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
# formats people send by mistake, named in the 415 message
_OTHER_FORMATS = ((b"GIF8", "GIF"), (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
                  (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"), (b"%PDF", "PDF"), (b"PK\x03\x04", "ZIP"),
                  (b"\x1f\x8b", "gzip"), (b"{", "JSON"), (b"<", "HTML / XML"))


@dataclass(frozen=True)
class ImageInfo:
    format: str  # "png" | "jpeg" | "dicom"
    width: Optional[int]  # None: a DICOM whose header could not be read here (the decoder reports it)
    height: Optional[int]
    bytes: int


def sniff(data: bytes) -> str:
    """Magic bytes -> "png" | "jpeg" | "dicom". Raises Problem 415 for anything else (and 422 when empty)."""
    if not data:
        raise Problem(422, "empty-image", "the file is empty")
    if data.startswith(PNG_MAGIC):
        return "png"
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if data[DICOM_OFFSET:DICOM_OFFSET + 4] == DICOM_MAGIC:
        return "dicom"
    if data[4:12] == b"ftypavif" or data[8:12] == b"WEBP":
        seen = "AVIF / WebP"
    else:
        seen = next((name for magic, name in _OTHER_FORMATS if data.startswith(magic)), None)
    raise Problem(415, "unsupported-image-format",
                  "not a PNG, JPEG or DICOM (Part 10, 'DICM' at byte 128) file"
                  + (f": it looks like {seen}" if seen else ""))


def _png_size(data: bytes) -> tuple[int, int]:
    # signature (8) | length (4) | "IHDR" | width (4) | height (4) | ...: IHDR must be the first chunk
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise Problem(422, "unreadable-image", "a corrupt PNG: no IHDR header chunk")
    return struct.unpack(">II", data[16:24])


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """Walk the marker segments to the first start-of-frame: (width, height)."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise Problem(422, "unreadable-image", "a corrupt JPEG: bad marker structure before the frame header")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # TEM, RSTn, SOI: no length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # EOI or start of scan before any frame header
            break
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if length < 2:
            raise Problem(422, "unreadable-image", "a corrupt JPEG: bad segment length")
        if marker in _SOF:
            if i + 9 > n:
                break
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            if height == 0:  # height defined later by a DNL marker: libjpeg cannot decode it anyway
                raise Problem(422, "unreadable-image", "a JPEG whose height is defined by a DNL marker "
                                                       "(unsupported)")
            return width, height
        i += 2 + length
    raise Problem(422, "unreadable-image", "a corrupt or truncated JPEG: no frame header")


def _dicom_size(data: bytes) -> tuple[Optional[int], Optional[int]]:
    try:
        import pydicom
    except ImportError:  # no decoder either: runtime.dicom answers with its install hint
        return None, None
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
        rows, cols = ds.get("Rows"), ds.get("Columns")
        if rows is None or cols is None:
            return None, None
        return int(cols), int(rows)  # one frame: runtime.dicom decodes only the first
    except Exception:  # pydicom raises many types for garbage; runtime.dicom gives the full message
        return None, None


def check_image(data: bytes, max_pixels: int, role: str) -> ImageInfo:
    """Format and size of one upload, from its first bytes only.

    Raises:
        Problem: 415 not PNG / JPEG / DICOM; 422 empty or a corrupt header; 413 more than max_pixels.
    """
    try:
        fmt = sniff(data)
        width, height = {"png": _png_size, "jpeg": _jpeg_size, "dicom": _dicom_size}[fmt](data)
    except Problem as p:
        p.detail = f"{role} image: {p.detail}"
        raise
    if width is not None and height is not None:
        if width == 0 or height == 0:
            raise Problem(422, "unreadable-image", f"{role} image: a corrupt {fmt.upper()} header ({width} x "
                                                   f"{height} pixels)")
        if width * height > max_pixels:
            raise Problem(413, "image-too-large", f"{role} image: {width} x {height} pixels "
                                                  f"({width * height / 1e6:.1f} MP) is more than the limit of "
                                                  f"{max_pixels / 1e6:.1f} MP")
    return ImageInfo(fmt, width, height, len(data))


# ---- admission and workers ------------------------------------------------------------------------
class Ticket:
    """One admitted request's place in the pool; released once (by the request, or by the worker that ran
    its job, so a request that timed out keeps its place until the worker is free again)."""

    def __init__(self, pool: "InferencePool"):
        self._pool, self._released, self.handed_over = pool, False, False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._pool._release()


class InferencePool:
    """Worker threads, each with its own captioner, fed by one FIFO queue.

    Args:
        captioners: one per worker (runtime.captioner.Captioner, or anything with its interface).
        queue_size: admitted requests beyond the running ones; admit() refuses past workers + queue_size.
        retry_after_s: the Retry-After of the 503 it raises.
    """

    def __init__(self, captioners: list, queue_size: int, retry_after_s: int = 2):
        if not captioners:
            raise ValueError("InferencePool needs at least one captioner")
        self.workers, self.capacity = len(captioners), len(captioners) + queue_size
        self.retry_after_s = retry_after_s
        self._lock = threading.Lock()
        self._admitted = 0
        self._running = 0
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, args=(c,), name=f"edgecap-worker-{i}", daemon=True)
                         for i, c in enumerate(captioners)]
        for t in self._threads:
            t.start()

    def admit(self) -> Ticket:
        """A place for one request, or Problem 503 + Retry-After when every place is taken."""
        with self._lock:
            if self._admitted >= self.capacity:
                raise Problem(503, "queue-full", f"the server is busy: {self.workers} report(s) running and "
                                                 f"{self.capacity - self.workers} waiting; retry in "
                                                 f"{self.retry_after_s} s",
                              headers={"Retry-After": str(self.retry_after_s)})
            self._admitted += 1
        return Ticket(self)

    def _release(self) -> None:
        with self._lock:
            self._admitted -= 1

    def submit(self, ticket: Ticket, job: Callable[[Any], Any]) -> concurrent.futures.Future:
        """Run job(captioner) on a worker; the ticket is released when the job ends (or is skipped)."""
        ticket.handed_over = True
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((job, fut, ticket))
        return fut

    async def run(self, ticket: Ticket, job: Callable[[Any], Any]) -> Any:
        """submit() awaited; cancelling the caller (a deadline) cancels a job that has not started."""
        return await asyncio.wrap_future(self.submit(ticket, job))

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"workers": self.workers, "running": self._running,
                    "waiting": self._admitted - self._running, "capacity": self.capacity}

    def close(self, timeout: float = 5.0) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        for t in self._threads:
            t.join(timeout)

    def _work(self, captioner) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            job, fut, ticket = item
            try:
                if not fut.set_running_or_notify_cancel():  # its request gave up while it waited
                    continue
                with self._lock:
                    self._running += 1
                try:
                    fut.set_result(job(captioner))
                except BaseException as e:  # handed to the request, which answers with it
                    fut.set_exception(e)
                finally:
                    with self._lock:
                        self._running -= 1
            finally:
                ticket.release()


# ---- request middleware ---------------------------------------------------------------------------
class _BodyTooLarge(Exception):
    pass


class RequestLimits:
    """ASGI middleware around the whole app (see the module docstring).

    Args:
        app: the ASGI app.
        max_request_bytes: body limit (413).
        timeout_s: deadline from the first byte to the start of the answer (504; 408 while uploading).
    """

    def __init__(self, app, max_request_bytes: int, timeout_s: float):
        self.app, self.max_bytes, self.timeout_s = app, max_request_bytes, timeout_s

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        rid = uuid.uuid4().hex
        scope[REQUEST_ID_KEY] = rid
        headers = dict(scope.get("headers") or [])
        state = {"in": 0, "out_status": None, "body_done": True, "too_large": False, "started": False}
        length = headers.get(b"content-length")
        if length is not None or b"transfer-encoding" in headers:
            state["body_done"] = length is not None and length.strip() == b"0"

        def finish(status: int, note: str = "") -> None:
            ms = (time.perf_counter() - start) * 1e3
            log.info("%s %s -> %d in %.1f ms (%d bytes in) id=%s%s", scope.get("method"), scope.get("path"),
                     status, ms, state["in"], rid, note)

        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                declared = -1
            if declared < 0:
                p = Problem(400, "bad-request", "invalid Content-Length header")
                await p.send(scope, send)
                return finish(400)
            if declared > self.max_bytes:
                await self._too_large(scope, send, declared)
                return finish(413, " (Content-Length)")

        async def limited_receive():
            message = await receive()
            if message["type"] == "http.request":
                state["in"] += len(message.get("body", b""))
                if not message.get("more_body", False):
                    state["body_done"] = True
                if state["in"] > self.max_bytes:
                    state["too_large"] = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message):
            if state["too_large"] and not state["started"]:
                return  # the app's answer to a body it could not finish reading; ours is the 413
            if message["type"] == "http.response.start":
                state["started"], state["out_status"] = True, message["status"]
                message = {**message, "headers": list(message.get("headers", [])) + [(b"x-request-id", rid.encode())]}
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, limited_receive, guarded_send), self.timeout_s)
        except _BodyTooLarge:
            pass
        except asyncio.TimeoutError:
            if state["started"]:  # too late to answer: uvicorn closes the connection
                return finish(state["out_status"], " (deadline passed while answering)")
            if not state["body_done"]:
                p = Problem(408, "request-timeout", f"the request body did not arrive within {self.timeout_s:g} s")
            else:
                p = Problem(504, "timeout", f"no report within {self.timeout_s:g} s (the server is overloaded or "
                                            f"the image is very large); try again later")
            await p.send(scope, send)
            return finish(p.status)
        except Exception:  # answered by the app's 500 handler (ServerErrorMiddleware, outside this one)
            finish(500, " (internal error)")
            raise
        if state["too_large"] and not state["started"]:
            await self._too_large(scope, send, None)
            return finish(413, " (streamed)")
        finish(state["out_status"] or 500)

    async def _too_large(self, scope, send, declared: Optional[int]) -> None:
        limit = f"{self.max_bytes:,} bytes ({self.max_bytes / 2**20:g} MiB)"
        detail = (f"the request body is {declared:,} bytes; the limit is {limit}" if declared is not None else
                  f"the request body passed the limit of {limit} while it streamed in")
        await Problem(413, "request-too-large", detail).send(scope, send)
