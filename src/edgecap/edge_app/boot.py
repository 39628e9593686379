"""Kivy settings that must be made before Kivy opens its window (importing edgecap.edge_app.app does).

    configure_kivy(size=(412, 915), headless=True)
    from edgecap.edge_app.app import EdgecapApp

Environment read by Kivy, set only where the caller has not set it: KIVY_NO_ARGS=1 (the command line belongs
to Typer), KCFG_KIVY_LOG_LEVEL=warning (a quiet console), and for headless runs SDL_VIDEODRIVER=offscreen
(renders without a display; Kivy's SDL2 wheel includes it). Screen density: KIVY_METRICS_DENSITY.

Quiet start (KivyStartupNoise, a filter on Kivy's logger): on Linux Kivy imports every input provider when it
starts and logs a 13-line "[ERROR] [Input] MTDev is not supported" traceback where libmtdev is not installed
(the multitouch driver; the app does not use it), and on the first run it logs its own config file's creation
as "Older configuration version detected (0 instead of 27)" and "Upgrading ...". Neither says anything about
the app: both are dropped. Any other Kivy warning or error still shows; EDGECAP_VERBOSE=1 shows everything.
"""

from __future__ import annotations

import logging
import os

from edgecap.runtime.native_logs import verbose


def parse_size(text: str) -> tuple[int, int]:
    """'412x915' -> (412, 915); raises ValueError."""
    parts = text.lower().replace(" ", "").split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"size must look like 412x915 (width x height in pixels), got {text!r}")
    w, h = int(parts[0]), int(parts[1])
    if not (200 <= w <= 8192 and 200 <= h <= 8192):
        raise ValueError(f"size {w}x{h}: each side must be 200 to 8192 pixels")
    return w, h


class KivyStartupNoise(logging.Filter):
    """Kivy's start-up records that are not about the app (see the module doc): the mtdev provider failing to
    load its missing library, Kivy's notes on (re)writing its own config.ini."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if message.startswith("Input: MTDev is not supported") and record.exc_info:
            return not isinstance(record.exc_info[1], OSError)  # OSError: libmtdev.so.1 cannot be opened
        return not message.startswith(("Config: Older configuration version", "Config: Upgrading"))


def quiet_kivy_startup() -> None:
    """Add KivyStartupNoise to Kivy's logger (logging's "kivy", the same before and after Kivy is imported) once;
    nothing with EDGECAP_VERBOSE=1."""
    logger = logging.getLogger("kivy")
    if not verbose() and not any(isinstance(f, KivyStartupNoise) for f in logger.filters):
        logger.addFilter(KivyStartupNoise())


def configure_kivy(size: tuple[int, int] | None = None, headless: bool = False) -> None:
    if "kivy.core.window" in __import__("sys").modules:
        raise RuntimeError("configure_kivy must run before Kivy's window is created")
    quiet_kivy_startup()  # before the first Kivy import: it logs both while it loads
    os.environ.setdefault("KIVY_NO_ARGS", "1")
    os.environ.setdefault("KCFG_KIVY_LOG_LEVEL", "warning")
    if headless:
        os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")
    from kivy.config import Config

    if size is not None:
        Config.set("graphics", "width", str(size[0]))
        Config.set("graphics", "height", str(size[1]))
    Config.set("graphics", "minimum_width", "320")
    Config.set("graphics", "minimum_height", "320")
    Config.set("kivy", "exit_on_escape", "0")  # Escape / Android back goes back a screen, never quits by accident
    Config.set("input", "mouse", "mouse,disable_multitouch")  # no red multitouch dots on right click
