"""A bounded load test of `edgecap serve` on loopback: throughput, latency, errors and server memory.

    python scripts/load_test.py --bundle bundles/int8                      # starts its own server
    python scripts/load_test.py --bundle bundles/int8 --requests 1000 --concurrency 16 --workers 2
    python scripts/load_test.py --url http://127.0.0.1:8000 --pid 12345    # an already running server

Without --url it starts `python -m edgecap.cli serve` on 127.0.0.1 and a free port, waits for /v1/health,
sends --warmup requests (not measured), reads the server's RSS, sends --requests POST /v1/reports from
--concurrency client threads (each its own keep-alive connection), reads the RSS again (and its peak,
sampled every 0.2 s), prints one table and stops the server. It never talks to a non-loopback address.

Exit status: 0 no errors; 1 some request failed (non-200 or a transport error); 2 bad usage.
Needs httpx (the `dev` extra). The server's memory is read from /proc (Linux) or psutil.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit


def rss_mb(pid: int | None) -> float | None:
    """Resident set size of a process in MiB (None when unknown)."""
    if pid is None:
        return None
    status = Path(f"/proc/{pid}/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20
    except Exception:  # psutil missing, or the process is gone
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_loopback_url(url: str) -> bool:
    from edgecap.serve.settings import is_loopback

    parts = urlsplit(url)
    return parts.scheme == "http" and parts.hostname is not None and is_loopback(parts.hostname)


def start_server(args, port: int, log_file) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "edgecap.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(args.workers),
        "--queue-size",
        str(args.queue_size),
        "--log-level",
        "warning",
    ]
    if args.bundle:
        cmd += ["--bundle", str(args.bundle)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    return subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)


def wait_healthy(client, url: str, proc: subprocess.Popen | None, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"error: the server exited with status {proc.returncode} before it was ready")
        try:
            r = client.get(f"{url}/v1/health", timeout=2)
            if r.status_code == 200:
                return r.json()
        except Exception:  # not listening yet
            pass
        time.sleep(0.2)
    raise SystemExit(f"error: {url} did not become healthy within {timeout:g} s")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * len(s) + 0.5)) - 1))]


def run_load(url: str, image: bytes, n: int, concurrency: int, beam: int, headers: dict, timeout: float):
    """n POST /v1/reports from `concurrency` threads -> (latencies ms of 200s, Counter of outcomes, wall s)."""
    import httpx

    latencies: list[float] = []
    outcomes: Counter = Counter()
    lock = threading.Lock()
    todo = iter(range(n))

    def worker() -> None:
        with httpx.Client(headers=headers, timeout=timeout) as client:
            while True:
                with lock:
                    if next(todo, None) is None:
                        return
                t0 = time.perf_counter()
                try:
                    r = client.post(
                        f"{url}/v1/reports",
                        files={"frontal": ("image.png", image, "image/png")},
                        data={"beam": str(beam)},
                    )
                    outcome = str(r.status_code)
                except httpx.HTTPError as e:
                    outcome = type(e).__name__
                ms = (time.perf_counter() - t0) * 1e3
                with lock:
                    outcomes[outcome] += 1
                    if outcome == "200":
                        latencies.append(ms)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, outcomes, time.perf_counter() - t0


class PeakRss:
    """Samples a process's RSS every `every` seconds in a thread; .peak is the largest seen."""

    def __init__(self, pid: int | None, every: float = 0.2):
        self.pid, self.every, self.peak = pid, every, rss_mb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            v = rss_mb(self.pid)
            if v is not None and (self.peak is None or v > self.peak):
                self.peak = v

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--url", help="A running server on loopback (default: start one).")
    p.add_argument("--pid", type=int, help="With --url: the server's process id, for its memory.")
    p.add_argument("--bundle", type=Path, help="Bundle for the started server (default: edgecap's default bundle).")
    p.add_argument("--workers", type=int, default=2, help="Started server: inference threads (default 2).")
    p.add_argument("--threads", type=int, help="Started server: interpreter threads per worker.")
    p.add_argument("--queue-size", type=int, default=16, help="Started server: queue size (default 16).")
    p.add_argument("--requests", type=int, default=300, help="Measured requests (default 300).")
    p.add_argument("--concurrency", type=int, default=8, help="Client threads (default 8).")
    p.add_argument("--warmup", type=int, default=10, help="Unmeasured requests first (default 10).")
    p.add_argument("--beam", type=int, default=3, help="Beam size sent (default 3).")
    p.add_argument("--image", type=Path, help="Image to send (default: the bundled IU X-Ray sample).")
    p.add_argument("--api-key-file", type=Path, help="API key, for a --url server that needs one.")
    p.add_argument("--timeout", type=float, default=120.0, help="Client timeout per request, seconds.")
    p.add_argument("--json", type=Path, help="Also write the figures as JSON.")
    args = p.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1 or args.warmup < 0:
        p.error("--requests and --concurrency must be >= 1, --warmup >= 0")
    if args.url and not is_loopback_url(args.url):
        p.error(f"--url must be http:// on a loopback address (127.0.0.1, ::1, localhost): {args.url}")

    import httpx

    from edgecap.resources import sample_image

    image_path = args.image or sample_image()
    image = Path(image_path).read_bytes()
    headers = {"X-API-Key": args.api_key_file.read_text().strip()} if args.api_key_file else {}
    proc, pid, url = None, args.pid, (args.url or "").rstrip("/")
    log = tempfile.NamedTemporaryFile("w+", prefix="edgecap-serve-", suffix=".log", delete=False)
    try:
        if not url:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            proc = start_server(args, port, log)
            pid = proc.pid
        with httpx.Client(headers=headers) as client:
            health = wait_healthy(client, url, proc)
        warm_lat, warm_out, _ = (
            run_load(
                url, image, args.warmup, min(args.concurrency, max(1, args.warmup)), args.beam, headers, args.timeout
            )
            if args.warmup
            else ([], Counter(), 0)
        )
        rss_before = rss_mb(pid)
        with PeakRss(pid) as peak:
            latencies, outcomes, wall = run_load(
                url, image, args.requests, args.concurrency, args.beam, headers, args.timeout
            )
        rss_after = rss_mb(pid)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()

    errors = sum(v for k, v in outcomes.items() if k != "200")
    figures = {
        "url": url,
        "image": str(image_path),
        "image_bytes": len(image),
        "bundle": health.get("bundle"),
        "workers": health.get("queue", {}).get("workers"),
        "requests": args.requests,
        "concurrency": args.concurrency,
        "beam": args.beam,
        "ok": outcomes.get("200", 0),
        "errors": errors,
        "outcomes": dict(outcomes),
        "wall_s": round(wall, 3),
        "throughput_rps": round(args.requests / wall, 2),
        "latency_ms": {
            k: round(v, 1)
            for k, v in (
                ("p50", percentile(latencies, 50)),
                ("p95", percentile(latencies, 95)),
                ("p99", percentile(latencies, 99)),
                ("max", max(latencies)),
                ("mean", statistics.fmean(latencies)),
            )
        }
        if latencies
        else None,
        "rss_mb": {
            "before": _r(rss_before),
            "after": _r(rss_after),
            "peak": _r(peak.peak),
            "growth": _r(rss_after - rss_before) if rss_before is not None and rss_after is not None else None,
        },
        "server_log": log.name if proc is not None else None,
    }
    _print(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 1 if errors else 0


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def _print(f: dict) -> None:
    lat, rss = f["latency_ms"] or {}, f["rss_mb"]
    rows = [
        (
            "server",
            f"{f['url']} ({f['workers']} worker(s), bundle {(f['bundle'] or {}).get('mode')}, "
            f"{(f['bundle'] or {}).get('interpreter')})",
        ),
        (
            "load",
            f"{f['requests']} requests, {f['concurrency']} concurrent, beam {f['beam']}, "
            f"{f['image_bytes']:,}-byte image",
        ),
        ("wall time", f"{f['wall_s']:.2f} s"),
        ("throughput", f"{f['throughput_rps']:.1f} reports/s"),
        ("latency p50 / p95", f"{lat.get('p50', 'n/a')} / {lat.get('p95', 'n/a')} ms"),
        ("latency p99 / max", f"{lat.get('p99', 'n/a')} / {lat.get('max', 'n/a')} ms"),
        ("errors", f"{f['errors']} " + (f"({f['outcomes']})" if f["errors"] else "")),
        (
            "server RSS before / after",
            f"{rss['before']} / {rss['after']} MiB (peak {rss['peak']}, growth {rss['growth']})",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    if f["server_log"]:
        print(f"{'server log':<{width}}  {f['server_log']}")


if __name__ == "__main__":
    sys.exit(main())
