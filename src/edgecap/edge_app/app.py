"""The point-of-care app: open a chest X-ray, get the report, offline. Kivy; runtime only (no TensorFlow).

    edgecap app [--bundle PATH] [--data-dir DIR]          # the app (desktop, Raspberry Pi)
    edgecap app --image cxr.png --screenshot out.png       # headless: render the report, save, exit

or from Python (configure Kivy before importing this module, see boot.py):

    EdgecapApp(bundle="bundles/int8", data_dir="/tmp/edgecap").run()

Layout: edgecap.kv (named after this class). State: the Kivy properties below; the .kv file binds to them.
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
from kivy.factory import Factory
from kivy.properties import BooleanProperty, ListProperty, NumericProperty, ObjectProperty, StringProperty
from kivy.utils import platform

from edgecap import __version__
from edgecap.edge_app import heatmap
from edgecap.edge_app.messages import FLAGGED_NOTE, Message, finding_rows, warning_message
from edgecap.edge_app.screens import FindingRow, NoticeCard, texture_from_rgb  # noqa: F401 (registers the kv classes)
from edgecap.edge_app.settings import BEAMS, AppSettings, active_bundle, installed_bundles, max_threads
from edgecap.edge_app.store import HistoryStore
from edgecap.edge_app.worker import CaptionWorker, load_preview

IMAGE_FILTERS = ["*.png", "*.PNG", "*.jpg", "*.JPG", "*.jpeg", "*.JPEG", "*.dcm", "*.DCM", "*.dicom"]
ANDROID_MIME = ["image/png", "image/jpeg", "application/dicom", "application/octet-stream"]
TOAST_SECONDS = 3.0


class EdgecapApp(App):
    title = "edgecap"

    # ---- window ----
    landscape = BooleanProperty(False)  # wider than tall: two-column layouts
    toast_text = StringProperty("")
    # ---- the study being prepared (main screen) ----
    frontal_path = StringProperty("")
    lateral_path = StringProperty("")
    frontal_texture = ObjectProperty(None, allownone=True)
    lateral_texture = ObjectProperty(None, allownone=True)
    frontal_loading = BooleanProperty(False)
    lateral_loading = BooleanProperty(False)
    frontal_info = StringProperty("")
    lateral_info = StringProperty("")
    error_title = StringProperty("")  # the last problem with the study, in plain words ("" = none)
    error_detail = StringProperty("")
    error_code = StringProperty("")
    busy = BooleanProperty(False)  # a report is being written (the UI stays live)
    status_text = StringProperty("")
    pulse = NumericProperty(0.0)  # 0..1, drives the busy bar
    # ---- bundle and settings ----
    bundle_path = StringProperty("")
    bundle_ready = BooleanProperty(False)
    bundle_line = StringProperty("")
    bundle_notice = StringProperty("")
    bundle_problem_title = StringProperty("")  # why no bundle can be used ("" = one can)
    bundle_problem_detail = StringProperty("")
    max_views = NumericProperty(2)
    beam = NumericProperty(3)
    threads = NumericProperty(2)
    cores = NumericProperty(os.cpu_count() or 1)
    bundles_dir = StringProperty("")
    data_dir_text = StringProperty("")
    version = StringProperty(__version__)
    # ---- the report on screen ----
    report = ObjectProperty(None, allownone=True)  # runtime.report.Report
    report_id = NumericProperty(0)  # its history row
    report_text = StringProperty("")
    report_flagged = BooleanProperty(False)
    report_notice = StringProperty("")
    report_time = StringProperty("")
    report_bundle = StringProperty("")
    report_inputs = StringProperty("")
    report_when = StringProperty("")
    report_views = ListProperty([])
    report_view = StringProperty("frontal")
    report_texture = ObjectProperty(None, allownone=True)
    report_has_heatmap = BooleanProperty(False)
    report_has_findings = BooleanProperty(False)
    show_heatmap = BooleanProperty(True)
    # ---- history and chooser ----
    history_data = ListProperty([])
    history_count = NumericProperty(0)
    chooser_start = StringProperty("")
    chooser_filters = ListProperty(IMAGE_FILTERS)
    sample_path = StringProperty("")

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
        self._error_view = ""  # the view whose file caused error_title ("" : not a file problem)
        self._report_textures: dict[str, tuple] = {}
        self._thumbs: dict[int, object] = {}

    # ---- life cycle ------------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        if self._data_dir is None:
            try:
                self._data_dir = Path(self.user_data_dir)
            except OSError:  # Kivy makes only the last folder (~/.config/edgecap); ~/.config may be missing
                self._data_dir = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / self.name
        return self._data_dir

    def build(self):
        """The widget tree comes from edgecap.kv; here: storage, settings, the worker thread."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir_text = short_path(self.data_dir)
        self.bundles_dir = short_path(self.data_dir / "bundles")
        self.settings = AppSettings.load(self.data_dir)
        self.beam, self.threads = self.settings.beam, self.settings.threads
        self.store = HistoryStore(self.data_dir / "history.sqlite3")
        self.worker = CaptionWorker(on_done=mainthread(self._on_job_done))
        self.chooser_start = _start_folder()
        try:
            from edgecap.resources import sample_image

            self.sample_path = str(sample_image()) if sample_image().is_file() else ""
        except Exception:
            self.sample_path = ""
        Window.bind(size=self._on_window_size, on_keyboard=self._on_keyboard, on_drop_file=self._on_drop_file)
        self._on_window_size(Window, Window.size)
        return self.root  # built from edgecap.kv by App.load_kv before build()

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

                filechooser.open_file(on_selection=mainthread(lambda sel: sel and self.choose_file(sel[0], view)),
                                      mime_type=ANDROID_MIME, multiple=False)
                return
            except Exception as e:  # no plyer or no picker: fall back to Kivy's chooser
                self.toast(f"System picker unavailable ({type(e).__name__}); using the built-in one.")
        screen = self.root.ids.sm.get_screen("chooser")
        screen.view = view
        current = getattr(self, f"{view}_path")
        if current and Path(current).parent.is_dir():
            screen.ids.chooser.path = str(Path(current).parent)
        self.go("chooser")

    def choose_file(self, path: str | Path, view: str = "frontal") -> None:
        """Use `path` as the frontal or lateral view: decode a preview on a thread, back to the main screen."""
        if view == "lateral" and self.max_views < 2:
            self.toast("This model uses the frontal view only.")
            return
        path = str(path)
        setattr(self, f"{view}_path", path)
        setattr(self, f"{view}_texture", None)
        setattr(self, f"{view}_loading", True)
        setattr(self, f"{view}_info", Path(path).name)
        if self._error_view in (view, "study"):
            self.clear_error()
        self.go("main")
        load_preview(path, view, mainthread(self._on_preview))

    def _on_preview(self, p) -> None:
        if getattr(self, f"{p.view}_path") != p.path:
            return  # a newer choice replaced this one
        setattr(self, f"{p.view}_loading", False)
        if p.error is not None:
            self.show_error(p.error, view=p.view)
            setattr(self, f"{p.view}_info", f"Unreadable: {Path(p.path).name}")
            return
        setattr(self, f"{p.view}_texture", texture_from_rgb(p.rgb))
        setattr(self, f"{p.view}_info", f"{p.size[0]} x {p.size[1]} px · {Path(p.path).name}")

    def clear_view(self, view: str) -> None:
        setattr(self, f"{view}_path", "")
        setattr(self, f"{view}_texture", None)
        setattr(self, f"{view}_loading", False)
        setattr(self, f"{view}_info", "")
        if self._error_view in (view, "study"):
            self.clear_error()

    def show_error(self, message: Message, view: str = "study") -> None:
        if message.code in ("bundle", "interpreter"):  # a bundle that fails to load when the first report is asked for
            self.bundle_problem_title, self.bundle_problem_detail = message.title, message.detail
            self.bundle_ready = False
            return
        self.error_title, self.error_detail, self.error_code = message.title, message.detail, message.code
        self._error_view = view

    def clear_error(self) -> None:
        self.error_title = self.error_detail = self.error_code = ""
        self._error_view = ""

    # ---- generating ------------------------------------------------------------------------------
    def generate(self) -> None:
        if self.busy or not self.frontal_path or not self.bundle_ready:
            return
        self.clear_error()
        self._job = self.worker.submit(self.frontal_path, self.lateral_path or None, self.bundle_path or None,
                                       int(self.threads), int(self.beam))
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
        elapsed = time.perf_counter() - self._busy_since
        self.status_text = f"Writing the report...  {elapsed:.1f} s"
        phase = (elapsed / 1.6) % 1.0
        self.pulse = 2 * phase if phase < 0.5 else 2 * (1 - phase)

    def _stop_busy(self) -> None:
        self.busy = False
        self.status_text = ""
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

    # ---- the report screen -----------------------------------------------------------------------
    def show_report(self, report, display: dict, overlays: dict, report_id: int, when: datetime | None = None):
        """Fill the report screen (report: runtime.report.Report; display / overlays: view -> uint8 RGB)."""
        self.report, self.report_id = report, report_id
        self._report_textures = {v: (texture_from_rgb(rgb), texture_from_rgb(overlays[v]) if v in overlays else None)
                                 for v, rgb in display.items()}
        self.report_views = list(display)
        self.report_view = "frontal" if "frontal" in display else next(iter(display), "frontal")
        self.report_has_heatmap = bool(overlays)
        self.report_flagged = bool(report.flagged)
        self.report_text = report.text
        self.report_notice = _sentence(report.bundle.get("notice", ""))
        self.report_time = _time_line(report)
        self.report_bundle = _bundle_line(report.bundle)
        self.report_inputs = _inputs_line(report.inputs)
        self.report_when = when.strftime("%Y-%m-%d %H:%M") if when else ""
        self._update_report_texture()
        screen = self.root.ids.sm.get_screen("report")
        notices = screen.ids.notices
        notices.clear_widgets()
        for card in _notice_cards(report):
            notices.add_widget(card)
        box = screen.ids.findings
        box.clear_widgets()
        rows = finding_rows(report.findings)
        for name, value in rows:
            box.add_widget(FindingRow(name=name, value=value))
        self.report_has_findings = bool(rows)
        screen.ids.report_scroll.scroll_y = 1
        self.go("report")

    def set_report_view(self, view: str) -> None:
        if view in self.report_views:
            self.report_view = view
            self._update_report_texture()

    def set_heatmap(self, on: bool) -> None:
        self.show_heatmap = bool(on)
        self._update_report_texture()

    def _update_report_texture(self) -> None:
        plain, over = self._report_textures.get(self.report_view, (None, None))
        self.report_texture = over if (self.show_heatmap and over is not None) else plain

    def new_study(self) -> None:
        self.clear_view("frontal")
        self.clear_view("lateral")
        self.clear_error()
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

    # ---- copy / export ---------------------------------------------------------------------------
    def report_as_text(self) -> str:
        r = self.report
        if r is None:
            return ""
        lines = [r.render_text(), ""]
        rows = finding_rows(r.findings)
        if rows and not r.flagged:
            lines.append("Structured findings (rule-based, read from the text): "
                         + "; ".join(f"{n}: {v}" for n, v in rows))
        lines += [self.report_inputs, self.report_time, self.report_bundle.replace("\n", " "),
                  f"edgecap {__version__}: {r.bundle.get('notice', '')}"]
        return "\n".join(x for x in lines if x is not None)

    def copy_report(self) -> None:
        if self.report is None:
            return
        try:
            from kivy.core.clipboard import Clipboard

            Clipboard.copy(self.report_as_text())
            self.toast("Report copied.")
        except Exception as e:  # no clipboard provider (some headless or kiosk setups)
            self.toast(f"Could not copy: {type(e).__name__}. Use Export text instead.")

    def export_report(self, fmt: str) -> Path | None:
        """Write the report on screen to <data dir>/exports/ as .txt or .json (edgecap-report/1)."""
        if self.report is None:
            return None
        out = self.data_dir / "exports"
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"edgecap-report-{int(self.report_id):05d}.{fmt}"
        if fmt == "json":
            path.write_text(json.dumps(self.report.to_dict(), indent=2) + "\n")
        else:
            path.write_text(self.report_as_text() + "\n")
        self.toast(f"Saved {path}")
        return path

    # ---- history ---------------------------------------------------------------------------------
    def refresh_history(self) -> None:
        items = self.store.list()
        self.history_count = len(items)
        data = []
        for it in items:
            if it.id not in self._thumbs:
                try:
                    self._thumbs[it.id] = texture_from_rgb(heatmap.decode_png(it.thumbnail))
                except ValueError:
                    self._thumbs[it.id] = None
            first = it.text.split(". ")[0].rstrip(".") + "." if it.text else "(empty report)"
            extras = [it.created_local, Path(it.frontal_name).name + (" + lateral" if it.lateral_name else "")]
            if it.warnings and not it.flagged:
                extras.append(f"{it.warnings} warning" + ("s" if it.warnings > 1 else ""))
            data.append({"report_id": it.id, "title": "Not a chest X-ray?" if it.flagged else first,
                         "subtitle": "  ·  ".join(extras), "flagged": it.flagged, "thumbnail": self._thumbs[it.id]})
        self.history_data = data

    # ---- bundle and settings ---------------------------------------------------------------------
    def _apply_bundle(self) -> None:
        choices = installed_bundles(self.data_dir, self._bundle_override)
        choice = active_bundle(self.settings, choices, self._bundle_override)
        if choice is None or choice.error:
            self.bundle_ready = False
            self.bundle_path = choice.path if choice else ""
            self.bundle_line = "Model: none available"
            self.bundle_notice = ""
            self.bundle_problem_title = "No model bundle can be used."
            self.bundle_problem_detail = (
                f"{choice.error} Choose another bundle in Settings." if choice else
                f"No bundle is installed. Copy a bundle folder (with manifest.json) into {self.bundles_dir}, "
                f"or start the app with --bundle PATH.")
            return
        self.bundle_problem_title = self.bundle_problem_detail = ""
        self.bundle_ready = True
        self.bundle_path = choice.path
        self.max_views = choice.max_views or 1
        if self.max_views < 2:
            self.clear_view("lateral")
        self.bundle_line = f"Model: {choice.name} · {choice.mode} · beam {int(self.beam)} · {int(self.threads)} " \
                           f"thread{'s' if self.threads > 1 else ''}"
        self.bundle_notice = _sentence(choice.notice)
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
        ids = self.root.ids.sm.get_screen("settings").ids
        ids.bundles.clear_widgets()
        choices = installed_bundles(self.data_dir, self._bundle_override)
        if not choices:
            ids.bundles.add_widget(Factory.Muted(text="No bundle installed."))
        for c in choices:
            detail = c.error or " · ".join(x for x in (_sentence(c.notice), short_path(c.path)) if x)
            row = Factory.BundleRow(path=c.path, label=c.label, detail=detail, usable=not c.error,
                                    selected=os.path.realpath(c.path) == os.path.realpath(self.bundle_path or "-"))
            row.bind(on_release=lambda r: r.usable and self.set_bundle(r.path))
            ids.bundles.add_widget(row)
        for box, values, current, setter, group in ((ids.beams, BEAMS, self.beam, self.set_beam, "beam"),
                                                    (ids.threads, range(1, max_threads() + 1), self.threads,
                                                     self.set_threads, "threads")):
            box.clear_widgets()
            for v in values:
                b = Factory.Segment(text=str(v), group=group, state="down" if v == int(current) else "normal")
                b.bind(on_release=lambda btn, v=v, setter=setter: setter(v))
                box.add_widget(b)


