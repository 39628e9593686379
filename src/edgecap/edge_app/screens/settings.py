"""Settings screen: the bundle (settings.installed_bundles), beam size, threads, where the data lives. Looks in
kv/settings.kv. The rows and segment buttons are rebuilt each time the screen opens (show); pressing one calls
the app back, which saves settings.json and reloads the bundle.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from kivy.factory import Factory
from kivy.properties import BooleanProperty, NumericProperty, StringProperty
from kivy.uix.behaviors import ButtonBehavior
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.screenmanager import Screen

from edgecap import __version__
from edgecap.edge_app.messages import sentence, short_path
from edgecap.edge_app.settings import BEAMS, BundleChoice, max_threads


class SettingsScreen(Screen):
    cores = NumericProperty(os.cpu_count() or 1)
    bundles_dir = StringProperty("")  # where to copy bundles, as shown ("~/.config/edgecap/bundles")
    data_dir_text = StringProperty("")
    version = StringProperty(__version__)

    def show(
        self,
        choices: list[BundleChoice],
        selected: str,
        beam: int,
        threads: int,
        on_bundle: Callable[[str], None],
        on_beam: Callable[[int], None],
        on_threads: Callable[[int], None],
    ) -> None:
        """One row per bundle (`selected`: the bundle in use; unreadable ones say why and cannot be chosen), one
        segment per beam size and thread count, the current ones pressed."""
        ids = self.ids
        ids.bundles.clear_widgets()
        if not choices:
            ids.bundles.add_widget(Factory.Muted(text="No bundle installed."))
        for c in choices:
            detail = c.error or " · ".join(x for x in (sentence(c.notice), short_path(c.path)) if x)
            row = BundleRow(
                path=c.path,
                label=c.label,
                detail=detail,
                usable=not c.error,
                selected=os.path.realpath(c.path) == os.path.realpath(selected or "-"),
            )
            row.bind(on_release=lambda r: r.usable and on_bundle(r.path))
            ids.bundles.add_widget(row)
        for box, values, current, setter, group in (
            (ids.beams, BEAMS, beam, on_beam, "beam"),
            (ids.threads, range(1, max_threads() + 1), threads, on_threads, "threads"),
        ):
            box.clear_widgets()
            for v in values:
                b = Factory.Segment(text=str(v), group=group, state="down" if v == int(current) else "normal")
                b.bind(on_release=lambda btn, v=v, setter=setter: setter(v))
                box.add_widget(b)


class BundleRow(ButtonBehavior, BoxLayout):
    path = StringProperty("")
    label = StringProperty("")  # "default · int8 · built in"
    detail = StringProperty("")
    selected = BooleanProperty(False)
    usable = BooleanProperty(True)
