"""What one `edgecap bench` run measures: its options checked and resolved into a Plan (the bench's first stage).

    plan = make_plan(BenchOptions(run="default"), log)   # BenchError on bad options: a usage error, exit 2
    plan.threads, plan.bundles, plan.modes, plan.reference
    plan.settings()                                      # the result's "settings" object

Defaults: no --run and no --bundle measures the default bundle; --run alone converts it into every mode;
the reference is the --run given, else the run the first bundle was converted from (benchmarks.variants).
--quick keeps the first thread count and 20 inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgecap.benchmarks.variants import ALL_MODES, BenchError, Reference, resolve_reference

QUICK_INPUTS = 20  # --quick: minimum number of input studies


@dataclass
class BenchOptions:
    """Everything that decides a bench run (saved in the result's "settings")."""

    run: str | None = None  # reference run directory ("default": the one shipped with the default bundle)
    bundles: list[str] = field(default_factory=list)
    modes: list[str] | None = None  # convert the run into these modes (default: all when no bundle is given)
    data: str | None = None  # IU X-Ray folder for the inputs (default: the packaged real sample)
    threads: list[int] = field(default_factory=lambda: [1, 2, 4])
    quick: bool = False
    beam: int = 3
    min_inputs: int = 100
    seed: int = 0
    process_runs: int = 7  # timed `edgecap caption` processes per bundle (and as many floor runs): p50 of 7
    timeout_s: float = 1800.0  # per child process

    def runs(self, kind: str) -> dict:
        """Repetitions of the five-figure benchmark (benchmark_model's defaults: 1 warm-up, >= 50 runs, 1 s)."""
        if self.quick:
            return {"warmup": 2, "min_runs": 10, "min_seconds": 0.2, "max_runs": 50 if kind == "encoder" else 300}
        return {"warmup": 5, "min_runs": 50, "min_seconds": 1.0, "max_runs": 500 if kind == "encoder" else 3000}


@dataclass(frozen=True)
class Plan:
    """BenchOptions checked and resolved: what the later stages measure."""

    options: BenchOptions
    threads: list[int]  # thread counts measured (--quick: the first)
    bundles: list[Path]  # bundle folders given ("default" resolved), or the default bundle
    modes: list[str]  # modes to convert the reference into
    reference: Reference | None  # the Keras run drift is measured against (None: no drift figures)
    chosen_by: str  # how the reference was found (or why there is none)
    data: Path  # IU X-Ray folder the inputs come from
    min_inputs: int  # input studies: real + derived up to this many, or a seeded sample of this many real ones

    @property
    def first_threads(self) -> int:
        """The thread count of the terminal table, of drift and of the eager Keras reports."""
        return self.threads[0]

    def settings(self) -> dict:
        """The result's "settings": the options, with threads, modes, bundles and min_inputs as resolved."""
        return {
            **asdict(self.options),
            "threads": self.threads,
            "modes": self.modes,
            "bundles": [str(b) for b in self.bundles],
            "min_inputs": self.min_inputs,
            # whole reports: every row's process alive at once, one report at a time, round-robin per input
            "reports_order": "interleaved",
        }

    def reference_json(self) -> dict | None:
        """The result's "reference": the run's path, how it was chosen and the hashes that identify it."""
        ref = self.reference
        if ref is None:
            return None
        return {
            "path": str(ref.path),
            "chosen_by": self.chosen_by,
            "config_hash": ref.config_hash,
            "weights_sha256": ref.weights_sha256,
        }


def make_plan(opt: BenchOptions, log: Callable[[str], None] = print) -> Plan:
    """Check `opt` (BenchError: bad beam, threads, bundle folder or mode; modes without a reference) and
    resolve its defaults (see the module docstring); logs the reference chosen."""
    from edgecap.resources import sample_dir
    from edgecap.runtime.captioner import default_bundle_path

    if opt.beam < 1:
        raise BenchError("--beam must be >= 1")
    if not opt.threads or any(t < 1 for t in opt.threads):
        raise BenchError("--threads must list positive integers, e.g. 1,2,4")
    bundles = [Path(b) if b != "default" else default_bundle_path() for b in opt.bundles]
    for b in bundles:
        if not b.is_dir():
            raise BenchError(f"{b}: no such bundle folder")
    if opt.run is None and not bundles:
        bundles = [default_bundle_path()]
    modes = opt.modes
    if modes is None:
        modes = list(ALL_MODES) if (opt.run is not None and not opt.bundles) else []
    unknown = [m for m in modes if m not in ALL_MODES]
    if unknown:
        raise BenchError(f"unknown mode(s) {unknown}: choose from {', '.join(ALL_MODES)}")
    ref, chosen_by = resolve_reference(opt.run, bundles)
    if modes and (ref is None or ref.kind != "run"):
        raise BenchError("converting modes needs --run (a run directory); convert a Keras model with edgecap convert")
    log(f"reference: {ref.path if ref else 'none'} ({chosen_by})")
    return Plan(
        options=opt,
        threads=opt.threads[:1] if opt.quick else opt.threads,
        bundles=bundles,
        modes=modes,
        reference=ref,
        chosen_by=chosen_by,
        data=Path(opt.data) if opt.data else sample_dir(),
        min_inputs=QUICK_INPUTS if opt.quick else opt.min_inputs,
    )
