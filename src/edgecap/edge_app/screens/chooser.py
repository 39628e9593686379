"""File chooser screen: Kivy's file chooser on desktops and the Raspberry Pi (Android uses the system picker,
app.open_chooser). Looks in kv/chooser.kv. It lists folders and the image files edgecap reads: the suffixes
of runtime.formats, each in lower and upper case (fnmatch is case-sensitive on Linux: CXR.PNG, scan.DCM).
"""

from __future__ import annotations

from kivy.metrics import dp, sp
from kivy.properties import ListProperty, StringProperty
from kivy.uix.filechooser import FileChooserListView
from kivy.uix.screenmanager import Screen

from edgecap.runtime.formats import DICOM_SUFFIXES, IMAGE_SUFFIXES

IMAGE_FILTERS = [f"*{s}" for suffix in dict.fromkeys(IMAGE_SUFFIXES + DICOM_SUFFIXES) for s in (suffix, suffix.upper())]


class ChooserScreen(Screen):
    view = StringProperty("frontal")  # which view the chosen file becomes
    start_folder = StringProperty("")
    filters = ListProperty(IMAGE_FILTERS)
    sample_path = StringProperty("")  # the sample X-ray shipped in the package ("" when not installed)


class TouchFileChooser(FileChooserListView):
    """Kivy's list file chooser with 48 dp rows and 15 sp names at any density (Kivy's own rows are 24 dp
    at density 1: too small for a finger on a Raspberry Pi touch screen)."""

    def _create_entry_widget(self, ctx):
        entry = super()._create_entry_widget(ctx)
        entry.height = dp(48)
        for label in entry.children[0].children:  # the row's (size, name) labels
            label.font_size = sp(15) if label.halign == "left" else sp(13)
        return entry