# ---- text for the screen -------------------------------------------------------------------------
def short_path(path) -> str:
    """'/home/pi/.config/edgecap' -> '~/.config/edgecap' (shorter on a phone, and no user name on screen)."""
    text, home = str(path), str(Path.home())
    return "~" + text[len(home):] if home not in ("", "/") and (text == home or text.startswith(home + os.sep)) else text


def _sentence(text: str) -> str:
    text = (text or "").strip()
    if not text:
        return ""
    text = text[:1].upper() + text[1:]
    return text if text.endswith(".") else text + "."


def _time_line(report) -> str:
    t = report.timings
    image_ms = t.get("read_ms", 0) + t.get("sanity_ms", 0) + t.get("preprocess_ms", 0)
    return (f"Written in {t.get('total_ms', 0) / 1000:.2f} s on this device (image {image_ms:.0f} ms, "
            f"encoder {t.get('encoder_ms', 0):.0f} ms, decoder {t.get('decoder_ms', 0):.0f} ms for "
            f"{int(t.get('decoder_steps', 0))} steps, beam {report.beam}).")


def _bundle_line(bundle: dict) -> str:
    path = bundle.get("path", "")
    return (f"Model: {Path(path).name or '?'} · {bundle.get('mode', '?')} · {bundle.get('interpreter', '?')}\n"
            f"{short_path(path)}")


