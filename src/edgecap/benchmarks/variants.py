"""What `edgecap bench` compares: the Keras reference run and the bundles, found or converted.

    ref = resolve_reference(run_arg, bundles)       # a run directory, or None (drift cannot be measured)
    converted = convert_modes(ref.path, modes, cache_dir, log)  # {mode: (bundle path, verified) | error}

A bundle's reference is the run it was converted from: the --run given, else the run its manifest names
(when that folder still exists and its weights have the recorded sha256), else the reference shipped with
the default bundle (edgecap/resources/reference/default) when the config hash and vocabulary match. A bundle
converted from a user's Keras captioner (`edgecap convert --keras`, manifest source kind "keras") has that
model as its reference when its files are still where the manifest says, unchanged (Reference kind "keras":
its path is that bundle's folder, whose manifest names the files; convert.keras_import.source_of_bundle).
Conversions are cached per (weights, config, mode, edgecap version): re-running the bench re-uses them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from edgecap import __version__
from edgecap.config import Config
from edgecap.resources import resolve_portable_path
from edgecap.runtime.bundle import sha256_file
from edgecap.runtime.manifest import Manifest, ManifestError

ALL_MODES = ("float32", "float16", "dynamic", "int8", "int8-full")


class BenchError(ValueError):
    """Bad bench arguments (no such run or bundle folder, unknown mode): a usage error, exit 2."""


def cache_root() -> Path:
    """$EDGECAP_CACHE or ~/.cache/edgecap, subfolder bench."""
    return Path(os.environ.get("EDGECAP_CACHE") or Path.home() / ".cache" / "edgecap") / "bench"


def shipped_reference() -> Path:
    """The Keras run the default bundle was converted from (head weights only, see training.run_dir)."""
    return Path(str(resources.files("edgecap.resources").joinpath("reference", "default")))


@dataclass(frozen=True)
class Reference:
    path: Path
    config_hash: str
    weights_sha256: str  # of the weights file the reference loads (best.weights.h5 or head.weights.npz)
    bundle_weights_sha256: tuple[str, ...]  # weights sha256 values a bundle manifest may name for this model
    kind: str = "run"  # "run" (a run directory) | "keras" (a user's Keras model, named by the bundle at path)

    @classmethod
    def of_keras_bundle(cls, folder: Path) -> Reference | None:
        """The user's Keras model a bundle was converted from, when its files are unchanged; else None."""
        from edgecap.convert.keras_import import source_of_bundle

        src, _ = source_of_bundle(folder)
        if src is None:
            return None
        decoder_sha = sha256_file(src.decoder)
        return cls(Path(folder), "", decoder_sha, (decoder_sha,), kind="keras")

    @classmethod
    def load(cls, path: str | Path) -> Reference:
        root = shipped_reference() if str(path) == "default" and not Path(path).exists() else Path(path)
        if not (root / "config.json").is_file() or not (root / "vocab.json").is_file():
            raise BenchError(f"{path}: not a run directory (config.json / vocab.json missing)")
        weights = root / "best.weights.h5"
        if not weights.is_file():
            weights = root / "head.weights.npz"
        if not weights.is_file():
            raise BenchError(f"{root}: no weights (best.weights.h5 or head.weights.npz)")
        digest = sha256_file(weights)
        known = [digest]
        info = root / "reference.json"
        if info.is_file():  # the shipped reference records the h5 its bundle was converted from
            known += json.loads(info.read_text()).get("bundle_weights_sha256", [])
        return cls(root, Config.load(root / "config.json").model_hash(), digest, tuple(known))

    def matches(self, manifest: Manifest) -> str | None:
        """None when `manifest`'s bundle was converted from this model, else why not."""
        src = manifest.source or {}
        if self.kind == "keras" or src.get("kind") == "keras":
            if src.get("keras_decoder_sha256") in self.bundle_weights_sha256:
                return None
            return "the bundle was converted from another model than the reference"
        if src.get("config_hash") != self.config_hash:
            return (
                f"the bundle's model config (hash {str(src.get('config_hash'))[:12]}) is not the reference's "
                f"({self.config_hash[:12]})"
            )
        sha = src.get("weights_sha256")
        if sha and sha not in self.bundle_weights_sha256:
            return f"the bundle was converted from other weights (sha256 {sha[:12]}) than the reference's"
        return None


def resolve_reference(run: str | Path | None, bundles: list[Path]) -> tuple[Reference | None, str]:
    """-> (reference, how it was chosen). No --run: the first bundle's own source run, else the shipped one."""
    if run is not None:
        return Reference.load(run), "--run"
    for b in bundles:
        try:
            manifest = Manifest.load(b)
        except ManifestError:
            continue
        if (manifest.source or {}).get("kind") == "keras":
            keras = Reference.of_keras_bundle(b)
            if keras is not None:
                return keras, f"the Keras model named in {b}/manifest.json"
            continue
        src = (manifest.source or {}).get("run")
        src = resolve_portable_path(src, b) if isinstance(src, str) and src else None
        if src is not None and src.is_dir():
            try:
                ref = Reference.load(src)
            except BenchError:
                ref = None
            if ref is not None and ref.matches(manifest) is None:
                return ref, f"the run named in {b}/manifest.json"
        ref = Reference.load(shipped_reference())
        if ref.matches(manifest) is None:
            return ref, "the reference run shipped with the default bundle"
    return None, "none found: pass --run RUN (the run the bundles were converted from)"


def conversion_key(ref: Reference, mode: str) -> str:
    """The cache key of one conversion: the reference's weights and config, the mode's settings as the converter
    reads them (convert.modes: a mode whose parts change is converted again, even within one edgecap version),
    the conversion defaults and the edgecap version."""
    from edgecap.convert import defaults
    from edgecap.convert.modes import by_name

    settings = json.dumps(
        [by_name(mode).to_dict(), defaults.DEFAULT_SAMPLES, defaults.DECODER_SAMPLES, defaults.VERIFY_STUDIES],
        sort_keys=True,
    )
    key = f"{ref.weights_sha256}:{ref.config_hash}:{mode}:{__version__}:step{defaults.STEP_BATCH}:{settings}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def convert_modes(
    ref: Reference, modes: list[str], log: Callable[[str], None] = print, root: Path | None = None
) -> dict[str, dict]:
    """Convert the reference run into each mode (cached). -> {mode: {"path", "verified", "seconds", "cached"}
    or {"error"}}. A converter failure is an entry, not an exception: the bench shows it as the row's status."""
    from edgecap.convert.pipeline import convert_run

    root = root or cache_root()
    out: dict[str, dict] = {}
    for mode in modes:
        target = root / "bundles" / f"{mode}-{conversion_key(ref, mode)}"
        done = target / "bench-converted.json"
        if done.is_file():
            out[mode] = {**json.loads(done.read_text()), "cached": True}
            continue
        log(f"converting {ref.path} -> {mode} (cached in {target}) ...")
        lines: list[str] = []
        try:
            result = convert_run(ref.path, target, mode, log=lines.append)
        except Exception as e:  # noqa: BLE001 - a mode the converter cannot make is a row status
            out[mode] = {"error": f"conversion failed: {type(e).__name__}: {e}", "log": lines[-20:]}
            log(f"  {mode}: conversion failed: {e}")
            continue
        entry = {"path": str(target), "verified": bool(result.passed), "seconds": result.seconds}
        done.write_text(json.dumps(entry))
        out[mode] = {**entry, "cached": False}
        log(f"  {mode}: {'verified' if result.passed else 'FAILED verification'} in {result.seconds:.0f} s")
    return out
