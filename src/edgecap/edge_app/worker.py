"""Inference off the UI thread. Device-safe: no Kivy here; the app wraps the callbacks with @mainthread.

    worker = CaptionWorker(on_done=mainthread(app.on_job_done))
    job = worker.submit(frontal, lateral, bundle, threads=2, beam=3)
    worker.cancel(job)          # cooperative, see below
    load_preview(path, "frontal", on_done=mainthread(app.on_preview))

One daemon thread owns the Captioner (a Captioner is not thread-safe: one interpreter per bundle), loads it
on first use and again when the bundle or the thread count changes, and runs jobs one at a time in
submission order. `on_done(JobResult)` is called on that worker thread.

Cancelling is cooperative. A TFLite `invoke()` cannot be interrupted, so a cancelled job that has already
started runs to its end on the worker thread and its result is discarded (`JobResult.cancelled`); a job
cancelled while still queued never runs. The UI is free again at once either way; a new job waits behind
the cancelled one (at most one report's time: about a second on a Raspberry Pi class CPU).
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edgecap.edge_app import heatmap
from edgecap.edge_app.messages import Message, error_message


@dataclass
class Job:
    id: int
    frontal: str
    lateral: str | None
    bundle: str | None  # bundle folder; None: the default bundle
    threads: int
    beam: int
    cancelled: bool = False  # set by CaptionWorker.cancel (any thread); read by the worker


@dataclass
class JobResult:
    job: Job
    report: object | None = None  # runtime.report.Report
    error: Message | None = None
    display: dict[str, np.ndarray] = field(default_factory=dict)  # view -> uint8 (h, w, 3) plain image
    overlays: dict[str, np.ndarray] = field(default_factory=dict)  # view -> uint8 (h, w, 3) with heatmap
    pngs: dict[str, bytes] = field(default_factory=dict)  # view -> PNG of `display` (history)
    thumbnail: bytes = b""  # PNG (history list)
    seconds: float = 0.0  # wall time on the worker, bundle loading included
    load_seconds: float = 0.0  # of which loading the bundle

    @property
    def cancelled(self) -> bool:
        return self.job.cancelled


class CaptionWorker:
    def __init__(self, on_done: Callable[[JobResult], None], captioner_factory: Callable | None = None):
        """captioner_factory(bundle_path, num_threads) -> Captioner; default runtime Captioner.from_bundle."""
        self.on_done = on_done
        self._factory = captioner_factory or _default_factory
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._ids = itertools.count(1)
        self._captioner = None
        self._key: tuple | None = None
        self._thread = threading.Thread(target=self._loop, name="edgecap-worker", daemon=True)
        self._thread.start()

    def submit(self, frontal: str, lateral: str | None, bundle: str | None, threads: int, beam: int) -> Job:
        job = Job(next(self._ids), str(frontal), None if not lateral else str(lateral), bundle, threads, beam)
        self._queue.put(job)
        return job

    def preload(self, bundle: str | None, threads: int) -> Job:
        """Load the bundle now (a job without images, its result is not reported), so the first report is fast."""
        job = Job(0, "", None, bundle, threads, 1, cancelled=True)
        self._queue.put(job)
        return job

    @staticmethod
    def cancel(job: Job) -> None:
        job.cancelled = True

    def shutdown(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    # ---- worker thread -------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if job.id == 0:  # preload
                try:
                    self._ensure(job)
                except Exception:  # reported when a real job needs the bundle
                    pass
                continue
            if job.cancelled:
                continue
            try:
                result = self._run(job)
            except BaseException as e:  # never let the thread die: the UI waits for an answer
                traceback.print_exc()
                result = JobResult(job, error=error_message(e))
            self.on_done(result)

    def _ensure(self, job: Job) -> float:
        key = (job.bundle, job.threads)
        if self._captioner is not None and self._key == key:
            return 0.0
        t0 = time.perf_counter()
        self._captioner, self._key = None, None
        self._captioner = self._factory(job.bundle, job.threads)
        self._key = key
        return time.perf_counter() - t0

    def _run(self, job: Job) -> JobResult:
        from edgecap.runtime.preprocess import read_image

        t0 = time.perf_counter()
        try:
            load_s = self._ensure(job)
            report = self._captioner.caption(job.frontal, lateral=job.lateral, beam=job.beam)
        except Exception as e:
            return JobResult(job, error=error_message(e), seconds=time.perf_counter() - t0)
        result = JobResult(job, report=report, load_seconds=load_s)
        if job.cancelled:  # nobody will look at the pictures
            result.seconds = time.perf_counter() - t0
            return result
        maps = heatmap.view_maps(report.attention, report.attention_layout)
        for view, path in (("frontal", job.frontal), ("lateral", job.lateral)):
            if path is None:
                continue
            try:  # the second read of the file (the captioner read it too): a few ms, keeps runtime untouched
                rgb = heatmap.display_rgb(read_image(path))
            except Exception as e:
                return JobResult(job, error=error_message(e), seconds=time.perf_counter() - t0)
            result.display[view] = rgb
            result.pngs[view] = heatmap.encode_png(rgb)
            if view in maps and not report.flagged:
                result.overlays[view] = heatmap.overlay(rgb, maps[view])
        result.thumbnail = heatmap.encode_png(heatmap.thumbnail(result.display["frontal"]))
        result.seconds = time.perf_counter() - t0
        return result


def _default_factory(bundle: str | None, threads: int):
    from edgecap.runtime.captioner import Captioner

    return Captioner.from_bundle(bundle, num_threads=threads)


@dataclass
class Preview:
    path: str
    view: str
    rgb: np.ndarray | None = None  # uint8 (h, w, 3) display image
    error: Message | None = None
    size: tuple[int, int] = (0, 0)  # original (width, height)


def load_preview(path: str | Path, view: str, on_done: Callable[[Preview], None]) -> threading.Thread:
    """Decode an image for display on a short-lived thread (a large DICOM or 16-bit PNG takes 100+ ms)."""

    def work():
        from edgecap.runtime.preprocess import read_image

        try:
            image = read_image(str(path))
            p = Preview(str(path), view, heatmap.display_rgb(image), size=(image.shape[1], image.shape[0]))
        except Exception as e:
            p = Preview(str(path), view, error=error_message(e))
        on_done(p)

    t = threading.Thread(target=work, name=f"edgecap-preview-{view}", daemon=True)
    t.start()
    return t
