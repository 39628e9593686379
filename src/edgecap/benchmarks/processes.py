"""The bench's child processes: every figure of `edgecap bench` is measured in a fresh Python.

    r = run_task({"kind": "model", ...}, timeout=1800, tf_free=True)   # benchmarks.worker -> its JSON dict
    rs = run_interleaved([(task, tf_free), ...], timeout=1800)          # the same, taking turns block by block
    r = caption_process(bundle, image, runs=3)                          # a real `edgecap caption` process

A crash of LiteRT on one variant (a segfault in a kernel) or a timeout is that task's {"status": "failed",
"error"}: the other rows are still measured. A LiteRT child gets a `tensorflow` package that refuses to import
first on its PYTHONPATH, so the runtime path is proven TensorFlow-free (it fails, never silently falls back).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgecap.benchmarks.variants import cache_root

_BLOCK_TF = """raise ImportError("blocked by edgecap bench: the runtime must not need TensorFlow")\n"""


def _tf_blocker() -> Path:
    """A folder holding a `tensorflow` package that raises ImportError (written once into the bench cache)."""
    d = cache_root() / "block-tensorflow" / "tensorflow"
    d.mkdir(parents=True, exist_ok=True)
    (d / "__init__.py").write_text(_BLOCK_TF)
    return d.parent


def child_env(tf_free: bool) -> dict:
    """This process's environment for a child: quiet TensorFlow logs, unbuffered output, and with `tf_free`
    the TensorFlow blocker first on PYTHONPATH."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    if tf_free:
        env["PYTHONPATH"] = os.pathsep.join([str(_tf_blocker())] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def run_task(task: dict, timeout: float, tf_free: bool) -> dict:
    """Run one benchmarks.worker task in a fresh Python; a crash or timeout becomes {"status": "failed"}."""
    with tempfile.TemporaryDirectory(prefix="edgecap-bench-") as d:
        tp, op = Path(d) / "task.json", Path(d) / "out.json"
        tp.write_text(json.dumps(task))
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "edgecap.benchmarks.worker", str(tp), str(op)],
                env=child_env(tf_free),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return {"status": "failed", "error": f"timed out after {timeout:.0f} s"}
        if not op.is_file():
            tail = (proc.stderr or "").strip().splitlines()[-3:]
            return {"status": "failed", "error": f"worker process died (exit {proc.returncode}): {' | '.join(tail)}"}
        return json.loads(op.read_text())


def run_interleaved(tasks: list[tuple[dict, bool]], timeout: float) -> list[dict]:
    """Run benchmarks.worker tasks (task, tf_free) in processes alive together that take turns: each waits at
    the gates of its task (worker.Gate: before its set-up and first reports, before each measured report,
    before the decode split) and the parent lets exactly one process run one block at a time, round-robin,
    starting each round one process further on. So the variants' reports interleave input by input: a
    machine that speeds up or slows down during the bench moves every variant alike, and their ratios carry
    no drift. A process that crashes, or whose block outlasts `timeout`, is that task's failure; the others
    go on. -> one result per task, in order (run_task's form)."""
    with tempfile.TemporaryDirectory(prefix="edgecap-bench-") as d:
        turns = [_Turn.start(k, task, tf_free, Path(d)) for k, (task, tf_free) in enumerate(tasks)]
        live = [t for t in turns if t.arrive(timeout)]  # imports done, at the first gate (not measured)
        rounds = 0
        while live:
            first = rounds % len(live)
            for t in live[first:] + live[:first]:
                t.go()
                t.arrive(timeout)  # its block is over: at its next gate, or finished
            live = [t for t in live if t.open]
            rounds += 1
        return [t.result() for t in turns]