def _inputs_line(inputs: dict) -> str:
    parts = [f"Frontal: {Path(inputs['frontal']).name}"] if inputs.get("frontal") else []
    if inputs.get("lateral"):
        parts.append(f"Lateral: {Path(inputs['lateral']).name}")
    return "   ".join(parts)


def _notice_cards(report) -> list:
    """Report warnings -> NoticeCards: one red card when the input does not look like a chest X-ray (its
    reasons in plain words), amber cards for the other warnings."""
    from edgecap.runtime.sanity import NOT_CXR_CODES

    cards = []
    reasons = [w for w in report.warnings if w.code in NOT_CXR_CODES]
    if report.flagged:
        first = warning_message(reasons[0].code, reasons[0].message) if reasons else None
        title = first.title if first else "This does not look like a chest X-ray."
        more = [warning_message(w.code, w.message).title for w in reasons[1:]]
        detail = " ".join([FLAGGED_NOTE] + more + [f"({'; '.join(w.message for w in reasons)})"] if reasons else [FLAGGED_NOTE])
        cards.append(NoticeCard(title=title, detail=detail, level="error", code=reasons[0].code if reasons else "flagged"))
    for w in report.warnings:
        if w.code not in NOT_CXR_CODES:
            m = warning_message(w.code, w.message)
            cards.append(NoticeCard(title=m.title, detail=m.detail, level=m.level, code=m.code))
    return cards


def _start_folder() -> str:
    for candidate in (Path.home() / "Pictures", Path.home() / "Downloads", Path.home(), Path.cwd()):
        if candidate.is_dir():
            return str(candidate)
    return "/"


def _request_android_permissions() -> None:
    try:
        from android.permissions import Permission, request_permissions  # python-for-android

        wanted = [getattr(Permission, n) for n in ("READ_MEDIA_IMAGES", "READ_EXTERNAL_STORAGE") if hasattr(Permission, n)]
        request_permissions(wanted)
    except Exception:
        pass
