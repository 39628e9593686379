"""App settings (settings.json in the app's data folder) and the bundles the app can choose from.
Device-safe: stdlib, runtime.manifest (reading a manifest loads no interpreter), runtime.decoding.DEFAULT_BEAM.

Bundles offered, in this order, each folder listed once:
    1. the one passed with `edgecap app --bundle PATH` (this session)
    2. the default bundle shipped in the package (edgecap/resources/bundles/default), if installed
    3. every folder with a manifest.json under <data dir>/bundles/ (copy bundles there to install them)
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from edgecap.runtime.decoding import DEFAULT_BEAM

SETTINGS_NAME = "settings.json"
BEAMS = (1, 2, 3, 4, 5)  # beam sizes offered; 1 = greedy (fastest)


def max_threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def default_threads() -> int:
    """Interpreter threads: 2 by default (measured on 2-core x86: the encoder roughly halves; the per-token
    decoder step gains nothing), never more than the cores."""
    return min(2, max_threads())


@dataclass
class AppSettings:
    bundle: str | None = None  # bundle folder; None: the first bundle offered (see module docstring)
    threads: int = 0  # interpreter threads; 0: default_threads()
    beam: int = DEFAULT_BEAM  # beam width of the decoder

    def __post_init__(self):
        if not self.threads:
            self.threads = default_threads()
        self.threads = max(1, min(int(self.threads), max_threads()))
        self.beam = int(self.beam) if int(self.beam) in BEAMS else DEFAULT_BEAM

    @classmethod
    def load(cls, data_dir: str | Path) -> AppSettings:
        """Saved settings, or the defaults when the file is missing or unreadable (never fails)."""
        path = Path(data_dir) / SETTINGS_NAME
        try:
            d = json.loads(path.read_text())
            return cls(
                bundle=d.get("bundle") or None,
                threads=int(d.get("threads") or 0),
                beam=int(d.get("beam", DEFAULT_BEAM)),
            )
        except (OSError, ValueError, TypeError, AttributeError):
            return cls()

    def save(self, data_dir: str | Path) -> None:
        path = Path(data_dir) / SETTINGS_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)


@dataclass(frozen=True)
class BundleChoice:
    path: str
    origin: str  # "command line" | "built in" | "installed"
    mode: str = ""  # manifest mode (int8, float16, ...); "" when the manifest cannot be read
    notice: str = ""
    created: str = ""
    max_views: int = 0  # views the model takes (1: frontal only, 2: frontal + lateral)
    error: str = ""  # why the manifest cannot be read ("" when it can)

    @property
    def name(self) -> str:
        return Path(self.path).name

    @property
    def label(self) -> str:
        """One line for the screen: 'default · int8 · built in'."""
        parts = [self.name, self.mode or "unreadable", self.origin]
        return " · ".join(p for p in parts if p)


def describe_bundle(path: str | Path, origin: str) -> BundleChoice:
    from edgecap.runtime.manifest import Manifest, ManifestError

    try:
        m = Manifest.load(path)
    except ManifestError as e:
        return BundleChoice(str(path), origin, error=str(e))
    return BundleChoice(str(path), origin, m.mode, m.notice, m.created, m.input.max_views)


def installed_bundles(data_dir: str | Path | None, extra: str | Path | None = None) -> list[BundleChoice]:
    """The bundles offered in Settings (see the module docstring), readable or not."""
    from edgecap.runtime.captioner import default_bundle_path

    found: list[tuple[Path, str]] = []
    if extra:
        found.append((Path(extra), "command line"))
    default = default_bundle_path()
    if (default / "manifest.json").is_file():
        found.append((default, "built in"))
    if data_dir is not None:
        root = Path(data_dir) / "bundles"
        if root.is_dir():
            found += [(p, "installed") for p in sorted(root.iterdir()) if (p / "manifest.json").is_file()]
    seen, out = set(), []
    for path, origin in found:
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            out.append(describe_bundle(path, origin))
    return out


def active_bundle(
    settings: AppSettings, choices: list[BundleChoice], override: str | None = None
) -> BundleChoice | None:
    """The bundle to run: --bundle for this session, else the saved choice if still offered, else the first."""
    if override:
        return next((c for c in choices if os.path.realpath(c.path) == os.path.realpath(override)), None)
    if settings.bundle:
        hit = next((c for c in choices if os.path.realpath(c.path) == os.path.realpath(settings.bundle)), None)
        if hit is not None:
            return hit
    return choices[0] if choices else None
