"""A successful command's stderr holds edgecap's own lines only (issue 16, item 2), and a long stage says what it
does (item 3).

The commands run for real, as subprocesses, because the noise came from C++ writing to file descriptor 2 (absl and
oneDNN at TensorFlow's import, the TFLite converter's calibrator, LiteRT's XNNPACK delegate) or from Kivy's logger
at start-up, none of which an in-process CliRunner sees. Every stderr line must look like one of ours (OWN: the
"warning:" / "error:" / "note:" prefixes and the stage lines of edgecap.progress) and none like a library's
(FOREIGN). convert and evaluate reuse conftest's overfit run. The filters themselves (runtime.native_logs,
edgecap.progress, edge_app.boot) are tested first, in and out of a subprocess.
"""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edgecap.resources import sample_image

# edgecap's own stderr lines: its prefixes and the stage lines of convert / evaluate / train (edgecap.progress)
OWN = re.compile(
    r"(warning|error|note): |loading |reading |calibration: |converting |verifying |signed by |not signed"
    r"|generating |nearest-neighbour baseline|scoring |drawing |writing |training on images|encoding "
)
# what the libraries printed before (issue 16): absl, oneDNN, TFLite / LiteRT, the converter, OpenCV, Kivy
FOREIGN = re.compile(
    r"absl|oneDNN|^[IWEF]\d{4} |XNNPACK|TensorFlow Lite|fully_quantize|^INFO: |\[ ?(ERROR|WARN|INFO|DEBUG)"
    r"|libpng|Traceback|MTDev|\[Config"
)
NOISE_LINES = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1796292601.383355   16028 port.cc:153] oneDNN custom operations are on. You may see slightly\n"
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
    "fully_quantize: 0, inference_type: 6, input_inference_type: FLOAT32, output_inference_type: FLOAT32\n"
)
REAL_LINES = "E0000 00:00:1796292601.3 16028 converter.cc:12] a genuine error\nERROR: tflite kernel failed\n"


def not_ours(stderr: str) -> list[str]:
    """The stderr lines that are not edgecap's own (or that look like a library's)."""
    return [line for line in stderr.splitlines() if line.strip() and (not OWN.match(line) or FOREIGN.search(line))]


