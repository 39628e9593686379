"""Caption studies on an emulated device (emulation.Device) and on the host, and compare the tokens.

    studies = sample_studies()                            # the bundled IU X-Ray sample, frontal + lateral pairs
    result = check_device("pi5", bundle=None, studies=studies, beams=(1, 3))
    result.passed; result.rows()                          # every report identical or a near tie; a table
    check_device("pi5", None, studies, runtime="tflite-runtime-2.14")   # the same with tflite-runtime 2.14 there
    app = check_app("pi5", None, studies[0], Path("app.png"))  # the app, headless, under emulation: its report

The device side is the program a deployer ships: `python3.11 -m edgecap.cli caption --list studies.csv --format
json` run under qemu (one batch of every study, frontal + lateral where present, per beam size). The host
side is runtime.captioner.Captioner on the same bundle and images. A report that differs counts as a near tie
by the rule `edgecap bundle compare` uses (convert.verify.tie_gap below the bundle mode's tie_margin), computed
on the host's model: greedy, the host's log-probability margin of its token over the device's at the first
difference; beam, the host model's score of the device's report minus its score of its own. TensorFlow-free.

check_app runs the app the same way (`edgecap app --image ... --screenshot out.png --data-dir D`, Kivy drawing
with Mesa's software GL under qemu) and reads the report the app showed and saved from D's history, to compare
with the host's report at the app's default beam size.
"""

from __future__ import annotations

import csv
import json
import signal
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edgecap.device.emulation import Device, EmulationError, prepare

CHECK_BEAMS = (1, 3)
GUEST_TIMEOUT_S = 1200  # one guest caption call (every study); measured ~8 s per study per beam under qemu


@dataclass(frozen=True)
class Study:
    """One study: an id, the image captioned as the frontal view, and the lateral view or None."""

    uid: str
    frontal: Path
    lateral: Path | None = None


def sample_studies() -> list[Study]:
    """Every study of the bundled sample with an image: frontal + lateral where it has both; a study with only
    a lateral view is captioned from that one image (as `edgecap caption IMG` does)."""
    from edgecap.convert.sources import find_studies
    from edgecap.resources import sample_dir

    out = []
    for s in find_studies(sample_dir(), max_views=2).studies:
        views = [v for v in s.views if v is not None]
        if views:
            out.append(Study(s.uid, views[0], s.views[1] if s.views[0] is not None and len(s.views) > 1 else None))
    return out


def studies_from_images(paths: Sequence[Path]) -> list[Study]:
    """One single-view study per image (its file name as the id)."""
    return [Study(Path(p).name, Path(p)) for p in paths]


@dataclass
class Outcome:
    """One study at one beam size on one target: "identical", "near tie" or "differs" (with the reason)."""

    study: str
    beam: int
    verdict: str
    host: str
    device: str
    tie_gap: float | None = None
    error: str | None = None


@dataclass
class CheckResult:
    target: str
    bundle: str
    built: bool  # the emulated device was built by this run (False: reused from the cache)
    prepare_s: float
    device_s: float
    outcomes: list[Outcome] = field(default_factory=list)
    interpreter: str = ""  # the package runtime.interpreter chose on the device, e.g. "tflite-runtime 2.14.0"

    @property
    def passed(self) -> bool:
        return bool(self.outcomes) and all(o.verdict in ("identical", "near tie") for o in self.outcomes)


def device_reports(device: Device, bundle: Path, studies: Sequence[Study], beam: int) -> dict[str, dict]:
    """{study uid: the JSON record `edgecap caption` printed under emulation} at one beam size: one guest process
    for every study, given as a study list (`caption --list studies.csv`: frontal and lateral per study), as a
    deployer batches them. A call that fails as a whole raises EmulationError; a study whose image failed has
    its error record."""
    with tempfile.TemporaryDirectory(prefix="edgecap-device-") as tmp:
        listing = Path(tmp) / "studies.csv"
        with open(listing, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["study", "frontal", "lateral"])
            w.writerows([s.uid, s.frontal.resolve(), s.lateral.resolve() if s.lateral else ""] for s in studies)
        argv = ["-m", "edgecap.cli", "caption", "--list", str(listing), "--format", "json", "--no-attention"]
        proc = device.run(argv + ["--beam", str(beam), "--bundle", str(bundle)], timeout=GUEST_TIMEOUT_S)
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    out = {str(r.get("study")): r for r in records}
    if proc.returncode not in (0, 1, 3) or set(out) != {s.uid for s in studies}:
        raise EmulationError(f"the emulated `edgecap caption` failed ({_status(proc)}): {_tail(proc)}")
    return out


def device_interpreter(device: Device) -> str:
    """The interpreter package edgecap's runtime picks on the device and its version, e.g. "ai-edge-litert
    2.3.0": which runtime the check ran is read from the device, not assumed from what was installed."""
    code = (
        "from importlib.metadata import version; from edgecap.runtime.interpreter import interpreter_class; "
        "name = interpreter_class()[1]; print(name, version(name))"
    )
    proc = device.run(["-c", code], timeout=GUEST_TIMEOUT_S)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise EmulationError(f"no TFLite interpreter loads on the emulated device ({_status(proc)}): {_tail(proc)}")
    return proc.stdout.strip().splitlines()[-1]


