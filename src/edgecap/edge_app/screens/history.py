"""History screen: the saved reports (store.HistoryStore), newest first. Looks in kv/history.kv.

State: the RecycleView's rows (history_data: one dict of HistoryRow properties per report) and their count.
Thumbnails become textures once per report and are kept for the session.
"""

from __future__ import annotations

from pathlib import Path

from kivy.properties import BooleanProperty, ListProperty, NumericProperty, ObjectProperty, StringProperty
from kivy.uix.behaviors import ButtonBehavior
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.recycleview.views import RecycleDataViewBehavior
from kivy.uix.screenmanager import Screen

from edgecap.edge_app import heatmap
from edgecap.edge_app.messages import FLAGGED_TITLE
from edgecap.edge_app.store import HistoryItem
from edgecap.edge_app.widgets import texture_from_rgb


class HistoryScreen(Screen):
    history_data = ListProperty([])
    history_count = NumericProperty(0)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._thumbs: dict[int, object] = {}  # report id -> Texture (None: an unreadable thumbnail)

    def show(self, items: list[HistoryItem]) -> None:
        """store.HistoryStore.list() -> the rows: the first sentence, when, which files, how many warnings."""
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
            data.append(
                {
                    "report_id": it.id,
                    "title": FLAGGED_TITLE if it.flagged else first,
                    "subtitle": "  ·  ".join(extras),
                    "flagged": it.flagged,
                    "thumbnail": self._thumbs[it.id],
                }
            )
        self.history_data = data


class HistoryRow(RecycleDataViewBehavior, ButtonBehavior, BoxLayout):
    """One saved report in the history list (a RecycleView row)."""

    report_id = NumericProperty(0)
    title = StringProperty("")
    subtitle = StringProperty("")
    flagged = BooleanProperty(False)
    thumbnail = ObjectProperty(None, allownone=True)  # Texture, made once per report by HistoryScreen