def edgecap(*args, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m edgecap.cli ARGS` as a user runs it (stderr a pipe, not a terminal; EDGECAP_VERBOSE unset)."""
    environ = {k: v for k, v in os.environ.items() if k != "EDGECAP_VERBOSE"}
    cmd = [sys.executable, "-m", "edgecap.cli", *map(str, args)]
    return subprocess.run(cmd, env={**environ, **(env or {})}, capture_output=True, text=True, timeout=timeout)


# ---- the filters ----------------------------------------------------------------------------------------------
NATIVE = """
import os, sys
from edgecap.runtime.native_logs import native_stderr
print("before", file=sys.stderr)
with native_stderr():
    os.write(2, sys.argv[1].encode())
    print("ours, inside", file=sys.stderr)
print("after", file=sys.stderr)
"""


@pytest.mark.parametrize("verbose", [False, True])
def test_native_stderr_drops_library_info_and_shows_errors(verbose):
    env = {k: v for k, v in os.environ.items() if k != "EDGECAP_VERBOSE"}
    if verbose:
        env["EDGECAP_VERBOSE"] = "1"
    p = subprocess.run(
        [sys.executable, "-c", NATIVE, NOISE_LINES + REAL_LINES], env=env, capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0, p.stderr
    kept = (NOISE_LINES if verbose else "") + REAL_LINES
    assert p.stderr == "before\n" + kept + "ours, inside\nafter\n"


KILLED = """
import os, signal, sys, time
from edgecap.runtime.native_logs import native_stderr

def exit_interrupted(signum, frame):  # as cli.common.exit_interrupted: a line, then the process ends at once
    os.write(2, b"interrupted\\n")
    os._exit(130)

signal.signal(signal.SIGINT, exit_interrupted)
with native_stderr():
    os.write(2, b"ERROR: seen before the end\\n")
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(5)
"""


def test_a_handler_that_ends_the_process_still_reaches_stderr():
    """Ctrl-C while fd 2 is captured (caption loading its bundle): the handler's line and the capture show."""
    p = subprocess.run([sys.executable, "-c", KILLED], capture_output=True, text=True, timeout=60)
    assert p.returncode == 130 and p.stderr == "ERROR: seen before the end\ninterrupted\n"


def test_progress_counts_only_on_a_terminal():
    from edgecap.progress import Progress, counted

    log = io.StringIO()
    progress = Progress(log, tty=False)
    progress("converting encoder (float16)")
    assert list(counted(progress, range(3), "calibration")) == [0, 1, 2]
    assert log.getvalue() == "converting encoder (float16)\n"  # a log file: the stage line, no \r

    screen = io.StringIO()
    progress = Progress(screen, tty=True)
    progress.count(1, 3, "verifying: studies")  # drawn (the first redraw)
    progress.count(3, 3, "verifying: studies")  # done: wiped, the stage line already said it
    progress("next stage")
    shown = "verifying: studies 1/3"
    assert screen.getvalue() == "\r" + shown + "\r" + " " * len(shown) + "\r" + "next stage\n"
    lines = []
    assert list(counted(lines.append, "ab", "plain callables get no counts")) == ["a", "b"] and lines == []


def test_kivy_startup_noise_is_dropped_other_records_kept():
    from edgecap.edge_app.boot import KivyStartupNoise

    def record(msg, level=logging.ERROR, exc=None):
        return logging.LogRecord("kivy", level, __file__, 1, msg, None, (type(exc), exc, None) if exc else None)

    f = KivyStartupNoise()
    assert not f.filter(record("Input: MTDev is not supported by your version of linux", exc=OSError("libmtdev")))
    assert not f.filter(record("Config: Older configuration version detected (0 instead of 27)", logging.WARNING))
    assert not f.filter(record("Config: Upgrading from 0 to 1", logging.DEBUG))
    assert f.filter(record("Input: MTDev is not supported by your version of linux", exc=ValueError("a bug")))
    assert f.filter(record("Config: Environ `KCFG_X` invalid format", logging.WARNING))
    assert f.filter(record("Window: no window provider could be loaded"))


# ---- the commands ---------------------------------------------------------------------------------------------
def test_caption_stderr_is_ours(tmp_path):
    p = edgecap("caption", sample_image(), "--format", "json")
    assert p.returncode == 0, p.stderr
    assert not_ours(p.stderr) == [], p.stderr
    # the filter is what keeps LiteRT's line out, and EDGECAP_VERBOSE=1 lets it through for debugging
    p = edgecap("caption", sample_image(), "--format", "json", env={"EDGECAP_VERBOSE": "1"})
    assert p.returncode == 0 and "XNNPACK" in p.stderr, p.stderr


@pytest.mark.slow
def test_headless_app_stderr_is_ours(tmp_path):
    pytest.importorskip("kivy")
    env = {"KIVY_HOME": str(tmp_path / "kivy_home"), "DISPLAY": ""}  # a first run: Kivy writes its config.ini
    shot = tmp_path / "shot.png"
    p = edgecap("app", "--image", sample_image(), "--screenshot", shot, "--data-dir", tmp_path / "data", env=env)
    assert p.returncode == 0 and shot.is_file(), p.stderr
    assert not_ours(p.stderr) == [], p.stderr


@pytest.mark.tf
@pytest.mark.slow
def test_convert_stderr_is_ours_and_names_each_stage(overfit_run, tmp_path):
    run, _ = overfit_run
    p = edgecap("convert", "--run", run, "--out", tmp_path / "b", "--int8", "--verify-studies", "3")
    assert p.returncode == 0, p.stdout + p.stderr
    assert not_ours(p.stderr) == [], p.stderr
    assert "\r" not in p.stderr  # counts only on a terminal
    stages = ["loading TensorFlow", "calibration: ", "converting encoder", "converting decoder_step", "verifying on"]
    starts = [next(i for i, line in enumerate(p.stderr.splitlines()) if line.startswith(s)) for s in stages]
    assert starts == sorted(starts)
    assert "token-identical to Keras" in p.stdout  # the result stays on stdout


@pytest.mark.tf
@pytest.mark.slow
@pytest.mark.java
def test_evaluate_stderr_is_ours(overfit_run, iu_data, tmp_path):
    run, _ = overfit_run
    p = edgecap("evaluate", "--run", run, "--data", iu_data, "--split", "train", "--json", tmp_path / "e.json")
    assert p.returncode == 0, p.stdout + p.stderr
    assert not_ours(p.stderr) == [], p.stderr
    assert Path(tmp_path / "e.json").is_file()
