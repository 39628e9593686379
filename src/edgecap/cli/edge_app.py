"""`edgecap app`: the point-of-care app, or a headless render of it.

    edgecap app [--bundle PATH] [--data-dir DIR] [--image PATH [--lateral PATH]] [--size WxH]
    edgecap app --image cxr.png [--lateral lat.dcm] --screenshot out.png [--size 412x915]

Exit status (headless): 0 the report was rendered (a not-a-chest-X-ray warning is printed, not an error);
2 bad usage, an unreadable image or no usable bundle (shown on screen and printed); 1 anything else
(a timeout, a screenshot that cannot be written). Kivy is imported only here, inside the command.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from edgecap.cli.common import bundle_option, fail, require_module

HEADLESS_SIZE = (412, 915)  # phone portrait, the headless window when --size is not given


def app_command(
    bundle: Optional[Path] = bundle_option("Bundle folder (with manifest.json) for this session. Default: the one "
                                           "chosen in Settings, else the built-in bundle."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Where history, settings and exports are kept "
                                                                     "(default: the app's data folder, e.g. "
                                                                     "~/.config/edgecap)."),
    image: Optional[Path] = typer.Option(None, "--image", help="Open this frontal chest X-ray (PNG, JPEG, DICOM)."),
    lateral: Optional[Path] = typer.Option(None, "--lateral", help="Also open this lateral view."),
    screenshot: Optional[Path] = typer.Option(None, "--screenshot", help="Headless: generate the report for --image, "
                                                                         "save a PNG of the app to this path and "
                                                                         "exit."),
    size: Optional[str] = typer.Option(None, "--size", help="Window size in pixels, WIDTHxHEIGHT (e.g. 412x915 phone "
                                                            "portrait, 1280x800 tablet landscape). Headless default "
                                                            "412x915."),
    timeout: float = typer.Option(180.0, "--timeout", help="Headless: give up after this many seconds."),
) -> None:
    """Open a chest X-ray, generate the report on this device, keep a history; or render it headless."""
    wh = _check(image, lateral, screenshot, size)
    from edgecap.edge_app import headless

    views = (str(image), str(lateral) if lateral else None)
    bundle_s, data_s = (str(bundle) if bundle else None), (str(data_dir) if data_dir else None)
    if screenshot is not None:
        code = headless.run(
            headless.study_script(*views), screenshot, wh or HEADLESS_SIZE, bundle_s, data_s, timeout, headless=True
        )
        if code:
            raise typer.Exit(code)
        return
    from edgecap.edge_app.boot import configure_kivy

    configure_kivy(wh, headless=False)
    from edgecap.edge_app.app import EdgecapApp

    driver = None
    if image is not None:  # open the views, then leave the app to the person
        driver = headless.Driver(headless.study_script(*views, generate=False), stop=False)
    EdgecapApp(bundle=bundle_s, data_dir=data_s, driver=driver).run()
    sys.stdout.flush()


def _check(
    image: Optional[Path], lateral: Optional[Path], screenshot: Optional[Path], size: Optional[str]
) -> Optional[tuple[int, int]]:
    """Usage errors (exit 2) before Kivy is touched; the parsed --size."""
    from edgecap.edge_app.boot import parse_size

    try:
        wh = parse_size(size) if size else None
    except ValueError as e:
        fail(str(e))
    if lateral is not None and image is None:
        fail("--lateral needs --image (the frontal view)")
    if screenshot is not None and image is None:
        fail("--screenshot needs --image: the headless mode renders the report of that image")
    if screenshot is not None and screenshot.suffix.lower() != ".png":
        fail(f"--screenshot must be a .png file, got {screenshot}")
    require_module("kivy", "the app needs Kivy: pip install 'edgecap[app]'")
    return wh
