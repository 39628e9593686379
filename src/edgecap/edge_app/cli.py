"""`edgecap app`: the point-of-care app, or a headless render of it. The lead registers `app_command`:

    app.command("app", help="The point-of-care app (Kivy), or a headless screenshot of a report.")(app_command)

    edgecap app [--bundle PATH] [--data-dir DIR] [--image PATH [--lateral PATH]] [--size WxH]
    edgecap app --image cxr.png [--lateral lat.dcm] --screenshot out.png [--size 412x915]

Exit status (headless): 0 the report was rendered (a not-a-chest-X-ray warning is printed, not an error);
2 bad usage, an unreadable image or no usable bundle (shown on screen and printed); 1 anything else
(a timeout, a screenshot that cannot be written). Kivy is imported only here, inside the command.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Optional

import typer


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def app_command(
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="Bundle folder (with manifest.json) for this "
                                          "session. Default: the one chosen in Settings, else the built-in bundle."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Where history, settings and exports are kept "
                                            "(default: the app's data folder, e.g. ~/.config/edgecap)."),
    image: Optional[Path] = typer.Option(None, "--image", help="Open this frontal chest X-ray (PNG, JPEG, DICOM)."),
    lateral: Optional[Path] = typer.Option(None, "--lateral", help="Also open this lateral view."),
    screenshot: Optional[Path] = typer.Option(None, "--screenshot", help="Headless: generate the report for "
                                              "--image, save a PNG of the app to this path and exit."),
    size: Optional[str] = typer.Option(None, "--size", help="Window size in pixels, WIDTHxHEIGHT (e.g. 412x915 "
                                       "phone portrait, 1280x800 tablet landscape). Headless default 412x915."),
    timeout: float = typer.Option(180.0, "--timeout", help="Headless: give up after this many seconds."),
) -> None:
    """Open a chest X-ray, generate the report on this device, keep a history; or render it headless."""
    from edgecap.edge_app.boot import parse_size

    try:
        wh = parse_size(size) if size else None
    except ValueError as e:
        raise _fail(str(e))
    if lateral is not None and image is None:
        raise _fail("--lateral needs --image (the frontal view)")
    if screenshot is not None and image is None:
        raise _fail("--screenshot needs --image: the headless mode renders the report of that image")
    if screenshot is not None and screenshot.suffix.lower() != ".png":
        raise _fail(f"--screenshot must be a .png file, got {screenshot}")
    if importlib.util.find_spec("kivy") is None:
        raise _fail("the app needs Kivy: pip install 'edgecap[app]'")
    from edgecap.edge_app import headless

    if screenshot is not None:
        code = headless.run(headless.study_script(str(image), str(lateral) if lateral else None), screenshot,
                            wh or (412, 915), str(bundle) if bundle else None, str(data_dir) if data_dir else None,
                            timeout, headless=True)
        if code:
            raise typer.Exit(code)
        return
    from edgecap.edge_app.boot import configure_kivy

    configure_kivy(wh, headless=False)
    from edgecap.edge_app.app import EdgecapApp

    driver = None
    if image is not None:  # open the views, then leave the app to the person
        driver = headless.Driver(headless.study_script(str(image), str(lateral) if lateral else None, generate=False),
                                 stop=False)
    EdgecapApp(bundle=str(bundle) if bundle else None, data_dir=str(data_dir) if data_dir else None,
               driver=driver).run()
    sys.stdout.flush()
