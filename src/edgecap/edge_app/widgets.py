"""Widgets shared by several screens (looks in kv/common.kv) and the one way images reach the screen.

Widgets used by one screen only live with that screen (screens/*.py, kv/<screen>.kv).
"""

from __future__ import annotations

import numpy as np
from kivy.graphics.texture import Texture
from kivy.properties import StringProperty
from kivy.uix.boxlayout import BoxLayout


def texture_from_rgb(rgb: np.ndarray) -> Texture:
    """uint8 (H, W, 3) RGB, row 0 at the top -> Texture (UI thread only: it talks to OpenGL).
    Uploaded as RGBA: 4-byte pixels keep every row aligned whatever the width."""
    h, w = rgb.shape[:2]
    rgba = np.empty((h, w, 4), np.uint8)
    rgba[:, :, :3] = rgb
    rgba[:, :, 3] = 255
    tex = Texture.create(size=(w, h), colorfmt="rgba")
    bottom_first = np.ascontiguousarray(rgba[::-1])  # GL rows start at the bottom
    tex.blit_buffer(bottom_first.tobytes(), colorfmt="rgba", bufferfmt="ubyte")
    return tex


class NoticeCard(BoxLayout):
    """A warning or error in plain words (messages.Message): the main screen's bundle and study problems, the
    report screen's warnings."""

    title = StringProperty("")
    detail = StringProperty("")
    level = StringProperty("warning")  # warning | error | info
    code = StringProperty("")
