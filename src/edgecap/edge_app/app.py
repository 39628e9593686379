"""The point-of-care app: open a chest X-ray, get the report, offline. Kivy; runtime only (no TensorFlow).

    edgecap app [--bundle PATH] [--data-dir DIR]          # the app (desktop, Raspberry Pi)
    edgecap app --image cxr.png --screenshot out.png       # headless: render the report, save, exit

or from Python (configure Kivy before importing this module, see boot.py):

    EdgecapApp(bundle="bundles/int8", data_dir="/tmp/edgecap").run()

Layout: kv/ (KV_FILES: shared looks first, one file per screen; then the window), loaded by load_kv.
State: each screen's own Kivy properties on its Screen (screens/); here only what the screens share: the
bundle, the settings (beam, threads), busy, the window's orientation and the toast. The app decides what
happens; the screens hold and show it.
Inference: worker.CaptionWorker on its own thread; results come back through @mainthread, so the UI never
waits on the model. Cancel is cooperative (worker.py): the result of a cancelled job is discarded.
Storage: store.HistoryStore (SQLite) and settings.json in `data_dir` (default: Kivy's user_data_dir,
app-private storage on Android), nothing leaves the device.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path

from kivy.app import App
from kivy.clock import Clock, mainthread
from kivy.core.window import Window
from kivy.lang import Builder
from kivy.properties import BooleanProperty, NumericProperty, StringProperty
from kivy.uix.screenmanager import Screen
from kivy.utils import platform

from edgecap.edge_app import heatmap
from edgecap.edge_app.messages import Message, sentence, short_path

# the screen classes kv/window.kv names: importing them registers them, and their widgets, with Kivy's Factory
from edgecap.edge_app.screens.chooser import ChooserScreen  # noqa: F401
from edgecap.edge_app.screens.history import HistoryScreen  # noqa: F401
from edgecap.edge_app.screens.main import MainScreen  # noqa: F401
from edgecap.edge_app.screens.report import ReportScreen  # noqa: F401
from edgecap.edge_app.screens.settings import SettingsScreen  # noqa: F401
from edgecap.edge_app.settings import AppSettings, active_bundle, installed_bundles
from edgecap.edge_app.store import HistoryStore
from edgecap.edge_app.worker import CaptionWorker, load_preview
from edgecap.runtime.decoding import DEFAULT_BEAM

KV_DIR = Path(__file__).with_name("kv")
KV_FILES = ("common.kv", "main.kv", "report.kv", "history.kv", "settings.kv", "chooser.kv")  # rules, in order
ROOT_KV = "window.kv"  # the root widget: the ScreenManager and the toast
ANDROID_MIME = ["image/png", "image/jpeg", "application/dicom", "application/octet-stream"]
TOAST_SECONDS = 3.0


class EdgecapApp(App):
    title = "edgecap"

    landscape = BooleanProperty(False)  # wider than tall: two-column layouts
    toast_text = StringProperty("")
    busy = BooleanProperty(False)  # a report is being written (the UI stays live)
    bundle_path = StringProperty("")
    bundle_ready = BooleanProperty(False)
    max_views = NumericProperty(2)  # views the bundle's model takes (1: the lateral slot is off)
    beam = NumericProperty(DEFAULT_BEAM)
    threads = NumericProperty(2)

    def __init__(self, bundle: str | Path | None = None, data_dir: str | Path | None = None, driver=None, **kwargs):
        """bundle: a bundle folder for this session (else the one chosen in Settings, else the default);
        data_dir: where history, settings and exports live (else Kivy's user_data_dir);
        driver: headless.Driver that runs a script once the app has started (tests, screenshots)."""
        super().__init__(**kwargs)
        self._bundle_override = str(bundle) if bundle else None
        self._data_dir = Path(data_dir) if data_dir else None
        self.driver = driver
        self.worker: CaptionWorker | None = None
        self.store: HistoryStore | None = None
        self._job = None
        self._busy_since = 0.0
        self._busy_clock = None
        self._toast_clock = None
        self._previous = "main"

    # ---- life cycle ------------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        if self._data_dir is None:
            try:
                self._data_dir = Path(self.user_data_dir)
            except OSError:  # Kivy makes only the last folder (~/.config/edgecap); ~/.config may be missing
                self._data_dir = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / self.name
        return self._data_dir

    def load_kv(self, filename=None) -> bool:
        """Kivy's hook, run before build() (in place of its default: one file named after the class): the rules
        of KV_FILES, then the window, ROOT_KV, as the root widget."""
        for name in KV_FILES:
            Builder.load_file(str(KV_DIR / name))
        self.root = Builder.load_file(str(KV_DIR / ROOT_KV))
        return True

    def build(self):
        """The widget tree comes from load_kv; here: storage, settings, the worker thread."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        settings_screen = self.screen("settings")
        settings_screen.data_dir_text = short_path(self.data_dir)
        settings_screen.bundles_dir = short_path(self.data_dir / "bundles")
        self.settings = AppSettings.load(self.data_dir)
        self.beam, self.threads = self.settings.beam, self.settings.threads
        self.store = HistoryStore(self.data_dir / "history.sqlite3")
        self.worker = CaptionWorker(on_done=mainthread(self._on_job_done))
        chooser = self.screen("chooser")
        chooser.start_folder = _start_folder()
        try:
            from edgecap.resources import sample_image

            chooser.sample_path = str(sample_image()) if sample_image().is_file() else ""
        except Exception:
            chooser.sample_path = ""
        Window.bind(size=self._on_window_size, on_keyboard=self._on_keyboard, on_drop_file=self._on_drop_file)
        self._on_window_size(Window, Window.size)
        return self.root  # built by load_kv

    def screen(self, name: str) -> Screen:
        """The screen called `name`: main, report, history, settings or chooser (screens/)."""
        return self.root.ids.sm.get_screen(name)

    def on_start(self):
        self._apply_bundle()
        self.refresh_history()
        if platform == "android":
            _request_android_permissions()
        if self.driver is not None:
            self.driver.start(self)

    def on_pause(self):
        return True  # Android: keep the state; the worker thread simply waits

    def on_resume(self):
        pass

    def on_stop(self):  # Kivy may call it twice on exit
        if self.worker is not None:
            self.worker.shutdown(timeout=2.0)
            self.worker = None
        if self.store is not None:
            self.store.close()
            self.store = None

    def _on_window_size(self, window, size):
        w, h = size
        self.landscape = w > h

    def _on_keyboard(self, window, key, *args):
        if key == 27:  # Escape on desktop, the back button on Android
            current = self.root.ids.sm.current
            if current != "main":
                self.back()
                return True
            return False  # Android: leave the app
        return False

    def _on_drop_file(self, window, path, *args):
        self.choose_file(path.decode() if isinstance(path, bytes) else str(path), "frontal")

    # ---- navigation ------------------------------------------------------------------------------
    def go(self, name: str) -> None:
        sm = self.root.ids.sm
        if sm.current == name:
            return
        if name == "history":
            self.refresh_history()
        if name == "settings":
            self._fill_settings()
        if sm.current not in ("chooser", name):
            self._previous = sm.current
        sm.transition.direction = "left" if name != "main" else "right"
        sm.current = name

    def back(self) -> None:
        sm = self.root.ids.sm
        target = self._previous if self._previous != sm.current else "main"
        if sm.current in ("settings", "history") and target not in ("main", "report"):
            target = "main"
        self._previous = "main"
        sm.transition.direction = "right"
        sm.current = target

    def toast(self, text: str, seconds: float = TOAST_SECONDS) -> None:
        self.toast_text = text
        if self._toast_clock is not None:
            self._toast_clock.cancel()
        self._toast_clock = Clock.schedule_once(lambda dt: setattr(self, "toast_text", ""), seconds)

    # ---- choosing images -------------------------------------------------------------------------
    def open_chooser(self, view: str) -> None:
        """Android: the system picker (plyer). Elsewhere: Kivy's file chooser screen."""
        if self.busy:
            return
        if platform == "android":
            try:
                from plyer import filechooser

                filechooser.open_file(
                    on_selection=mainthread(lambda sel: sel and self.choose_file(sel[0], view)),
                    mime_type=ANDROID_MIME,
                    multiple=False,
                )
                return
            except Exception as e:  # no plyer or no picker: fall back to Kivy's chooser
                self.toast(f"System picker unavailable ({type(e).__name__}); using the built-in one.")
        chooser = self.screen("chooser")
        chooser.view = view
        current = self.screen("main").path(view)
        if current and Path(current).parent.is_dir():
            chooser.ids.chooser.path = str(Path(current).parent)
        self.go("chooser")

    def choose_file(self, path: str | Path, view: str = "frontal") -> None:
        """Use `path` as the frontal or lateral view: decode a preview on a thread, back to the main screen."""
        if view == "lateral" and self.max_views < 2:
            self.toast("This model uses the frontal view only.")
            return
        path = str(path)
        self.screen("main").open_file(view, path)
        self.go("main")
        load_preview(path, view, mainthread(self._on_preview))

    def _on_preview(self, p) -> None:
        main = self.screen("main")
        if main.path(p.view) != p.path:
            return  # a newer choice replaced this one
        main.show_preview(p)
        if p.error is not None:
            self.show_error(p.error, view=p.view)

    def show_error(self, message: Message, view: str = "study") -> None:
        """On the main screen: a bundle that fails to load (when the first report is asked for) makes the
        bundle unusable; anything else is a problem with the study (`view`: the view whose file caused it)."""
        if message.code in ("bundle", "interpreter"):
            self.screen("main").show_bundle_problem(message.title, message.detail)
            self.bundle_ready = False
            return
        self.screen("main").show_error(message, view)

    # ---- generating ------------------------------------------------------------------------------
    def generate(self) -> None:
        main = self.screen("main")
        if self.busy or not main.frontal_path or not self.bundle_ready:
            return
        main.clear_error()
        self._job = self.worker.submit(
            main.frontal_path, main.lateral_path or None, self.bundle_path or None, int(self.threads), int(self.beam)
        )
        self.busy = True
        self._busy_since = time.perf_counter()
        self._busy_clock = Clock.schedule_interval(self._tick_busy, 1 / 30)
        self._tick_busy(0)

    def cancel(self) -> None:
        """Cooperative: the job is marked cancelled and forgotten; if it is already running, it finishes
        on the worker thread and its result is discarded (worker.py)."""
        if self._job is not None:
            self.worker.cancel(self._job)
            self._job = None
        self._stop_busy()
        self.toast("Cancelled. Nothing was saved.")

    def _tick_busy(self, dt) -> None:
        self.screen("main").show_busy(time.perf_counter() - self._busy_since)

    def _stop_busy(self) -> None:
        self.busy = False
        self.screen("main").status_text = ""
        if self._busy_clock is not None:
            self._busy_clock.cancel()
            self._busy_clock = None

    def _on_job_done(self, result) -> None:
        """On the UI thread (mainthread): show and save the report, or the error in plain words."""
        if result.cancelled or result.job is not self._job:
            return  # cancelled: discarded, as promised
        self._job = None
        self._stop_busy()
        if result.error is not None:
            self.show_error(result.error)
            self.go("main")
            return
        report_id = self.store.add(result.report, result.pngs, result.thumbnail)
        self.show_report(result.report, result.display, result.overlays, report_id, datetime.now())
        self.refresh_history()

    # ---- reports ---------------------------------------------------------------------------------
    def show_report(self, report, display: dict, overlays: dict, report_id: int, when: datetime | None = None):
        """The report screen with `report` (runtime.report.Report; display / overlays: view -> uint8 RGB)."""
        self.screen("report").show(report, display, overlays, report_id, when)
        self.go("report")

    def new_study(self) -> None:
        main = self.screen("main")
        main.clear_view("frontal")
        main.clear_view("lateral")
        main.clear_error()
        self.go("main")

    def open_saved(self, report_id: int) -> None:
        """Show a report from the history (its stored display images; the heatmap is redrawn)."""
        saved = self.store.get(int(report_id))
        if saved is None:
            self.toast("This report is no longer in the history.")
            self.refresh_history()
            return
        r = saved.report
        display = {v: heatmap.decode_png(png) for v, png in saved.images.items()}
        maps = {} if r.flagged else heatmap.view_maps(r.attention, r.attention_layout)
        overlays = {v: heatmap.overlay(display[v], maps[v]) for v in display if v in maps}
        try:
            when = datetime.fromisoformat(saved.item.created).astimezone()
        except ValueError:
            when = None
        self.show_report(r, display, overlays, saved.item.id, when)

    def copy_report(self) -> None:
        report_screen = self.screen("report")
        if report_screen.report is None or report_screen.report.flagged:  # no report to copy (no button either)
            return
        try:
            from kivy.core.clipboard import Clipboard

            Clipboard.copy(report_screen.as_text())
            self.toast("Report copied.")
        except Exception as e:  # no clipboard provider (some headless or kiosk setups)
            self.toast(f"Could not copy: {type(e).__name__}. Use Export text instead.")

    def export_report(self, fmt: str) -> Path | None:
        """Write the report on screen to <data dir>/exports/ as .txt or .json (edgecap-report/1); nothing for a
        flagged study, which has no report."""
        report_screen = self.screen("report")
        if report_screen.report is None or report_screen.report.flagged:  # no report to export (no button either)
            return None
        out = self.data_dir / "exports"
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"edgecap-report-{int(report_screen.report_id):05d}.{fmt}"
        if fmt == "json":
            path.write_text(json.dumps(report_screen.report.to_dict(), indent=2) + "\n")
        else:
            path.write_text(report_screen.as_text() + "\n")
        self.toast(f"Saved {path}")
        return path

    def refresh_history(self) -> None:
        self.screen("history").show(self.store.list())

    # ---- bundle and settings ---------------------------------------------------------------------
    def _apply_bundle(self) -> None:
        main = self.screen("main")
        choices = installed_bundles(self.data_dir, self._bundle_override)
        choice = active_bundle(self.settings, choices, self._bundle_override)
        if choice is None or choice.error:
            self.bundle_ready = False
            self.bundle_path = choice.path if choice else ""
            main.bundle_line = "Model: none available"
            main.bundle_notice = ""
            main.show_bundle_problem(
                "No model bundle can be used.",
                f"{choice.error} Choose another bundle in Settings."
                if choice
                else f"No bundle is installed. Copy a bundle folder (with manifest.json) into "
                f"{short_path(self.data_dir / 'bundles')}, or start the app with --bundle PATH.",
            )
            return
        main.show_bundle_problem()
        self.bundle_ready = True
        self.bundle_path = choice.path
        self.max_views = choice.max_views or 1
        if self.max_views < 2:
            main.clear_view("lateral")
        main.bundle_line = (
            f"Model: {choice.name} · {choice.mode} · beam {int(self.beam)} · {int(self.threads)} "
            f"thread{'s' if self.threads > 1 else ''}"
        )
        main.bundle_notice = sentence(choice.notice)
        self.worker.preload(self.bundle_path, int(self.threads))

    def set_bundle(self, path: str) -> None:
        self.settings.bundle = path
        self._bundle_override = None  # a choice made in Settings wins over --bundle from now on
        self.settings.save(self.data_dir)
        self._apply_bundle()
        self._fill_settings()

    def set_beam(self, beam: int) -> None:
        self.beam = self.settings.beam = int(beam)
        self.settings.save(self.data_dir)
        self._apply_bundle()

    def set_threads(self, threads: int) -> None:
        self.threads = self.settings.threads = int(threads)
        self.settings.save(self.data_dir)
        self._apply_bundle()

    def _fill_settings(self) -> None:
        self.screen("settings").show(
            installed_bundles(self.data_dir, self._bundle_override),
            self.bundle_path,
            int(self.beam),
            int(self.threads),
            self.set_bundle,
            self.set_beam,
            self.set_threads,
        )


def _start_folder() -> str:
    for candidate in (Path.home() / "Pictures", Path.home() / "Downloads", Path.home(), Path.cwd()):
        if candidate.is_dir():
            return str(candidate)
    return "/"


def _request_android_permissions() -> None:
    try:
        from android.permissions import Permission, request_permissions  # python-for-android

        names = ("READ_MEDIA_IMAGES", "READ_EXTERNAL_STORAGE")
        wanted = [getattr(Permission, n) for n in names if hasattr(Permission, n)]
        request_permissions(wanted)
    except Exception:
        pass
