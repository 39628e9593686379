"""Run the real app without a person: a script of steps on Kivy's clock, then a screenshot, then exit.

    edgecap app --image cxr.png [--lateral lat.dcm] --screenshot out.png [--size 412x915]
    python -m edgecap.edge_app.headless --scene history --size 1280x800 --screenshot h.png --data-dir D

Used by `edgecap app --screenshot` (scene "report"), by scripts/app_screenshots.py (every scene) and by
tests/test_edge_app.py. Rendering uses SDL's offscreen driver, so no display is needed. Kivy cannot be
restarted inside one process: run one app per process.

A script is a generator function `script(app, driver)`; it drives the app through the same methods the
buttons call and yields what to wait for:

    yield 0.5                        # seconds
    yield lambda: not app.busy       # until true (polled every 50 ms; driver.timeout for the whole run)

When it returns, the driver waits for the layout to settle, saves the screenshot from the window's
on_flip (a Clock-time Window.screenshot() can be black), and stops the app. `driver.exit_code` becomes the
process status: 0, or the code the script set (2: the study could not be read or no bundle; 1: anything
else, including a timeout).
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Iterator

SETTLE_SECONDS = 0.4  # after the script: animations (screen transitions: 0.4 s) and text layout
POLL_SECONDS = 0.05


class Driver:
    def __init__(
        self,
        script: Callable[..., Iterator],
        screenshot: str | Path | None = None,
        timeout: float = 180.0,
        stop: bool = True,
    ):
        """stop: quit the app when the script is done (False: hand the app over to the person at the screen)."""
        self.script, self.screenshot = script, (Path(screenshot) if screenshot else None)
        self.timeout, self.stop = timeout, stop
        self.exit_code = 0
        self.error = ""  # printed by run() when the run fails
        self.app = None
        self._gen = None
        self._deadline = 0.0

    def start(self, app) -> None:
        from kivy.clock import Clock

        self.app = app
        self._deadline = time.monotonic() + self.timeout
        self._gen = self.script(app, self)
        Clock.schedule_once(lambda dt: self._advance(), 0.1)

    def fail(self, message: str, code: int = 1) -> None:
        """Mark the run failed (the script carries on, so the screen shows the failure for the screenshot)."""
        self.error, self.exit_code = message, code

    def _advance(self) -> None:
        from kivy.clock import Clock

        try:
            wait = next(self._gen)
        except StopIteration:
            Clock.schedule_once(lambda dt: self._snapshot(), SETTLE_SECONDS)
            return
        except Exception:
            self.fail(f"the headless script failed:\n{traceback.format_exc()}")
            Clock.schedule_once(lambda dt: self._snapshot(), SETTLE_SECONDS)
            return
        if callable(wait):
            self._poll(wait)
        else:
            Clock.schedule_once(lambda dt: self._advance(), float(wait or 0))

    def _poll(self, condition: Callable[[], bool]) -> None:
        from kivy.clock import Clock

        if condition():
            Clock.schedule_once(lambda dt: self._advance(), 0)
        elif time.monotonic() > self._deadline:
            self.fail(f"timed out after {self.timeout:.0f} s", 1)
            Clock.schedule_once(lambda dt: self._snapshot(), SETTLE_SECONDS)
        else:
            Clock.schedule_once(lambda dt: self._poll(condition), POLL_SECONDS)

    def _snapshot(self) -> None:
        from kivy.core.window import Window

        if self.screenshot is None:
            if self.stop:
                self.app.stop()
            return

        def on_flip(*args):
            Window.unbind(on_flip=on_flip)
            try:
                save_window_png(self.screenshot)
            except Exception as e:
                self.fail(f"could not save the screenshot {self.screenshot}: {e}", 1)
            self.app.stop()

        Window.bind(on_flip=on_flip)
        Window.canvas.ask_update()


def save_window_png(path: Path) -> None:
    """The window's current frame buffer -> PNG (call from on_flip)."""
    import cv2
    import numpy as np
    from kivy.core.window import Window
    from kivy.graphics.opengl import GL_RGB, GL_UNSIGNED_BYTE, glReadPixels

    w, h = Window.size
    data = glReadPixels(0, 0, w, h, GL_RGB, GL_UNSIGNED_BYTE)
    rgb = np.frombuffer(data, np.uint8).reshape(h, w, 3)[::-1]  # GL rows start at the bottom
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f"cannot write {path}")


