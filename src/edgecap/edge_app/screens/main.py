"""Main screen: open the frontal and lateral views, generate. Looks in kv/main.kv.

State per view ("frontal", "lateral"): <view>_path (the file, "" = none), <view>_texture (its preview, None
until decoded), <view>_loading (being decoded on a thread), <view>_info ("512 x 512 px · CXR25.png"). Also the
last problem with the study (error_*, "" = none) and the view whose file caused it, the busy line while a report
is written (status_text; pulse 0..1 moves the bar), and the model line with, when no bundle can be used, why.
The app (app.py) decides what happens (files chosen, the worker, bundles); this screen holds and shows it.
"""

from __future__ import annotations

from pathlib import Path

from kivy.properties import BooleanProperty, NumericProperty, ObjectProperty, StringProperty
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.screenmanager import Screen

from edgecap.edge_app.messages import Message
from edgecap.edge_app.widgets import texture_from_rgb

PULSE_SECONDS = 1.6  # one back-and-forth of the busy bar


class MainScreen(Screen):
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
    status_text = StringProperty("")  # "Writing the report...  1.2 s" while busy
    pulse = NumericProperty(0.0)  # 0..1, drives the busy bar
    bundle_line = StringProperty("")  # "Model: default · int8 · beam 3 · 2 threads"
    bundle_notice = StringProperty("")
    bundle_problem_title = StringProperty("")  # why no bundle can be used ("" = one can)
    bundle_problem_detail = StringProperty("")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._error_view = ""  # the view whose file caused error_title ("study": not one file's problem)

    def path(self, view: str) -> str:
        return getattr(self, f"{view}_path")

    def open_file(self, view: str, path: str) -> None:
        """`path` becomes `view`, its preview being decoded (show_preview follows); its old problem goes."""
        self._show_view(view, path, None, True, Path(path).name)
        self._clear_error_of(view)

    def show_preview(self, preview) -> None:
        """worker.Preview -> the view's image and info line ("Unreadable: name" when it failed)."""
        name = Path(preview.path).name
        if preview.error is not None:
            self._show_view(preview.view, preview.path, None, False, f"Unreadable: {name}")
        else:
            info = f"{preview.size[0]} x {preview.size[1]} px · {name}"
            self._show_view(preview.view, preview.path, texture_from_rgb(preview.rgb), False, info)

    def clear_view(self, view: str) -> None:
        self._show_view(view, "", None, False, "")
        self._clear_error_of(view)

    def _show_view(self, view: str, path: str, texture, loading: bool, info: str) -> None:
        setattr(self, f"{view}_path", path)
        setattr(self, f"{view}_texture", texture)
        setattr(self, f"{view}_loading", loading)
        setattr(self, f"{view}_info", info)

    def _clear_error_of(self, view: str) -> None:
        if self._error_view in (view, "study"):
            self.clear_error()

    def show_error(self, message: Message, view: str = "study") -> None:
        """A problem with the study (`view`: the view whose file caused it, or "study")."""
        self.error_title, self.error_detail, self.error_code = message.title, message.detail, message.code
        self._error_view = view

    def clear_error(self) -> None:
        self.error_title = self.error_detail = self.error_code = ""
        self._error_view = ""

    def show_bundle_problem(self, title: str = "", detail: str = "") -> None:
        """Why no bundle can be used (title "" : one can)."""
        self.bundle_problem_title, self.bundle_problem_detail = title, detail

    def show_busy(self, elapsed: float) -> None:
        """`elapsed` seconds into writing the report; the bar goes back and forth every PULSE_SECONDS."""
        self.status_text = f"Writing the report...  {elapsed:.1f} s"
        phase = (elapsed / PULSE_SECONDS) % 1.0
        self.pulse = 2 * phase if phase < 0.5 else 2 * (1 - phase)


class ViewSlot(BoxLayout):
    """One image slot on the main screen: frontal (required) or lateral (optional)."""

    view = StringProperty("frontal")
    title = StringProperty("")
    hint = StringProperty("")
    path = StringProperty("")
    texture = ObjectProperty(None, allownone=True)
    loading = BooleanProperty(False)
    info = StringProperty("")  # "512 x 512 px · CXR25.png"
