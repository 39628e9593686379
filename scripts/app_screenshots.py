"""Screenshots of the edgecap app for docs/app.md, rendered headless (SDL offscreen, no display needed).

    python scripts/app_screenshots.py --out docs/screenshots [--bundle PATH] [--density 1]

Scenes, each at phone portrait (412 x 915) and tablet landscape (1280 x 800), file names <scene>_<size>.png:

    main            a frontal and a lateral view opened, before Generate
    report          the report of a two-view study (CXR54, frontal + lateral), attention map on
    history         the history after a few studies (real X-rays and one photograph)
    settings        bundle, beam size, threads
    error_unreadable  a damaged PNG: the message on the main screen
    error_not_cxr   a photograph (scikit-image's cat): the not-a-chest-X-ray warning on the report screen

Images: the real IU X-Ray sample shipped in the package (CC BY-NC-ND 4.0, see its ATTRIBUTION.md). Each
scene runs the real app in its own process (Kivy cannot restart in one), with a temporary HOME holding a
fresh copy of one history (so the data folder reads ~/.config/edgecap) and a temporary KIVY_HOME. Sizes are
in dp: --density 2 renders twice the pixels.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {"phone": (412, 915), "tablet": (1280, 800)}


def _env(kivy_home: Path, density: float) -> dict:
    env = dict(
        os.environ,
        KIVY_HOME=str(kivy_home),
        KIVY_NO_ARGS="1",
        SDL_VIDEODRIVER="offscreen",
        KCFG_KIVY_LOG_LEVEL="warning",
        KIVY_METRICS_DENSITY=str(density),
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    env.pop("DISPLAY", None)
    env.pop("XDG_CONFIG_HOME", None)
    return env


def render(
    scene: str,
    out: Path | None,
    size: tuple[int, int],
    home: Path,
    env: dict,
    bundle: str | None,
    image: Path | None = None,
    lateral: Path | None = None,
) -> None:
    """One app process with HOME=home: its data folder is home/.config/edgecap, shown as ~/.config/edgecap."""
    (home / ".config").mkdir(parents=True, exist_ok=True)
    env = {**env, "HOME": str(home)}
    cmd = [sys.executable, "-m", "edgecap.edge_app.headless", "--scene", scene, "--size", f"{size[0]}x{size[1]}"]
    if out is not None:
        cmd += ["--screenshot", str(out)]
    if bundle:
        cmd += ["--bundle", bundle]
    if image:
        cmd += ["--image", str(image)]
    if lateral:
        cmd += ["--lateral", str(lateral)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise SystemExit(f"{scene} {size}: exit {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    ap.add_argument("--bundle", help="bundle folder (default: the bundle the app picks: the built-in one)")
    ap.add_argument("--density", type=float, default=1.0, help="pixels per dp (1: the PNG is the dp size)")
    ap.add_argument("--only", nargs="*", help="render only these scenes")
    a = ap.parse_args()

    import cv2
    from skimage import data as skdata

    from edgecap.resources import sample_dir

    images = sample_dir() / "images"
    frontal, lateral = images / "CXR54_IM-2145-1001.png", images / "CXR54_IM-2145-1002.png"
    a.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgecap-shots-") as tmp:
        tmp = Path(tmp)
        env = _env(tmp / "kivy_home", a.density)
        cat, broken = tmp / "photo.png", tmp / "damaged-cxr.png"
        cv2.imwrite(str(cat), skdata.chelsea()[:, :, ::-1])  # RGB -> BGR for OpenCV
        broken.write_bytes((images / "CXR25_IM-1024-2001.png").read_bytes()[:3000])  # a cut-short PNG

        # one history for every scene: a few real studies and the photograph, oldest first
        seeded = tmp / "seeded"
        t0 = time.time()
        for img, lat in (
            (images / "CXR100_IM-0002-2001.png", None),
            (cat, None),
            (images / "CXR799_IM-2333-1001.png", None),
            (images / "CXR25_IM-1024-2001.png", None),
        ):
            render("report", None, SIZES["phone"], seeded, env, a.bundle, img, lat)
        print(f"history seeded in {time.time() - t0:.0f} s")

        scenes = {
            "main": dict(image=frontal, lateral=lateral),
            "report": dict(image=frontal, lateral=lateral),
            "history": dict(),
            "settings": dict(),
            "error_unreadable": dict(image=broken),
            "error_not_cxr": dict(image=cat),
        }
        for name, kw in scenes.items():
            if a.only and name not in a.only:
                continue
            scene = "error" if name.startswith("error") else name
            for size_name, dp_size in SIZES.items():
                px = (round(dp_size[0] * a.density), round(dp_size[1] * a.density))
                home = tmp / f"{name}_{size_name}"
                shutil.copytree(seeded, home)
                out = a.out / f"{name}_{size_name}.png"
                render(scene, out.resolve(), px, home, env, a.bundle, kw.get("image"), kw.get("lateral"))
                print(out)


if __name__ == "__main__":
    main()
