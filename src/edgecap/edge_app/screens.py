"""The app's screens and widgets: state as Kivy properties, looks in edgecap.kv, behaviour in app.py.

Screens (ScreenManager names): main (open the views, generate), report (image + heatmap, report, findings,
warnings, time, bundle), history (saved reports), settings (bundle, beam, threads), chooser (Kivy file
chooser on desktop and Raspberry Pi; Android uses the system picker).
"""

from __future__ import annotations

import numpy as np
from kivy.graphics.texture import Texture
from kivy.metrics import dp, sp
from kivy.properties import BooleanProperty, NumericProperty, ObjectProperty, StringProperty
from kivy.uix.behaviors import ButtonBehavior
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.filechooser import FileChooserListView
from kivy.uix.recycleview.views import RecycleDataViewBehavior
from kivy.uix.screenmanager import Screen


def texture_from_rgb(rgb: np.ndarray) -> Texture:
    """uint8 (H, W, 3) RGB, row 0 at the top -> Texture (UI thread only: it talks to OpenGL).
    Uploaded as RGBA: 4-byte pixels keep every row aligned whatever the width."""
    h, w = rgb.shape[:2]
    rgba = np.empty((h, w, 4), np.uint8)
    rgba[:, :, :3] = rgb
    rgba[:, :, 3] = 255
    tex = Texture.create(size=(w, h), colorfmt="rgba")
    tex.blit_buffer(np.ascontiguousarray(rgba[::-1]).tobytes(), colorfmt="rgba", bufferfmt="ubyte")  # GL: bottom row first
    return tex


class MainScreen(Screen):
    pass


class ReportScreen(Screen):
    pass


class HistoryScreen(Screen):
    pass


class SettingsScreen(Screen):
    pass


class ChooserScreen(Screen):
    view = StringProperty("frontal")  # which view the chosen file becomes


class TouchFileChooser(FileChooserListView):
    """Kivy's list file chooser with 48 dp rows and 15 sp names at any density (Kivy's own rows are 24 dp
    at density 1: too small for a finger on a Raspberry Pi touch screen)."""

    def _create_entry_widget(self, ctx):
        entry = super()._create_entry_widget(ctx)
        entry.height = dp(48)
        for label in entry.children[0].children:  # the row's (size, name) labels
            label.font_size = sp(15) if label.halign == "left" else sp(13)
        return entry


class ViewSlot(BoxLayout):
    """One image slot on the main screen: frontal (required) or lateral (optional)."""

    view = StringProperty("frontal")
    title = StringProperty("")
    hint = StringProperty("")
    path = StringProperty("")
    texture = ObjectProperty(None, allownone=True)
    loading = BooleanProperty(False)
    info = StringProperty("")  # "CXR25.png · 512 x 512"


class NoticeCard(BoxLayout):
    """A warning or error in plain words (messages.Message)."""

    title = StringProperty("")
    detail = StringProperty("")
    level = StringProperty("warning")  # warning | error | info
    code = StringProperty("")


class FindingRow(BoxLayout):
    name = StringProperty("")
    value = StringProperty("")  # present | absent | uncertain


class BundleRow(ButtonBehavior, BoxLayout):
    path = StringProperty("")
    label = StringProperty("")
    detail = StringProperty("")
    selected = BooleanProperty(False)
    usable = BooleanProperty(True)


class HistoryRow(RecycleDataViewBehavior, ButtonBehavior, BoxLayout):
    """One saved report in the history list (a RecycleView row)."""

    report_id = NumericProperty(0)
    title = StringProperty("")
    subtitle = StringProperty("")
    flagged = BooleanProperty(False)
    thumbnail = ObjectProperty(None, allownone=True)  # Texture, made once per report by the app
