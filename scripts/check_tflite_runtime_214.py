#!/usr/bin/env python
"""Do bundles run on tflite-runtime 2.14 (the last tflite-runtime, numpy < 2) as they do on ai-edge-litert?

    python scripts/check_tflite_runtime_214.py bundles/demo-float32 bundles/demo-float16 bundles/demo-int8 \
        bundles/demo-dynamic [--venv PATH] [--images DIR]

1. Here (ai-edge-litert): every image is prepared once (runtime.preprocess) and saved as .npy, so the other
   side needs neither OpenCV nor the image files; each bundle writes greedy and beam-3 token ids to JSON.
2. A separate venv (created on first use: numpy<2, tflite-runtime==2.14.0 from PyPI; edgecap's runtime
   from src/ on PYTHONPATH, no TensorFlow) loads the same bundles through runtime.bundle.Bundle, which
   falls back to tflite_runtime there, and writes its tokens to JSON.
3. The two JSON files are compared. A bundle whose manifest says tflite_runtime_2_14 = false must FAIL to
   load there (that is what the manifest promises); the others must load and give the same tokens: all of
   them for float files; for int8 files (whose kernels differ between the runtimes) the mode's share of
   identical reports, near ties judged on the ai-edge-litert side as convert.verify does against Keras.

Exit status 0 when every bundle behaves as its manifest says, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ["numpy<2", "tflite-runtime==2.14.0"]


def tokens_for(bundle_dir: Path, inputs: Path) -> dict:
    """Load one bundle with whatever interpreter this Python has; decode every prepared input."""
    import numpy as np

    from edgecap.runtime.bundle import Bundle
    from edgecap.runtime.decoding import decode
    from edgecap.runtime.study import encode_views, fuse_views

    try:
        b = Bundle.load(bundle_dir)
    except Exception as e:  # noqa: BLE001 - the point is to report whatever the old runtime does
        return {"loaded": False, "error": f"{type(e).__name__}: {e}"[:500]}
    out = {"loaded": True, "interpreter": b.interpreter_name, "mode": b.manifest.mode, "reports": {}, "features": {}}
    cases = json.loads((inputs / "cases.json").read_text())
    for name, files in cases.items():
        views = encode_views(b.encode, _prepared(inputs, files))
        out["features"][name] = [float(np.abs(v).sum()) if v is not None else None for v in views]
        feats, mask = fuse_views(views, b.max_views)
        out["reports"][name] = {f"beam{k}": decode(b, feats, mask, b.special, b.max_len, beam=k).ids for k in (1, 3)}
    return out


def _prepared(inputs: Path, files: list[str | None]) -> list:
    """The prepared (S, S, 3) views of one case, saved by prepare_inputs (None for a missing view)."""
    import numpy as np

    return [np.load(inputs / f) if f else None for f in files]


def worker(args) -> None:
    result = {str(p): tokens_for(Path(p), Path(args.inputs)) for p in args.bundles}
    Path(args.json).write_text(json.dumps(result, indent=1))


def prepare_inputs(bundle_dirs: list[Path], images: list[Path], folder: Path) -> None:
    """Prepared (S, S, 3) float32 inputs per image size in use; cases: each image alone + one two-view pair."""
    import numpy as np

    from edgecap.runtime.manifest import Manifest
    from edgecap.runtime.preprocess import load

    cases: dict[str, list[str | None]] = {}
    specs = {(m.input.size, m.input.mean, m.input.std) for m in map(Manifest.load, bundle_dirs)}
    if len(specs) != 1:
        raise SystemExit("all bundles must share one input spec (convert them from the same run)")
    size, mean, std = specs.pop()
    for im in images:
        np.save(folder / f"{im.stem}.npy", load(im, size, mean, std))
        cases[im.stem] = [f"{im.stem}.npy"]
    if len(images) >= 2:
        cases["two-views"] = [f"{images[0].stem}.npy", f"{images[1].stem}.npy"]
    (folder / "cases.json").write_text(json.dumps(cases))


def ensure_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating {venv} ({', '.join(REQUIREMENTS)})", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *REQUIREMENTS], check=True
        )
    return python


def _gap(bundle, inputs: Path, files: list, ref: list[int], other: list[int], beam: int, tie_gap) -> float:
    """convert.verify.tie_gap with the ai-edge-litert bundle as the reference model (greedy: its margin at
    the first differing token; beam: its score of its own report minus its score of the other report)."""
    from edgecap.runtime.study import encode_study

    feats, mask = encode_study(bundle.encode, _prepared(inputs, files), bundle.max_views)
    if beam == 1:
        return tie_gap(bundle, None, (feats, mask), None, bundle.special, ref, other, 1)
    return tie_gap(None, bundle, None, (feats, mask), bundle.special, other, ref, beam)


def compare(new: dict, old: dict, inputs: Path) -> list[list[str]]:
    """One row per bundle. Float files must give identical tokens; int8 kernels differ between the two
    runtimes (XNNPACK here, TFLite's own kernels there), so int8 bundles are held to their mode's bar:
    reports identical or near ties (convert.verify.tie_gap < tie_margin) >= min_identical."""
    from edgecap.runtime.bundle import Bundle
    from edgecap.runtime.manifest import Manifest

    try:
        from edgecap.convert.verify import tie_gap
    except ImportError:  # no TensorFlow here: only exact agreement can be judged
        tie_gap = None
    cases = json.loads((inputs / "cases.json").read_text())
    rows = [["bundle", "manifest: loads in 2.14", "tflite-runtime 2.14", "reports as on ai-edge-litert", "status"]]
    for path, here in new.items():
        m = Manifest.load(path)
        promised, t = m.runtime["tflite_runtime_2_14"], m.mode_settings["thresholds"]
        there = old[path]
        if not there["loaded"]:
            status = "ok" if not promised else "FAILED"
            reason = there["error"].split("cannot load it: ")[-1].split(". ")[0][:80]
            rows.append([Path(path).name, _yn(promised), f"does not load: {reason}", "-", status])
            continue
        total = same = ties = 0
        for case, reports in here["reports"].items():
            for key, ids in reports.items():
                total += 1
                got = there["reports"][case][key]
                if got == ids:
                    same += 1
                elif tie_gap is not None and t["tie_margin"] > 0:
                    b = Bundle.load(path)
                    ties += _gap(b, inputs, cases[case], ids, got, int(key[4:]), tie_gap) < t["tie_margin"]
        ok = promised and (same + ties) / total >= t["min_identical"]
        status = "ok" if ok else "FAILED" if promised else "loads (manifest says no)"
        rows.append(
            [
                Path(path).name,
                _yn(promised),
                f"loads ({there['interpreter']})",
                f"{same}/{total} identical" + (f" + {ties} near tie" if ties else ""),
                status,
            ]
        )
    return rows


def _yn(b: bool) -> str:
    return "yes" if b else "no"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundles", nargs="+", help="bundle folders (edgecap convert), all from the same run")
    ap.add_argument(
        "--venv",
        type=Path,
        default=Path.home() / ".cache" / "edgecap" / "venv-tflite-runtime-2.14",
        help="venv for tflite-runtime 2.14 (created on first use, outside the repository)",
    )
    ap.add_argument("--images", type=Path, default=None, help="folder of images (default: the packaged sample)")
    ap.add_argument("--json", default=None, help=argparse.SUPPRESS)  # worker: where to write tokens
    ap.add_argument("--inputs", default=None, help=argparse.SUPPRESS)  # worker: prepared inputs
    args = ap.parse_args()
    if args.json:
        worker(args)
        return 0

    from edgecap.resources import sample_dir

    bundles = [Path(b).resolve() for b in args.bundles]
    folder = args.images or sample_dir() / "images"
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    python = ensure_venv(args.venv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prepare_inputs(bundles, images, tmp)
        new = {str(p): tokens_for(p, tmp) for p in bundles}
        (tmp / "litert.json").write_text(json.dumps(new, indent=1))
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["PYTHONPATH"] = str(ROOT / "src")
        cmd = [str(python), __file__, *map(str, bundles), "--json", str(tmp / "tflite214.json"), "--inputs", str(tmp)]
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if p.returncode:
            print(p.stderr[-3000:], file=sys.stderr)
            return 1
        old = json.loads((tmp / "tflite214.json").read_text())
        version = subprocess.run(
            [str(python), "-c", "import tflite_runtime, numpy; print(tflite_runtime.__version__, numpy.__version__)"],
            capture_output=True,
            text=True,
        ).stdout.split()
        print(
            f"tflite-runtime {version[0]} (numpy {version[1]}) vs ai-edge-litert, {len(images)} images + 1 "
            f"two-view study, greedy and beam 3\n"
        )
        rows = compare(new, old, tmp)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0 if all(r[-1] == "ok" for r in rows[1:]) else 1


if __name__ == "__main__":
    sys.exit(main())