# ---- scripts -------------------------------------------------------------------------------------
def study_script(image: str, lateral: str | None = None, generate: bool = True):
    """Open the views as a person would (file chosen -> preview), press Generate, wait for the report.
    Failures stay on screen (error card) and set the exit code."""

    def script(app, driver):
        main = app.screen("main")
        app.choose_file(image, "frontal")
        if lateral:
            app.choose_file(lateral, "lateral")
        yield lambda: not main.frontal_loading and not main.lateral_loading
        if not app.bundle_ready:
            driver.fail(f"{main.bundle_problem_title} {main.bundle_problem_detail}".strip(), 2)
            return
        if main.error_title:
            driver.fail(f"{main.error_title} {main.error_detail}".strip(), 2)
            return
        if not generate:
            return
        main.ids.generate_button.dispatch("on_release")
        yield lambda: not app.busy
        report = app.screen("report").report
        if not app.bundle_ready:
            driver.fail(f"{main.bundle_problem_title} {main.bundle_problem_detail}".strip(), 2)
        elif main.error_title:
            driver.fail(f"{main.error_title} {main.error_detail}".strip(), 2 if main.error_code != "internal" else 1)
        elif report is not None and report.flagged:
            print(f"warning: {report.render_text().splitlines()[0]}", file=sys.stderr)

    return script


def scene_script(scene: str, image: str | None, lateral: str | None):
    """Scenes for scripts/app_screenshots.py: main (views open, before Generate), report, error (study that
    cannot be used: shows its message), history, settings."""
    if scene in ("report", "error"):
        return _expect_failure(study_script(image, lateral)) if scene == "error" else study_script(image, lateral)
    if scene == "main":
        return study_script(image, lateral, generate=False) if image else _idle

    def script(app, driver):
        if image:  # make sure the history has this study
            yield from study_script(image, lateral)(app, driver)
        app.go(scene)
        yield 0.1

    return script


def _idle(app, driver):
    yield 0.1


def _expect_failure(inner):
    """An error scene succeeds when the app shows an error or a not-a-chest-X-ray warning."""

    def script(app, driver):
        yield from inner(app, driver)
        main, report = app.screen("main"), app.screen("report").report
        shown = bool(main.error_title or main.bundle_problem_title) or (report is not None and report.flagged)
        driver.exit_code, driver.error = (0, "") if shown else (1, "expected an error on screen, none shown")

    return script


def run(
    script,
    screenshot: str | Path | None,
    size: tuple[int, int] | None = None,
    bundle: str | None = None,
    data_dir: str | None = None,
    timeout: float = 180.0,
    headless: bool = True,
) -> int:
    """Configure Kivy, run the app with `script`, return the exit code (errors printed to stderr).
    headless False: a normal window that stays open after the script (used by `edgecap app --image`)."""
    from edgecap.edge_app.boot import configure_kivy

    configure_kivy(size, headless=headless)
    from edgecap.edge_app.app import EdgecapApp

    driver = Driver(script, screenshot, timeout, stop=headless)
    EdgecapApp(bundle=bundle, data_dir=data_dir, driver=driver).run()
    if driver.error:
        print(f"error: {driver.error}", file=sys.stderr)
    elif screenshot:
        print(f"screenshot: {screenshot}")
    return driver.exit_code


def main(argv: list[str] | None = None) -> int:
    import argparse

    from edgecap.edge_app.boot import parse_size

    p = argparse.ArgumentParser(description="Render one scene of the edgecap app to a PNG (headless).")
    p.add_argument("--scene", default="report", choices=("main", "report", "error", "history", "settings"))
    p.add_argument("--image")
    p.add_argument("--lateral")
    p.add_argument("--screenshot")
    p.add_argument("--size", default="412x915")
    p.add_argument("--bundle")
    p.add_argument("--data-dir")
    p.add_argument("--timeout", type=float, default=180.0)
    a = p.parse_args(argv)
    return run(
        scene_script(a.scene, a.image, a.lateral), a.screenshot, parse_size(a.size), a.bundle, a.data_dir, a.timeout
    )


if __name__ == "__main__":
    sys.exit(main())
