"""What `edgecap serve` runs with: one typed, frozen record, built by the CLI (or a test) and read by the app.

    settings = Settings(bundle=Path("bundles/int8"), api_key=read_api_key(Path("key.txt")), host="0.0.0.0")
    check_bind(settings)        # SettingsError: a non-loopback bind needs an API key

Nothing here is a module global: `create_app(settings)` takes everything it needs from this record.
Device-safe (stdlib, and runtime.image_header for the pixel limit it shares with the CLI).
"""

from __future__ import annotations

import ipaddress
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from edgecap.runtime.image_header import DEFAULT_MAX_PIXELS

MIN_KEY_CHARS = 16  # a shorter key is guessable; `openssl rand -hex 32` gives 64


class SettingsError(ValueError):
    """Settings the server must not start with (a usage error: exit status 2)."""


@dataclass(frozen=True)
class Settings:
    bundle: Path | None = None  # bundle folder; None: the default bundle shipped with edgecap
    host: str = "127.0.0.1"  # bind address; anything but loopback needs api_key
    port: int = 8000
    api_key: str | None = None  # when set, every route but /v1/health, /openapi.json and /docs needs it
    workers: int = 1  # inference threads, each with its own Captioner (a TFLite interpreter is not thread-safe)
    threads: int | None = None  # interpreter threads per worker (None: the interpreter's default)
    queue_size: int = 16  # requests that may wait for a worker; beyond workers + queue_size: 503 + Retry-After
    timeout_s: float = 30.0  # per request, from its head to its answer: 504 (408 while the upload lasts)
    max_request_bytes: int = 20 * 1024 * 1024  # whole request body (multipart framing included): 413
    max_pixels: int = DEFAULT_MAX_PIXELS  # per image, read from its header before decoding: 413 (the runtime's
    # limit, runtime.image_header, which says how it was sized)
    retry_after_s: int = 2  # Retry-After of a 503 (queue full, or too many requests in progress)
    header_timeout_s: float = 10.0  # a connection's request head (line + headers) must be complete within this
    # of its opening or of its previous answer: else closed (408 if it had started one); serve.connections
    keep_alive_s: float = 5.0  # an idle kept-alive connection is closed after this
    min_upload_bytes_s: float = 4096.0  # a body slower than this over any upload_window_s is cut: 408
    upload_window_s: float = 5.0
    extra_requests: int = 64  # requests in progress (head arrived, not yet answered) beyond capacity before a
    # 503: uploads still arriving, answers being written. /v1/health is never refused; idle connections
    # are not requests and do not count
    log_level: str = "info"

    def __post_init__(self) -> None:
        problems = []
        if not 0 <= self.port <= 65535:
            problems.append(f"port {self.port} is outside 0..65535")
        for name in ("workers", "max_request_bytes", "max_pixels", "retry_after_s"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("queue_size", "extra_requests", "min_upload_bytes_s"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.threads is not None and self.threads < 1:
            problems.append(f"threads must be at least 1, got {self.threads}")
        for name in ("timeout_s", "header_timeout_s", "keep_alive_s", "upload_window_s"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        if problems:
            raise SettingsError("; ".join(problems))

    @property
    def capacity(self) -> int:
        """Requests admitted at once: running + waiting."""
        return self.workers + self.queue_size

    @property
    def max_open_requests(self) -> int:
        """Requests in progress at once (the queue's capacity + extra_requests): beyond it a 503."""
        return self.capacity + self.extra_requests


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost"; any other name counts as reachable from outside."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings) -> None:
    """Refuse to serve patient data beyond this machine without an API key."""
    if not is_loopback(settings.host) and not settings.api_key:
        raise SettingsError(
            f"refusing to listen on {settings.host!r} without an API key: a non-loopback address "
            f"is reachable from other machines. Pass --api-key-file FILE (e.g. made with "
            f"`openssl rand -hex 32 > FILE`), or keep the default --host 127.0.0.1"
        )


def read_api_key(path: Path) -> tuple[str, list[str]]:
    """Key file -> (key, warnings). The key is the file's content without surrounding whitespace.

    Raises:
        SettingsError: unreadable file, empty key, whitespace inside it, or shorter than MIN_KEY_CHARS.
    """
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SettingsError(f"{path}: cannot read the API key file ({e})") from None
    key = raw.strip()
    if not key:
        raise SettingsError(f"{path}: the API key file is empty")
    if any(c.isspace() for c in key):
        raise SettingsError(f"{path}: the API key file must hold one key on one line (it has whitespace inside)")
    if not key.isascii() or not key.isprintable():
        raise SettingsError(f"{path}: the API key must be printable ASCII (it travels in an HTTP header)")
    if len(key) < MIN_KEY_CHARS:
        raise SettingsError(
            f"{path}: the API key has {len(key)} characters, at least {MIN_KEY_CHARS} are needed "
            f"(e.g. `openssl rand -hex 32 > {path}`)"
        )
    warnings = []
    if os.name == "posix" and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        warnings.append(f"{path}: the API key file is readable by other users (chmod 600 {path})")
    return key, warnings
