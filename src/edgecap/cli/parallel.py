"""`edgecap caption --jobs N`: a large archive captioned by N processes, each with its own Captioner.

    with PoolCaptioner(captioner, jobs=4, todo=[(frontal, lateral), ...], load=dict(path=..., ...)) as pool:
        summary = run_batch(pool, paths, sink)      # cli.batch, unchanged: records in input order
    take_shard(items, "1/4")                        # --shard: the items of the second of 4 machines

An interpreter is one process's: LiteRT runs one call at a time per interpreter, and Python's decode loop
holds the GIL, so threads do not scale a batch; processes do. The pool starts N worker processes (spawn: a
fresh interpreter each, no state copied from the parent, TensorFlow-free like the runtime), each loading the
bundle once (Captioner.from_bundle with the parent's arguments). The studies still to caption are known before
the batch (the ones without a record in --out), in the order run_batch will ask for them: they are submitted
ahead, at most `ahead` per process in flight, so memory stays bounded on an archive of any size, and
run_batch's caption(frontal, lateral, beam) waits for that study's result. Records are therefore written in
input order, each as soon as it and every earlier one are done, with cli.batch's resume, errors and exit
status as with one process.

A worker returns the Report, or the exception the Captioner raised (ImageError, CaptionError, OSError...:
all of them picklable), which the parent raises again, so run_batch records a corrupt image exactly as with
--jobs 1. A study asked for out of the submitted order is captioned too (submitted on demand).

Ctrl-C: the workers ignore SIGINT (a terminal sends it to the whole process group); the parent's wait raises
KeyboardInterrupt, the command keeps what was written and exits 130, and leaving the `with` terminates the
workers at once.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections import deque
from pathlib import Path
from typing import Any, Optional, Sequence

Study = tuple[Path, Optional[Path]]  # (frontal, lateral or None)

_worker_captioner: Any = None  # the Captioner of a worker process (set by _init_worker)


def _init_worker(load: dict) -> None:
    """Worker start-up: ignore Ctrl-C (the parent handles it) and load this process's Captioner."""
    global _worker_captioner
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from edgecap.cli.common import quiet_opencv
    from edgecap.runtime.captioner import Captioner

    quiet_opencv()

    _worker_captioner = Captioner.from_bundle(**load)


def _caption_in_worker(frontal: Path, lateral: Optional[Path], beam: int) -> tuple[bool, Any]:
    """-> (True, Report) or (False, the exception): an exception travels back as a value, so the worker
    stays up and the parent raises it where run_batch expects it."""
    try:
        return True, _worker_captioner.caption(frontal, lateral=lateral, beam=beam)
    except Exception as e:  # every failure is the parent's to record
        return False, e


def todo_studies(paths: Sequence, done: dict, lateral: Optional[Path], retry_errors: bool) -> list[Study]:
    """The (frontal, lateral) of every item of paths (an image, or a cli.study_inputs.StudyInput) that
    run_batch will caption, in its order: the ones without a record in the output (cli.batch.is_done)."""
    from edgecap.cli.batch import is_done, item_key
    from edgecap.cli.study_inputs import StudyInput

    return [
        (item.frontal, item.lateral) if isinstance(item, StudyInput) else (item, lateral)
        for item in paths
        if not is_done(done, item_key(item, lateral), retry_errors)
    ]


def take_shard(items: Sequence, shard: str) -> list:
    """--shard I/N: items I, I+N, I+2N... (0 <= I < N), so N machines given the same inputs share them out
    evenly and each item lands on exactly one. ValueError (one line) for a malformed shard or an empty one."""
    try:
        i, n = (int(x) for x in shard.split("/"))
    except ValueError:
        raise ValueError(f"--shard {shard!r}: expected I/N, e.g. 0/4 for the first of 4 machines") from None
    if not 0 <= i < n:
        raise ValueError(f"--shard {shard}: I must be 0 to N-1 (0/{n} ... {max(n - 1, 0)}/{n})")
    mine = list(items[i::n])
    if not mine:
        raise ValueError(f"--shard {shard}: no input in this shard ({len(items)} inputs in all)")
    return mine


def _unwrap(outcome: tuple[bool, Any]):
    ok, value = outcome
    if ok:
        return value
    raise value


class PoolCaptioner:
    """A Captioner stand-in for run_batch: caption() returns what one of `jobs` worker processes computed.

    captioner: the parent's own Captioner (already loaded, so a bad bundle failed before any worker started;
    its bundle_info and attributes are this object's). todo: the studies run_batch will ask for, in order.
    load: Captioner.from_bundle keyword arguments for the workers (path, num_threads, max_pixels).
    beam: submitted with each study ahead of time; a caption() call with another beam is computed on demand.
    """

    def __init__(
        self, captioner, jobs: int, todo: Sequence[Study], load: dict, beam: int, ahead: int = 4, method: str = "spawn"
    ):
        self._captioner, self.jobs, self.beam = captioner, jobs, beam
        self._todo: deque[Study] = deque(todo)
        self._window = max(1, ahead) * jobs
        self._pending: dict[Study, deque] = {}
        self._in_flight = 0
        self._pool = multiprocessing.get_context(method).Pool(jobs, initializer=_init_worker, initargs=(load,))

    def __getattr__(self, name: str):  # bundle_info, bundle...: the parent's Captioner
        return getattr(self._captioner, name)

    def _submit(self, study: Study, beam: int) -> None:
        result = self._pool.apply_async(_caption_in_worker, (study[0], study[1], beam))
        self._pending.setdefault(study, deque()).append(result)
        self._in_flight += 1

    def _top_up(self) -> None:
        while self._todo and self._in_flight < self._window:
            self._submit(self._todo.popleft(), self.beam)

    def caption(self, frontal: Path, lateral: Optional[Path] = None, beam: Optional[int] = None):
        """The report of (frontal, lateral), as Captioner.caption returns it or raises."""
        beam = self.beam if beam is None else beam
        if beam != self.beam:  # not what was submitted ahead: computed now
            return _unwrap(self._pool.apply_async(_caption_in_worker, (frontal, lateral, beam)).get())
        study = (frontal, lateral)
        self._top_up()
        if not self._pending.get(study):
            self._submit(study, beam)  # asked for out of the submitted order: computed now
        queue = self._pending[study]
        result = queue.popleft()
        if not queue:
            del self._pending[study]
        self._in_flight -= 1
        self._top_up()
        return _unwrap(result.get())

    def close(self) -> None:
        """Stop the workers now (results not collected are dropped: a re-run resumes them)."""
        self._pool.terminate()
        self._pool.join()

    def __enter__(self) -> "PoolCaptioner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
