"""Download the Indiana University chest X-ray collection (IU X-Ray) from Open-i.

This is the logic behind ``edgecap data fetch iu-xray --out DIR``. It uses only the
standard library (``urllib``) plus ``tqdm`` for the progress bar, so it runs on the
device-safe core install.

Behaviour
---------
* Each archive is downloaded to ``<name>.part`` and renamed to ``<name>`` only after
  its size and (when known) its sha256 have been checked.
* An existing ``.part`` is resumed with an HTTP ``Range: bytes=N-`` request. A ``206``
  answer is appended; a server that ignores ``Range`` (``200``) restarts from zero;
  ``416`` with ``Content-Range: bytes */N`` equal to the ``.part`` size means the
  ``.part`` is already complete.
* Dropped connections and transient HTTP errors are retried (``retries`` times in a
  row without progress), resuming from what is on disk each time.
* A sha256 mismatch deletes the bad file and raises :class:`FetchError`.
* ``NLMCXR_png.tgz`` has no published checksum: its size is checked against the
  server's ``Content-Length`` / ``Content-Range``, and its computed sha256 is
  reported and written to ``SHA256SUMS`` in the output folder (``sha256sum -c``
  format) so it can be compared with another copy.
* ``extract=True`` unpacks the archives after validating every member (no absolute
  paths, no ``..``, no links escaping the destination, no device files), and uses
  ``tarfile``'s ``filter="data"`` where the Python version has it.

The base URL can be overridden with the ``base_url`` argument or the
``EDGECAP_IU_XRAY_URL`` environment variable (used by the tests to point at a
loopback server).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import socket
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from edgecap.runtime.files import write_atomically

__all__ = [
    "DEFAULT_BASE_URL",
    "ENV_BASE_URL",
    "IU_XRAY_FILES",
    "FetchError",
    "FetchResult",
    "RemoteFile",
    "fetch_iu_xray",
    "resolve_base_url",
    "safe_extract",
    "sha256_file",
]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://openi.nlm.nih.gov/imgs/collections/"
ENV_BASE_URL = "EDGECAP_IU_XRAY_URL"
SHA256SUMS_NAME = "SHA256SUMS"
DEFAULT_TIMEOUT_S = 60.0
CHUNK_SIZE = 1 << 16
USER_AGENT = "edgecap-fetch/0.1 (+urllib)"
# Seconds before the n-th retry: RETRY_BACKOFF_S * 2**(n-1), capped at 30 s.
# Module-level so tests can set it to 0.
RETRY_BACKOFF_S = 1.0


class FetchError(RuntimeError):
    """A download could not be completed or did not verify."""


@dataclass(frozen=True)
class RemoteFile:
    """One archive of the collection.

    ``sha256`` / ``size`` are ``None`` where no trusted value is known.
    ``extract_subdir`` is where ``extract=True`` unpacks it, relative to the output folder.
    """

    name: str
    sha256: str | None
    size: int | None
    extract_subdir: str = ""
    description: str = ""


IU_XRAY_FILES: tuple[RemoteFile, ...] = (
    RemoteFile(
        name="NLMCXR_reports.tgz",
        # sha256 and size of a byte-for-byte copy of the official Open-i file (the same archive
        # ships, as published, in src/edgecap/resources/iu_xray_sample/).
        sha256="8fb6de7eec73d8c3665067ad4bb003ccd57f971ae316d2642e1627ac7268667a",
        size=1_112_632,
        # The archive already has a top-level ecgen-radiology/ folder.
        extract_subdir="",
        description="3,955 radiology reports as ecgen-radiology/<uid>.xml",
    ),
    RemoteFile(
        name="NLMCXR_png.tgz",
        # No trusted checksum is available offline: the size is checked against the
        # server's Content-Length / Content-Range and the computed sha256 is reported
        # and written to SHA256SUMS in the output folder.
        sha256=None,
        size=None,
        # Its PNGs (CXR<uid>_IM-xxxx-xxxx.png) are unpacked into images/.
        extract_subdir="images",
        description="7,470 PNG images, 512 px wide (about 1.1 GB)",
    ),
)


@dataclass
class FetchResult:
    """What :func:`fetch_iu_xray` did for one archive.

    ``verified`` is True when the sha256 matched a known checksum, None when no
    checksum is known (size checked only). ``resumed_from`` is the number of bytes of a
    pre-existing ``.part`` that were kept (0 for a fresh download, a skipped file, or a
    server that ignored ``Range``).
    """

    name: str
    path: Path
    bytes: int
    sha256: str
    verified: bool | None
    resumed_from: int
    skipped: bool = False
    extracted_to: Path | None = None


# --------------------------------------------------------------------------- helpers


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk_size)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def resolve_base_url(base_url: str | None = None) -> str:
    """``base_url`` if given, else ``$EDGECAP_IU_XRAY_URL``, else the Open-i URL."""
    url = base_url or os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL
    return url if url.endswith("/") else url + "/"


def _resolve_files(files: Iterable[str | RemoteFile] | None) -> list[RemoteFile]:
    if files is None:
        return list(IU_XRAY_FILES)
    table = {f.name: f for f in IU_XRAY_FILES}
    out: list[RemoteFile] = []
    for f in files:
        if isinstance(f, RemoteFile):
            out.append(f)
        elif f in table:
            out.append(table[f])
        else:
            raise ValueError(f"unknown IU X-Ray archive {f!r}; known: {sorted(table)}")
    return out


def _read_sums(path: Path) -> dict[str, str]:
    sums: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            parts = line.strip().split(maxsplit=1)
            if len(parts) == 2:
                sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def _write_sum(out_dir: Path, name: str, digest: str) -> None:
    path = out_dir / SHA256SUMS_NAME
    sums = _read_sums(path)
    sums[name] = digest
    write_atomically(path, "".join(f"{d}  {n}\n" for n, d in sorted(sums.items())))


_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)\s*/\s*(\d+|\*)\s*$", re.IGNORECASE)


def _parse_content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
    """``bytes a-b/T`` -> (a, b, T); ``bytes */T`` -> (None, None, T); ``*`` -> None."""
    if not value:
        return None, None, None
    m = _CONTENT_RANGE.match(value)
    if not m:
        return None, None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    end = int(m.group(2)) if m.group(2) is not None else None
    total = int(m.group(3)) if m.group(3) != "*" else None
    return start, end, total


def _int_header(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class _Transient(Exception):
    """A failure worth retrying (connection drop, timeout, 5xx)."""


_NETWORK_ERRORS = (
    urllib.error.URLError,
    http.client.HTTPException,
    ConnectionError,
    socket.timeout,
    TimeoutError,
    OSError,
)


# --------------------------------------------------------------------------- download


@dataclass(frozen=True)
class DownloadOptions:
    """How archives are downloaded.

    ``retries``: failures in a row without new data before giving up; ``timeout``: socket timeout in
    seconds per request; ``progress``: show a tqdm progress bar per archive.
    """

    retries: int = 3
    timeout: float = DEFAULT_TIMEOUT_S
    progress: bool = True


class _Download:
    """One resumable download of ``url`` into ``part``, and the state that survives its retries.

    ``kept``: bytes of the ``.part`` found at the start that are still in use (0 once it is restarted);
    ``total``: the full size, from ``expected_size`` or the server, None while unknown.
    """

    def __init__(self, url: str, part: Path, name: str, expected_size: int | None, opts: DownloadOptions):
        self.url, self.part, self.name, self.expected_size, self.opts = url, part, name, expected_size, opts
        self.kept = self._on_disk()
        self.total = expected_size
        self.progressed = False  # the current attempt wrote new data
        self.bar = tqdm(
            total=self.total,
            initial=self.kept,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=name,
            disable=not opts.progress,
            leave=True,
        )

    def run(self) -> tuple[int, int | None]:
        """Bring ``part`` to the full file. Returns (bytes kept from an old .part, total size or None).

        Each attempt resumes from what is on disk; transient failures are retried with a backoff until
        ``retries`` of them come in a row without new data, then :class:`FetchError` is raised.
        """
        failures = 0
        try:
            while True:
                offset = self._resume_offset()
                if offset is None:
                    return self.kept, self.total
                self.progressed = False
                try:
                    done = self._attempt(offset)
                except _Transient as e:
                    reason = str(e)
                except FetchError:
                    raise
                except _NETWORK_ERRORS as e:
                    reason = f"{type(e).__name__}: {e}"
                else:
                    if done is not None:
                        return done
                    continue  # complete body: the next resume check confirms the size
                failures = 1 if self.progressed else failures + 1
                self._wait_before_retry(failures, reason)
        finally:
            self.bar.close()

    def _on_disk(self) -> int:
        """Bytes in ``part`` (0 when there is none)."""
        return self.part.stat().st_size if self.part.exists() else 0

    def _restart(self, reason: str) -> None:
        """Drop ``part`` and start over from zero."""
        log.info("%s: restarting from zero (%s)", self.name, reason)
        self.part.unlink(missing_ok=True)
        self.kept = 0
        self.bar.reset(total=self.total)

    def _resume_offset(self) -> int | None:
        """The resume decision: the byte offset to request from, or None when ``part`` is already complete.

        A ``.part`` larger than the known total cannot be a prefix of the file: it is restarted.
        """
        offset = self._on_disk()
        if self.total is not None:
            if offset == self.total:
                return None
            if offset > self.total:
                self._restart(f".part has {offset} bytes, more than the {self.total} expected")
                offset = 0
        return offset

    def _attempt(self, offset: int) -> tuple[int, int | None] | None:
        """One request from ``offset``, its body appended to (or written over) ``part``.

        Returns run()'s result when the download is over, None when the body is complete and the size is
        to be confirmed by the resume check. Raises :class:`_Transient` for a failure worth retrying.
        """
        resp = self._request(offset)
        if resp is None:
            return self.kept, offset  # 416: the .part already holds the whole file
        with resp:
            mode, offset, srv_total = self._accept(resp, offset)
            self._adopt_total(srv_total, offset)
            length = _int_header(resp.headers.get("Content-Length"))
            end = offset + length if length is not None else self.total
            written = self._stream(resp, mode, offset)
            self._check_body_length(written, end)
            if self.total is None:
                return self.kept, None  # no size known anywhere: take what the server sent
        return None

    def _request(self, offset: int) -> http.client.HTTPResponse | None:
        """The HTTP request: a GET of ``url``, with ``Range: bytes=offset-`` when resuming.

        Returns the open response, or None where the server answers ``416`` with ``Content-Range:
        bytes */N`` equal to ``offset`` (the ``.part`` is complete). Another ``416`` restarts from zero;
        5xx, 408 and 429 raise :class:`_Transient`; other HTTP errors raise :class:`FetchError`.
        """
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            resp: http.client.HTTPResponse = urllib.request.urlopen(
                urllib.request.Request(self.url, headers=headers), timeout=self.opts.timeout
            )
            return resp
        except urllib.error.HTTPError as e:
            with e:
                if e.code == 416 and offset:
                    _, _, srv_total = _parse_content_range(e.headers.get("Content-Range"))
                    if srv_total is not None and srv_total == offset:
                        return None
                    self._restart(f"server refused Range bytes={offset}- (416)")
                    raise _Transient("416 on resume") from None
                if e.code >= 500 or e.code in (408, 429):
                    raise _Transient(f"HTTP {e.code} {e.reason}") from None
                raise FetchError(f"{self.url}: HTTP {e.code} {e.reason}") from None

    def _accept(self, resp: http.client.HTTPResponse, offset: int) -> tuple[str, int, int | None]:
        """How to take the answer to a request from ``offset``: (file mode, body offset, server's total).

        ``206`` with the asked-for start is appended; ``206`` with another start restarts (transient);
        ``200`` (the server ignored ``Range``) is written from zero; any other status is a FetchError.
        """
        status = resp.status
        if status == 206 and offset:
            start, _, srv_total = _parse_content_range(resp.headers.get("Content-Range"))
            if start != offset:
                self._restart(
                    f"server answered Range bytes={offset}- with Content-Range {resp.headers.get('Content-Range')!r}"
                )
                raise _Transient("bad Content-Range")
            return "ab", offset, srv_total
        if status == 200 or (status == 206 and not offset):
            if offset:
                self._restart("server ignored the Range header (200)")
            if status == 206:
                _, _, srv_total = _parse_content_range(resp.headers.get("Content-Range"))
            else:
                srv_total = _int_header(resp.headers.get("Content-Length"))
            return "wb", 0, srv_total
        raise FetchError(f"{self.url}: unexpected HTTP status {status}")

    def _adopt_total(self, srv_total: int | None, offset: int) -> None:
        """Take the server's total size (FetchError if it contradicts ``expected_size``)."""
        if srv_total is None:
            return
        if self.expected_size is not None and srv_total != self.expected_size:
            raise FetchError(
                f"{self.name}: size mismatch: server reports {srv_total} bytes, expected {self.expected_size}"
            )
        if self.total != srv_total:
            self.total = srv_total
            self.bar.reset(total=self.total)
            self.bar.update(offset)

    def _stream(self, resp: http.client.HTTPResponse, mode: str, offset: int) -> int:
        """Stream the body into ``part`` (``mode`` "ab" or "wb") with progress; returns the bytes now in it."""
        written = offset
        with open(self.part, mode) as f:
            while True:
                block = resp.read(CHUNK_SIZE)
                if not block:
                    break
                f.write(block)
                written += len(block)
                self.progressed = True
                self.bar.update(len(block))
        return written

    def _check_body_length(self, written: int, end: int | None) -> None:
        """A short body is a dropped connection (transient); an overlong one restarts (transient)."""
        if end is not None and written < end:
            raise _Transient(f"connection closed after {written} of {end} bytes")
        if end is not None and written > end:
            self._restart(f"server sent {written - end} bytes more than announced")
            raise _Transient("overlong body")

    def _wait_before_retry(self, failures: int, reason: str) -> None:
        """Sleep the backoff before the next attempt, or raise FetchError after ``retries`` failures in a row."""
        if failures > self.opts.retries:
            raise FetchError(
                f"{self.name}: download failed after {self.opts.retries} retries ({reason}); "
                f"partial data kept in {self.part}, run again to resume"
            )
        delay = min(RETRY_BACKOFF_S * 2 ** max(failures - 1, 0), 30.0)
        log.warning("%s: %s; retrying in %.1f s", self.name, reason, delay)
        if delay > 0:
            time.sleep(delay)


# --------------------------------------------------------------------------- extraction


def _check_member(member: tarfile.TarInfo, dest: Path) -> None:
    name = member.name
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise FetchError(f"refusing tar member with absolute path: {name!r}")
    if ".." in p.parts:
        raise FetchError(f"refusing tar member with '..' (path traversal): {name!r}")
    target = (dest / p).resolve()
    if target != dest and dest not in target.parents:
        raise FetchError(f"refusing tar member outside the destination: {name!r}")
    if member.issym() or member.islnk():
        link = PurePosixPath(member.linkname.replace("\\", "/"))
        if link.is_absolute():
            raise FetchError(f"refusing tar link with absolute target: {name!r} -> {member.linkname!r}")
        base = (dest / p).parent if member.issym() else dest
        link_target = (base / link).resolve()
        if link_target != dest and dest not in link_target.parents:
            raise FetchError(f"refusing tar link pointing outside: {name!r} -> {member.linkname!r}")
    elif not (member.isfile() or member.isdir()):
        raise FetchError(f"refusing special tar member (device/fifo): {name!r}")


def safe_extract(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Extract a tar(.gz) into ``dest`` after validating every member.

    Nothing is written if any member is unsafe (absolute path, ``..``, link escaping
    ``dest``, device file); :class:`FetchError` is raised instead.
    """
    dest_path = Path(dest)
    dest_path.mkdir(parents=True, exist_ok=True)
    dest_path = dest_path.resolve()
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                _check_member(m, dest_path)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest_path, members=members, filter="data")
            else:  # Python without extraction filters (< 3.10.12 / 3.11.4)
                tar.extractall(dest_path, members=members)
    except tarfile.TarError as e:
        raise FetchError(f"cannot extract {archive}: {e}") from e
    return dest_path


# --------------------------------------------------------------------------- public entry


def fetch_iu_xray(
    out_dir: str | os.PathLike[str],
    *,
    base_url: str | None = None,
    files: Sequence[str | RemoteFile] | None = None,
    extract: bool = False,
    progress: bool = True,
    retries: int = 3,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> list[FetchResult]:
    """Download (and optionally extract) the IU X-Ray archives into ``out_dir``.

    ``files`` selects archives by name (or passes :class:`RemoteFile` entries); the
    default is all of :data:`IU_XRAY_FILES`. ``base_url`` defaults to
    ``$EDGECAP_IU_XRAY_URL`` or the Open-i collection URL. Raises :class:`FetchError`
    on a failed download or a checksum / size mismatch.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = resolve_base_url(base_url)
    opts = DownloadOptions(retries=retries, timeout=timeout, progress=progress)
    results: list[FetchResult] = []

    for rf in _resolve_files(files):
        final = out / rf.name
        part = out / (rf.name + ".part")
        result = _existing(rf, final, out)
        if result is None:
            result = _fetch_one(rf, base + rf.name, final, part, out, opts)
        if extract:
            dest = out / rf.extract_subdir if rf.extract_subdir else out
            log.info("extracting %s into %s", final, dest)
            result.extracted_to = safe_extract(final, dest)
        results.append(result)
    return results


def _existing(rf: RemoteFile, final: Path, out: Path) -> FetchResult | None:
    """A FetchResult for an already complete, verified file; None if it must be fetched."""
    if not final.is_file():
        return None
    size = final.stat().st_size
    if rf.size is not None and size != rf.size:
        log.warning("%s exists but has %d bytes, expected %d: downloading again", final, size, rf.size)
        return None
    digest = sha256_file(final)
    if rf.sha256 is not None:
        if digest != rf.sha256.lower():
            log.warning(
                "%s exists but its sha256 %s is not the expected %s: downloading again", final, digest, rf.sha256
            )
            return None
        verified: bool | None = True
    else:
        # No official checksum: trust it only if a previous size-checked download recorded it.
        if _read_sums(out / SHA256SUMS_NAME).get(rf.name) != digest:
            return None
        verified = None
    _write_sum(out, rf.name, digest)
    return FetchResult(rf.name, final, size, digest, verified, 0, skipped=True)


def _fetch_one(rf: RemoteFile, url: str, final: Path, part: Path, out: Path, opts: DownloadOptions) -> FetchResult:
    """Download ``rf`` via ``part`` into ``final``, verify it and record its sha256 in SHA256SUMS."""
    if final.is_file() and not part.exists() and rf.sha256 is None:
        # Complete-looking file with nothing to check it against: let the server
        # confirm its size via a Range request (416 or a 0-byte 206) instead of
        # downloading it again.
        os.replace(final, part)
    kept, size, digest = _download_verified(rf, url, part, opts)
    os.replace(part, final)
    _write_sum(out, rf.name, digest)
    verified = True if rf.sha256 is not None else None
    if verified is None:
        log.info("%s: sha256 %s (no published checksum; recorded in %s)", rf.name, digest, out / SHA256SUMS_NAME)
    return FetchResult(rf.name, final, size, digest, verified, kept)


def _download_verified(rf: RemoteFile, url: str, part: Path, opts: DownloadOptions) -> tuple[int, int, str]:
    """The verification: download into ``part`` and check its sha256. Returns (bytes kept, size, sha256).

    A resumed download that fails the check is redone once from zero (the old ``.part`` may have come
    from another file version); a fresh one that fails deletes ``part`` and raises :class:`FetchError`.
    """
    had_part = part.exists()
    kept, size, digest = _download_and_hash(rf, url, part, opts)
    if not _sha256_matches(rf, digest) and had_part and kept:
        part.unlink(missing_ok=True)
        log.warning("%s: resumed download failed sha256 check; downloading from zero", rf.name)
        kept, size, digest = _download_and_hash(rf, url, part, opts)
    if not _sha256_matches(rf, digest):
        part.unlink(missing_ok=True)
        raise FetchError(
            f"{rf.name}: sha256 mismatch: expected {rf.sha256}, got {digest} "
            f"({size} bytes from {url}); the bad file was deleted"
        )
    return kept, size, digest


def _download_and_hash(rf: RemoteFile, url: str, part: Path, opts: DownloadOptions) -> tuple[int, int, str]:
    """Bring ``part`` to the full file and check its size. Returns (bytes kept, size, sha256).

    A size other than the total the download settled on deletes ``part`` and raises :class:`FetchError`.
    """
    kept, total = _Download(url, part, rf.name, rf.size, opts).run()
    size = part.stat().st_size
    if total is not None and size != total:
        part.unlink(missing_ok=True)
        raise FetchError(f"{rf.name}: size mismatch: expected {total} bytes, got {size}")
    return kept, size, sha256_file(part)


def _sha256_matches(rf: RemoteFile, digest: str) -> bool:
    """Whether ``digest`` is the archive's published sha256 (True where none is published)."""
    return rf.sha256 is None or digest == rf.sha256.lower()
