"""Report screen: the image with its attention map, the report, warnings, structured findings, time and bundle.
Looks in kv/report.kv.

State: the report shown (runtime.report.Report, its history row id) and its lines as they read on screen;
per view ("frontal", "lateral") a plain and an overlaid texture, one of them on screen (report_texture)
as the view and the attention toggle choose.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from kivy.properties import BooleanProperty, ListProperty, NumericProperty, ObjectProperty, StringProperty
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.screenmanager import Screen

from edgecap import __version__
from edgecap.edge_app.messages import FLAGGED_NOTE, WITHHELD_NOTE, finding_rows, sentence, short_path, warning_message
from edgecap.edge_app.widgets import NoticeCard, texture_from_rgb
from edgecap.runtime.report import DEMONSTRATION_LINE
from edgecap.runtime.sanity import FLAG_CODES


class ReportScreen(Screen):
    report = ObjectProperty(None, allownone=True)  # runtime.report.Report
    report_id = NumericProperty(0)  # its history row
    report_text = StringProperty("")
    report_flagged = BooleanProperty(False)
    report_notice = StringProperty("")
    report_demonstration = StringProperty("")  # the banner's words for a demonstration bundle, else ""
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

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._textures: dict[str, tuple] = {}  # view -> (plain, overlaid or None)

    def show(self, report, display: dict, overlays: dict, report_id: int, when: datetime | None = None) -> None:
        """Fill the screen (report: runtime.report.Report; display / overlays: view -> uint8 RGB)."""
        self.report, self.report_id = report, report_id
        self._textures = {
            v: (texture_from_rgb(rgb), texture_from_rgb(overlays[v]) if v in overlays else None)
            for v, rgb in display.items()
        }
        self.report_views = list(display)
        self.report_view = "frontal" if "frontal" in display else next(iter(display), "frontal")
        self.report_has_heatmap = bool(overlays)
        self.report_flagged = bool(report.flagged)
        self.report_text = WITHHELD_NOTE if report.flagged else report.text  # never the model's text then
        self.report_notice = sentence(report.bundle.get("notice", ""))
        self.report_demonstration = DEMONSTRATION_LINE if report.demonstration else ""
        self.report_time = _time_line(report)
        self.report_bundle = _bundle_line(report.bundle)
        self.report_inputs = _inputs_line(report.inputs)
        self.report_when = when.strftime("%Y-%m-%d %H:%M") if when else ""
        self._update_texture()
        self.ids.notices.clear_widgets()
        for card in _notice_cards(report):
            self.ids.notices.add_widget(card)
        self.ids.findings.clear_widgets()
        rows = finding_rows(report.findings)
        for name, value in rows:
            self.ids.findings.add_widget(FindingRow(name=name, value=value))
        self.report_has_findings = bool(rows)
        self.ids.report_scroll.scroll_y = 1

    def set_view(self, view: str) -> None:
        if view in self.report_views:
            self.report_view = view
            self._update_texture()

    def set_heatmap(self, on: bool) -> None:
        self.show_heatmap = bool(on)
        self._update_texture()

    def _update_texture(self) -> None:
        plain, over = self._textures.get(self.report_view, (None, None))
        self.report_texture = over if (self.show_heatmap and over is not None) else plain

    def as_text(self) -> str:
        """The report on screen as plain text (Copy, Export text); "" when there is none, or when the study is
        flagged (it has no report: the app offers neither Copy nor Export for it)."""
        r = self.report
        if r is None or r.flagged:
            return ""
        lines = [r.render_text(), ""]
        rows = finding_rows(r.findings)
        if rows and not r.flagged:
            lines.append(
                "Structured findings (rule-based, read from the text): " + "; ".join(f"{n}: {v}" for n, v in rows)
            )
        lines += [
            self.report_inputs,
            self.report_time,
            self.report_bundle.replace("\n", " "),
            f"edgecap {__version__}: {r.bundle.get('notice', '')}",
        ]
        if r.demonstration:  # the copied or exported text says so right under the report, as the screen does
            lines.insert(1, DEMONSTRATION_LINE)
        return "\n".join(x for x in lines if x is not None)


class FindingRow(BoxLayout):
    name = StringProperty("")
    value = StringProperty("")  # present | absent | uncertain (yes | no | uncertain for "No Finding")


def _time_line(report) -> str:
    t = report.timings
    image_ms = t.get("read_ms", 0) + t.get("sanity_ms", 0) + t.get("preprocess_ms", 0)
    return (
        f"Written in {t.get('total_ms', 0) / 1000:.2f} s on this device (image {image_ms:.0f} ms, "
        f"encoder {t.get('encoder_ms', 0):.0f} ms, decoder {t.get('decoder_ms', 0):.0f} ms for "
        f"{int(t.get('decoder_steps', 0))} steps, beam {report.beam})."
    )


def _bundle_line(bundle: dict) -> str:
    path = bundle.get("path", "")
    return (
        f"Model: {Path(path).name or '?'} · {bundle.get('mode', '?')} · {bundle.get('interpreter', '?')}\n"
        f"{short_path(path)}"
    )


def _inputs_line(inputs: dict) -> str:
    parts = [f"Frontal: {Path(inputs['frontal']).name}"] if inputs.get("frontal") else []
    if inputs.get("lateral"):
        parts.append(f"Lateral: {Path(inputs['lateral']).name}")
    return "   ".join(parts)


def _notice_cards(report) -> list[NoticeCard]:
    """Report warnings -> NoticeCards: one red card when the input does not look like a chest X-ray (its
    reasons in plain words), amber cards for the other warnings."""
    cards = []
    reasons = [w for w in report.warnings if w.code in FLAG_CODES]
    if report.flagged:
        first = warning_message(reasons[0].code, reasons[0].message) if reasons else None
        title = first.title if first else "This does not look like a chest X-ray."
        more = [warning_message(w.code, w.message).title for w in reasons[1:]]
        words = [FLAGGED_NOTE] + more + [f"({'; '.join(w.message for w in reasons)})"] if reasons else [FLAGGED_NOTE]
        code = reasons[0].code if reasons else "flagged"
        cards.append(NoticeCard(title=title, detail=" ".join(words), level="error", code=code))
    for w in report.warnings:
        if w.code not in FLAG_CODES:
            m = warning_message(w.code, w.message)
            cards.append(NoticeCard(title=m.title, detail=m.detail, level=m.level, code=m.code))
    if not report.flagged and not report.attention_layout:  # a decoder without attention (decoder kind "sequence")
        cards.append(NoticeCard(title=NO_ATTENTION[0], detail=NO_ATTENTION[1], level="info", code="no_attention"))
    return cards


# said instead of an empty overlay when the bundle's model has no attention (runtime.captioner: no layout)
NO_ATTENTION = (
    "This model has no attention map.",
    "Its decoder reads the whole image as one feature vector, so there is no heatmap of where it looked.",
)
