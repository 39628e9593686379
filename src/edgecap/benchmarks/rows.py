"""The result's "variants": one typed row per thing measured, and the stage that lists them.

    rows = list_variants(plan, log)   # keras, keras-eager, converted modes, --bundle folders
    row.to_json()                     # the row as saved (bench.schema.json's "variant")

Rows, in this order: "keras" (the reference, compiled tf.function) and "keras-eager" when there is a reference;
one per mode converted from it (benchmarks.variants.convert_modes, cached); one per bundle folder. A bundle a
device would refuse (bad manifest, checksum) is a "failed" row, measured no further. Names are unique: a second
row called "int8" becomes "int8#2".

Later stages fill a row's figures: benchmarks.measure (models, report, size, tensorflow, interpreter, process,
throughput; the first thread count's reports in `reports`, which is never saved), benchmarks.drift (drift).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

from edgecap.benchmarks.plan import Plan
from edgecap.benchmarks.variants import Reference, convert_modes
from edgecap.runtime.bundle import BundleError, check_files
from edgecap.runtime.manifest import Manifest, ManifestError

# Saved key order of a row's head, per kind of row (a bundle given with --bundle learns its mode from its
# manifest, after the row is made: its mode comes later). "drift_note" is saved only when set.
_HEAD = {
    "keras": ("name", "kind", "mode", "path", "status", "error", "verified", "reference", "eager"),
    "converted": ("name", "kind", "mode", "path", "status", "error", "verified", "converted"),
    "given": ("name", "kind", "path", "status", "error", "verified", "converted", "mode", "drift_note"),
}
# Saved after the head in this order, each only when measured (not None).
_FIGURES = ("models", "report", "size", "tensorflow", "interpreter", "process", "drift", "throughput")


@dataclass
class Variant:
    """One row: what is measured, its status, and the figures the stages add (dicts as the worker wrote them)."""

    name: str
    kind: str  # "keras" (the reference model) | "bundle"
    path: str | None  # run directory or bundle folder (None: a conversion that wrote nothing)
    mode: str | None = None  # the bundle's mode (None for the Keras rows)
    status: str = "ok"  # "ok" | "partial" (some figures failed) | "failed" (measured no further)
    error: str | None = None
    verified: bool | None = None  # the converter's verification, from the manifest (None: not known)
    eager: bool = False  # Keras rows: eager calls instead of the compiled graphs
    converted: bool = False  # bundle rows: converted by this run (True) or given as a folder (False)
    drift_note: str | None = None  # why a bundle gets no drift figures (converted from another model)
    models: dict | None = None  # {part: {threads: benchmark_model's five figures}}
    report: dict | None = None  # {threads: whole-report figures (latency, stages, decode split, memory)}
    size: dict | None = None  # {"files", "total_bytes"[, "parameters", "note"]}
    tensorflow: str | None = None  # TensorFlow version of the compiled Keras row
    interpreter: str | None = None  # the interpreter package of the reports
    process: dict | None = None  # the TensorFlow-free `edgecap caption` process: cold start, peak RSS
    drift: dict | None = None  # against the Keras row (benchmarks.drift)
    throughput: dict | None = None  # the encoder's operations per second and share of the CPU's peak
    reports: list[dict] | None = field(default=None, repr=False)  # first thread count's reports, for drift

    @property
    def reference(self) -> bool:
        """The compiled Keras row is the reference the others are compared with."""
        return self.kind == "keras" and not self.eager

    @property
    def folder(self) -> Path:
        """The run directory or bundle folder of a row that is measured (it has one)."""
        if self.path is None:
            raise ValueError(f"{self.name}: no folder to measure")
        return Path(self.path)

    def mark_failed(self, error: str) -> None:
        self.status, self.error = "failed", error

    def to_json(self) -> dict:
        """The row as saved: its head in the order of its kind, then the figures that were measured."""
        layout = "keras" if self.kind == "keras" else "converted" if self.converted else "given"
        values = {f.name: getattr(self, f.name) for f in fields(self)} | {"reference": self.reference}
        head = {k: values[k] for k in _HEAD[layout] if k != "drift_note" or values[k] is not None}
        return head | {k: values[k] for k in _FIGURES if values[k] is not None}


def list_variants(plan: Plan, log: Callable[[str], None] = print) -> list[Variant]:
    """The rows of this run (see the module docstring); converting the reference's modes happens here."""
    rows = _keras_rows(plan.reference) + _converted_rows(plan, log)
    rows += [_given_row(b, plan.reference) for b in plan.bundles]
    seen: dict[str, int] = {}
    for v in rows:
        seen[v.name] = count = seen.get(v.name, 0) + 1
        if count > 1:
            v.name = f"{v.name}#{count}"
    return rows


def _keras_rows(ref: Reference | None) -> list[Variant]:
    if ref is None:
        return []
    return [
        Variant("keras-eager" if eager else "keras", "keras", str(ref.path), eager=eager) for eager in (False, True)
    ]


def _converted_rows(plan: Plan, log: Callable[[str], None]) -> list[Variant]:
    if not plan.modes or plan.reference is None:
        return []
    rows = []
    for mode, entry in convert_modes(plan.reference, plan.modes, log).items():
        v = Variant(
            mode,
            "bundle",
            entry.get("path"),
            mode=mode,
            error=entry.get("error"),
            verified=entry.get("verified"),
            converted=True,
        )
        if "error" in entry:
            v.status = "failed"
        else:
            try:
                check_files(entry["path"])
            except BundleError as e:
                v.mark_failed(str(e))
        rows.append(v)
    return rows


def _given_row(b: Path, ref: Reference | None) -> Variant:
    """A bundle folder's row; one a device would refuse (bad manifest, checksum) is failed."""
    from edgecap.runtime.captioner import default_bundle_path

    v = Variant(b.name if b != default_bundle_path() else "default", "bundle", str(b))
    try:
        m = Manifest.load(b)
        v.mode = m.mode
        v.verified = (m.verification or {}).get("passed")
        check_files(b)
        if ref is not None and (why := ref.matches(m)):
            v.drift_note = f"no drift figures: {why}"
    except (ManifestError, BundleError) as e:
        v.mark_failed(str(e))
    return v