class _Turn:
    """One interleaved worker process and its two gate pipes (parent -> child "g", child -> parent "r")."""

    def __init__(self, proc: subprocess.Popen, go_w: int, ready_r: int, out: Path, err: Path):
        self.proc, self.go_w, self.ready_r, self.out, self.err = proc, go_w, ready_r, out, err
        self.open, self.problem = True, ""

    @classmethod
    def start(cls, k: int, task: dict, tf_free: bool, d: Path) -> _Turn:
        tp, out, err = d / f"task{k}.json", d / f"out{k}.json", d / f"err{k}.txt"
        tp.write_text(json.dumps(task))
        go_r, go_w = os.pipe()
        ready_r, ready_w = os.pipe()
        env = {**child_env(tf_free), "EDGECAP_BENCH_GATE": f"{go_r},{ready_w}"}
        with open(err, "w") as ef:
            proc = subprocess.Popen(
                [sys.executable, "-m", "edgecap.benchmarks.worker", str(tp), str(out)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=ef,
                pass_fds=(go_r, ready_w),
            )
        os.close(go_r)
        os.close(ready_w)
        return cls(proc, go_w, ready_r, out, err)

    def arrive(self, timeout: float) -> bool:
        """Wait until the process is at a gate (True) or has ended (False: the pipe closed, or `timeout`)."""
        if not self.open:  # go() found the process gone
            return False
        ready, _, _ = select.select([self.ready_r], [], [], timeout)
        if ready and os.read(self.ready_r, 1) == b"r":
            return True
        if not ready:
            self.problem = f"timed out after {timeout:.0f} s"
            self.proc.kill()
        self.close()
        return False

    def go(self) -> None:
        try:
            os.write(self.go_w, b"g")
        except BrokenPipeError:
            self.close()

    def close(self) -> None:
        if self.open:
            self.open = False
            os.close(self.go_w)
            os.close(self.ready_r)
            self.proc.wait()

    def result(self) -> dict:
        self.close()
        if self.problem:
            return {"status": "failed", "error": self.problem}
        if not self.out.is_file():
            tail = self.err.read_text(errors="replace").strip().splitlines()[-3:]
            died = f"worker process died (exit {self.proc.returncode}): {' | '.join(tail)}"
            return {"status": "failed", "error": died}
        return json.loads(self.out.read_text())


# Runs `edgecap caption ...` (edgecap.cli as __main__) and, at exit, writes the process's own peak RSS (VmHWM)
# to $EDGECAP_BENCH_HWM: ru_maxrss from wait4 would include the bench's memory (Linux carries the parent's
# peak across fork + exec).
_CAPTION_WRAPPER = (
    "import atexit, os, runpy, sys\n"
    "def _hwm():\n"
    "    with open('/proc/self/status') as f, open(os.environ['EDGECAP_BENCH_HWM'], 'w') as out:\n"
    "        out.write(next(l.split()[1] for l in f if l.startswith('VmHWM:')))\n"
    "atexit.register(_hwm)\n"
    "sys.argv = ['edgecap'] + sys.argv[1:]\n"
    "runpy.run_module('edgecap.cli', run_name='__main__')\n"
)


# The floor under `edgecap caption`'s cold start: a Python that imports the third-party stack that command loads
# (numpy, OpenCV, pydantic, the TFLite interpreter) and runs a one-option Typer command (Typer coerces each
# option's value with pydantic, whose adapters it imports then), with cyclic GC off while it loads, as edgecap's
# program has (edgecap.cli). Timed like the caption, turn about with it.
_FLOOR_PROGRAM = (
    "import gc\n"
    "gc.disable()\n"
    "import importlib.util, cv2, numpy, pydantic, typer\n"
    "for name in ('ai_edge_litert.interpreter', 'tflite_runtime.interpreter'):  # runtime.interpreter's order\n"
    "    if importlib.util.find_spec(name.split('.')[0]):\n"
    "        importlib.import_module(name)\n"
    "        break\n"
    "gc.freeze()\n"
    "gc.enable()\n"
    "app = typer.Typer(add_completion=False)\n"
    "@app.command()\n"
    "def main(beam: int = 1) -> None:\n"
    "    print(beam)\n"
    "app(['--beam', '3'], standalone_mode=False)\n"
)
FLOOR_WHAT = (
    "a Python that imports numpy, OpenCV, pydantic, Typer and the TFLite interpreter and runs a one-option Typer "
    "command: what any Typer CLI on this stack pays before its own code"
)


def caption_process(bundle: str, image: str, runs: int, timeout: float = 300.0) -> dict:
    """A TensorFlow-free `edgecap caption IMAGE --bundle B` (one report, beam 3) from process start to exit:
    cold start (wall time) and the process's peak RSS. TensorFlow is made unimportable in it (child_env).

    Each timed process starts as `edgecap` does on a machine that has run it before: Python's bytecode
    compiled (a wheel install compiles it; an editable one writes it on the first run) and the files in the
    page cache. So a first, untimed run writes the bytecode to a private folder (PYTHONPYCACHEPREFIX, nothing
    written beside the sources), even where PYTHONDONTWRITEBYTECODE is set: recompiling edgecap's ~40
    modules on every start would add ~60 ms that no installed edgecap pays. Before each timed caption, the
    floor (_FLOOR_PROGRAM) is timed the same way: cold start minus floor is edgecap's own share."""
    import numpy as np

    cold, floor, peak, errors = [], [], [], []
    args = ["caption", image, "--bundle", bundle, "--format", "json", "--no-attention", "--no-progress"]
    with tempfile.TemporaryDirectory(prefix="edgecap-bench-") as d:
        hwm = Path(d) / "hwm"
        env = {**child_env(tf_free=True), "EDGECAP_BENCH_HWM": str(hwm), "PYTHONPYCACHEPREFIX": str(Path(d) / "pyc")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        for i in range(runs + 1):
            if i:
                floor += _timed_floor(env, timeout)
            hwm.unlink(missing_ok=True)
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(
                    [sys.executable, "-c", _CAPTION_WRAPPER, *args],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                errors.append(f"timed out after {timeout:.0f} s")
                continue
            wall = (time.perf_counter() - t0) * 1e3
            if proc.returncode != 0:
                errors.append(f"exit {proc.returncode}: {' '.join(proc.stderr.strip().splitlines()[-1:])}")
                continue
            if not proc.stdout.strip():
                errors.append("no report written")
                continue
            if i == 0:
                continue  # the untimed run: bytecode written, files read once
            cold.append(wall)
            if hwm.is_file():
                peak.append(int(hwm.read_text()) / 1024)
    if not cold:
        return {"status": "failed", "error": "; ".join(errors) or "no run"}
    return {
        "status": "ok",
        "runs": len(cold),
        "cold_start_ms": {"p50_ms": float(np.median(cold)), "min_ms": float(min(cold)), "max_ms": float(max(cold))},
        "floor_ms": {"p50_ms": float(np.median(floor)), "what": FLOOR_WHAT} if floor else None,
        "peak_rss_mb": float(max(peak)) if peak else None,
        "tensorflow_blocked": True,
        "bytecode": "cached by an untimed first run",
        "command": "edgecap " + " ".join(args),
    }


def _timed_floor(env: dict, timeout: float) -> list[float]:
    """One run of the floor program, ms (empty when it fails: the floor is a reference, not a figure to gate)."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _FLOOR_PROGRAM], env=env, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return []
    return [(time.perf_counter() - t0) * 1e3] if proc.returncode == 0 else []
