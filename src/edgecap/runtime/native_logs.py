"""Lines that native libraries write straight to file descriptor 2, filtered: the project's stderr says only
what the user needs (its own progress, warnings and errors) and every genuine error of a library.

TensorFlow's start-up (absl's "WARNING: All log messages before absl::InitializeLog() ..." and oneDNN's
"I0000 ... oneDNN custom operations are on", each twice), the TFLite converter's "fully_quantize: 0,
inference_type: 6, ..." and LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." are written by C++
to stderr. Python's logging does not reach them, TF_CPP_MIN_LOG_LEVEL does not either (TensorFlow 2.21 logs
oneDNN's line before it reads the variable; LiteRT has no setting). So around such a call fd 2 points at a
temporary file, and afterwards every captured line is written back to stderr except those that match NOISE
(informational lines by their format): an error line of the library still shows, after the call.

    with native_stderr():                      # nested or from several threads: one capture, the outermost
        interpreter.allocate_tensors()

EDGECAP_VERBOSE=1 turns the filter off (and TensorFlow's log level back to its own default: training.tf_env),
for debugging. Cost: ~0.2 ms a capture (a temporary file and two dup2; measured on a loaded 2-core x86
machine). Python-level writes to stderr inside the block are captured and written back too (in order, after
the block). A SIGINT handler that ends the process at once (cli.common.exit_interrupted) finds stderr restored
first, so its "interrupted" line shows.
Device-safe: standard library only.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

VERBOSE_ENV = "EDGECAP_VERBOSE"

# Informational lines of the native libraries edgecap loads, one pattern each (matched at a line's start).
NOISE = re.compile(
    "|".join(
        (
            r"INFO: ",  # TFLite / LiteRT info ("Created TensorFlow Lite XNNPACK delegate for CPU.")
            r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$",
            r"I\d{4} [\d:.]+ +\d+ \S+:\d+\] ",  # absl info lines (I0000 00:00:... port.cc:153] oneDNN ...)
            r"fully_quantize: \d+, inference_type: \d+, input_inference_type: \w+, output_inference_type: \w+$",
        )
    )
)

_lock = threading.Lock()
_state: dict[str, Any] = {"depth": 0}  # while capturing: saved (the real fd 2), file, sigint (the wrapped handler)


def verbose() -> bool:
    """Whether EDGECAP_VERBOSE asks for every third-party log line (1, true, yes)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes")


def stderr_fd() -> int:
    """The file descriptor of the process's real stderr: 2, or while fd 2 is captured, the saved one (for the
    project's own progress lines, which must show as they happen: edgecap.progress)."""
    return _state.get("saved", 2)


def keep(text: str) -> str:
    """Captured stderr text -> the lines to show (those NOISE does not match), newlines kept."""
    return "".join(line for line in text.splitlines(keepends=True) if not NOISE.match(line))


@contextmanager
def native_stderr() -> Iterator[None]:
    """Within: fd 2 is captured; on leaving, what was written is shown again less NOISE (see the module doc)."""
    if verbose():
        yield
        return
    _start()
    try:
        yield
    finally:
        _stop()


def _start() -> None:
    with _lock:
        _state["depth"] += 1
        if _state["depth"] > 1:
            return
        _flush()
        capture = tempfile.TemporaryFile()
        _state.update(saved=os.dup(2), file=capture)
        os.dup2(capture.fileno(), 2)
        _wrap_sigint()


def _stop() -> None:
    with _lock:
        _state["depth"] -= 1
        if _state["depth"] == 0:
            _unwrap_sigint()
            _restore()


def _restore() -> None:
    """fd 2 back to where it pointed; the captured lines written there, less NOISE. Idempotent."""
    saved, capture = _state.pop("saved", None), _state.pop("file", None)
    if saved is None:
        return
    _flush()
    os.dup2(saved, 2)
    os.close(saved)
    capture.seek(0)
    shown = keep(capture.read().decode("utf-8", "replace"))
    capture.close()
    if shown:
        os.write(2, shown.encode())


def _flush() -> None:
    """Python's buffered stderr out to fd 2 (before fd 2 changes); a closed or odd stream is no reason to fail."""
    try:
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass


def _wrap_sigint() -> None:
    """A Python SIGINT handler that may end the process at once gets stderr back first (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return
    handler = signal.getsignal(signal.SIGINT)
    if not callable(handler) or handler is signal.default_int_handler:  # KeyboardInterrupt: _stop restores
        return

    def restore_then(signum: int, frame: Any) -> None:
        _restore()
        handler(signum, frame)

    _state["sigint"] = (handler, restore_then)
    signal.signal(signal.SIGINT, restore_then)


def _unwrap_sigint() -> None:
    handler, wrapper = _state.pop("sigint", (None, None))
    if handler is not None and signal.getsignal(signal.SIGINT) is wrapper:
        signal.signal(signal.SIGINT, handler)