def _status(proc) -> str:
    """ "exit 1", or the signal that killed the guest: "killed by SIGSEGV" (a crash in native code)."""
    if proc.returncode < 0:
        try:
            return f"killed by {signal.Signals(-proc.returncode).name}"
        except ValueError:
            return f"killed by signal {-proc.returncode}"
    return f"exit {proc.returncode}"


def _tail(proc, lines: int = 3) -> str:
    return " | ".join(proc.stderr.strip().splitlines()[-lines:]) or "(no output)"


@dataclass
class AppResult:
    """The app run headless on the emulated `target`: the report text it showed and saved, the host's report of
    the same study at the app's default beam size, and the screenshot (a PNG the caller keeps)."""

    target: str
    study: str
    beam: int
    host: str
    device: str
    screenshot: Path
    seconds: float

    @property
    def passed(self) -> bool:
        return bool(self.device) and self.device == self.host


def check_app(
    target: str, bundle: Path | None, study: Study, screenshot: Path, log: Callable[[str], None] = print
) -> AppResult:
    """`edgecap app --image ... --screenshot` on the emulated `target` (emulation.APP: Kivy, Mesa's llvmpipe),
    its saved report compared with the host's. The app's screenshot is written to `screenshot` (a .png).
    Raises EmulationError (no device, a guest that fails) and runtime.bundle.BundleError."""
    from edgecap.edge_app.settings import DEFAULT_BEAM
    from edgecap.edge_app.store import HistoryStore
    from edgecap.runtime.captioner import Captioner, default_bundle_path

    path = Path(bundle) if bundle is not None else default_bundle_path()
    host = Captioner.from_bundle(path).caption(study.frontal, study.lateral, beam=DEFAULT_BEAM)
    device = prepare(target, log=log, runtime="app")
    shot = Path(screenshot)
    shot.parent.mkdir(parents=True, exist_ok=True)
    shot.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgecap-app-") as tmp:
        views = ["--image", str(study.frontal.resolve())]
        if study.lateral is not None:
            views += ["--lateral", str(study.lateral.resolve())]
        argv = ["-m", "edgecap.cli", "app", *views, "--screenshot", str(shot.resolve()), "--data-dir", tmp,
                "--bundle", str(path.resolve()), "--timeout", str(GUEST_TIMEOUT_S)]  # fmt: skip
        t0 = time.perf_counter()
        proc = device.run(argv, timeout=GUEST_TIMEOUT_S + 60, env_extra={"KIVY_HOME": str(Path(tmp) / "kivy")})
        seconds = time.perf_counter() - t0
        if proc.returncode != 0 or not shot.is_file():
            raise EmulationError(f"the emulated `edgecap app` failed ({_status(proc)}): {_tail(proc, 5)}")
        store = HistoryStore(Path(tmp) / "history.sqlite3")
        try:
            items = store.list()
        finally:
            store.close()
    if len(items) != 1:
        raise EmulationError(f"the emulated app saved {len(items)} reports, expected 1")
    return AppResult(target, study.uid, DEFAULT_BEAM, host.text, items[0].text, shot, seconds)


def compare_study(captioner, study: Study, beam: int, record: dict) -> Outcome:
    """The host's report for `study` at `beam` against the device's JSON record."""
    from edgecap.convert.modes import MODES, by_name
    from edgecap.convert.verify import tie_gap
    from edgecap.runtime.study import encode_study_files

    b = captioner.bundle
    host = captioner.caption(study.frontal, study.lateral, beam=beam)
    if record.get("status") != "ok":
        return Outcome(study.uid, beam, "differs", host.text, "", error=str(record.get("error", record.get("status"))))
    tokens = record.get("tokens") or []
    if tokens == host.tokens:
        return Outcome(study.uid, beam, "identical", host.text, record.get("text", ""))
    ids = [[b.vocab.index.get(t, b.vocab.unk_id) for t in toks] for toks in (host.tokens, tokens)]
    feats = encode_study_files(b, [study.frontal, study.lateral])  # (N, D), (N,)
    gap = tie_gap(b, b, feats, feats, b.special, ids[0], ids[1], beam)
    margin = by_name(b.manifest.mode).thresholds.tie_margin if b.manifest.mode in MODES else 0.0
    verdict = "near tie" if gap < margin else "differs"
    return Outcome(study.uid, beam, verdict, host.text, record.get("text", ""), tie_gap=gap)


def check_device(
    target: str,
    bundle: Path | None,
    studies: Sequence[Study],
    beams: Sequence[int] = CHECK_BEAMS,
    log: Callable[[str], None] = print,
    runtime: str = "litert",
) -> CheckResult:
    """Build or reuse the emulated `target` with the interpreter `runtime` (emulation.RUNTIMES), caption
    `studies` there and on the host at each beam size, compare.
    Raises EmulationError (no qemu and no way to install it, a failed build, a guest that does not run) and
    runtime.bundle.BundleError (an unusable bundle, found on the host first)."""
    from edgecap.runtime.captioner import Captioner, default_bundle_path

    path = Path(bundle) if bundle is not None else default_bundle_path()
    captioner = Captioner.from_bundle(path)
    t0 = time.perf_counter()
    device = prepare(target, log=log, runtime=runtime)
    t1 = time.perf_counter()
    result = CheckResult(target, str(path), device.built, t1 - t0, 0.0)
    result.interpreter = device_interpreter(device)
    for beam in beams:
        records = device_reports(device, path.resolve(), studies, beam)
        result.outcomes += [compare_study(captioner, s, beam, records[s.uid]) for s in studies]
    result.device_s = time.perf_counter() - t1
    return result
