"""Kivy settings that must be made before Kivy opens its window (importing edgecap.edge_app.app does).

    configure_kivy(size=(412, 915), headless=True)
    from edgecap.edge_app.app import EdgecapApp

Environment read by Kivy, set only where the caller has not set it: KIVY_NO_ARGS=1 (the command line belongs
to Typer), KCFG_KIVY_LOG_LEVEL=warning (a quiet console), and for headless runs SDL_VIDEODRIVER=offscreen
(renders without a display; Kivy's SDL2 wheel includes it). Screen density: KIVY_METRICS_DENSITY.
"""

from __future__ import annotations

import os


def parse_size(text: str) -> tuple[int, int]:
    """'412x915' -> (412, 915); raises ValueError."""
    parts = text.lower().replace(" ", "").split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"size must look like 412x915 (width x height in pixels), got {text!r}")
    w, h = int(parts[0]), int(parts[1])
    if not (200 <= w <= 8192 and 200 <= h <= 8192):
        raise ValueError(f"size {w}x{h}: each side must be 200 to 8192 pixels")
    return w, h


def configure_kivy(size: tuple[int, int] | None = None, headless: bool = False) -> None:
    if "kivy.core.window" in __import__("sys").modules:
        raise RuntimeError("configure_kivy must run before Kivy's window is created")
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
