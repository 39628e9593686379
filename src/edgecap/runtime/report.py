"""The Report: what the captioner returns for one study, and its JSON form (`edgecap-report/1`).

    status        "ok", or "flagged" when an input does not look like a chest X-ray or is too small to read
                  (runtime.sanity.FLAG_CODES)
    text          the generated report as people read it: rendered by vocab.render ("The heart is normal. ..."),
                  then runtime.text.readable_text (never the anonymisation mark "xxxx": dropped where the
                  sentence reads whole without it, else written "[redacted]"; docs/conventions.md); null in
                  JSON when flagged: a model writes a fluent normal report for a cat photo, and an integration
                  that stores `text` must never store that
    demonstration JSON, top level: true when the bundle's notice marks it as a demonstration model
                  (is_demonstration): every front end says so where it cannot be missed
    notice        JSON, top level: the bundle's notice ("demonstration model, not validated for clinical use")
    text_withheld JSON: true when flagged and the text left out (the default); false otherwise
    flagged_text  JSON, only when flagged and the caller asked for it (`--show-flagged-text`, the API's
                  show_flagged_text): the model's text, under a name no reader of `text` takes by mistake
    flagged       True when status is "flagged" (kept for readers of the first format)
    warnings      [{code, message}]: the flag reasons (sanity.FLAG_CODES) and notes such as
                  dicom_multiframe or unfinished (max_len reached before <eos>)
    findings      observation -> "positive" | "negative" | "uncertain" | None (not mentioned), from the
                  rule-based labeler (edgecap.labeler, a CheXpert proxy) run on the generated text as the model
                  wrote it (mark kept, as in the labeler's references), not on the image. Empty ({}) when
                  flagged: software reads these labels without reading warnings, so no "No Finding: positive"
                  is produced for a cat
    tokens        generated tokens ("." included), without <bos>/<eos>, as the model wrote them ("xxxx" kept);
                  [] in JSON when the text is withheld
    attention     (T, N) float32: the decoder's attention over the N = views x grid x grid image positions
                  for each token; JSON: nested lists, rounded (`attention_decimals`), left out with a
                  withheld text
    attention_layout  {"views": [...], "grid": g}: position n is view n // g**2, row (n % g**2) // g, col n % g
    timings       read_ms, sanity_ms, preprocess_ms, encoder_ms, decoder_ms, labeler_ms, total_ms, decoder_steps
    inputs        {"frontal": name, "lateral": name or None}
    image_stats   per view, the statistics behind the sanity warnings
    bundle        path, mode, interpreter, notice (from the bundle manifest)

Device-safe: stdlib + numpy.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from edgecap.runtime.sanity import FLAG_CODES
from edgecap.runtime.text import readable_text

FORMAT = "edgecap-report/1"
ATTENTION_DECIMALS = 3  # attention weights in JSON output: caption CLI, HTTP API, the app's export and history
LABEL_NAMES = {1: "positive", 0: "negative", -1: "uncertain", None: None}
# A bundle notice that names the model a demonstration (runtime.manifest.DEFAULT_NOTICE, which convert writes
# unless told otherwise) marks the bundle as one. The signed manifests already shipped carry no other mark.
_DEMONSTRATION = re.compile(r"\bdemonstration\b", re.IGNORECASE)
DEMONSTRATION_LINE = "DEMONSTRATION MODEL: not validated for clinical use. Do not use its reports for diagnosis."


def is_demonstration(notice: str | None) -> bool:
    """True when a bundle's notice (manifest `notice`, report.bundle["notice"]) marks it as a demonstration."""
    return _DEMONSTRATION.search(notice or "") is not None


@dataclass(frozen=True)
class Notice:
    """One warning carried by a report: a stable machine code and a sentence for people."""

    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass
class Report:
    text: str
    tokens: list[str]
    attention: np.ndarray  # (T, N)
    findings: dict[str, Optional[str]]
    timings: dict[str, float]
    warnings: list[Notice] = field(default_factory=list)
    flagged: bool = False
    inputs: dict[str, Optional[str]] = field(default_factory=dict)
    attention_layout: dict[str, Any] = field(default_factory=dict)
    image_stats: dict[str, Optional[dict]] = field(default_factory=dict)
    bundle: dict[str, Any] = field(default_factory=dict)
    beam: int = 1
    finished: bool = True  # False when the decoder reached max_len before <eos>

    def __post_init__(self) -> None:
        self.text = readable_text(self.text)  # what every front end shows; the labeler read the model's text

    @property
    def notice(self) -> str:
        """The bundle's notice ("" when the report does not say which bundle made it)."""
        return str(self.bundle.get("notice") or "")

    @property
    def demonstration(self) -> bool:
        """True when the bundle's notice marks it as a demonstration model (is_demonstration)."""
        return is_demonstration(self.notice)

    @property
    def warning_codes(self) -> list[str]:
        return [w.code for w in self.warnings]

    @property
    def status(self) -> str:
        return "flagged" if self.flagged else "ok"

    @property
    def reasons(self) -> list[Notice]:
        """The warnings that flag this report (empty when it is not flagged)."""
        return [w for w in self.warnings if w.code in FLAG_CODES]

    def render_text(self, show_flagged_text: bool = False) -> str:
        """Text for people. A flagged report gives the reasons and no report; with show_flagged_text, the
        model's text follows, introduced as not describing the image."""
        if not self.flagged:
            return self.text
        reasons = "; ".join(w.message for w in self.reasons)
        head = f"NOT A CHEST X-RAY, OR NOT READABLE AS ONE: {reasons}."
        if not show_flagged_text:
            return f"{head}\nNo report: the model's text is withheld."
        return (
            f"{head}\nThe model's text below was asked for (--show-flagged-text) and is shown for inspection only; "
            f"it does not describe this image:\n{self.text}"
        )

    def to_dict(
        self,
        attention_decimals: Optional[int] = ATTENTION_DECIMALS,
        attention: bool = True,
        show_flagged_text: bool = False,
    ) -> dict[str, Any]:
        """JSON-ready dict. attention_decimals None keeps full float32 precision; attention False drops it.
        A flagged report's text is withheld (text null, no tokens or attention) unless show_flagged_text,
        which puts it in "flagged_text" (text stays null)."""
        withheld = self.flagged and not show_flagged_text
        d: dict[str, Any] = {
            "format": FORMAT,
            "demonstration": self.demonstration,
            "notice": self.notice,
            "status": self.status,
            "text": None if self.flagged else self.text,
            "text_withheld": withheld,
            "flagged": self.flagged,
            "warnings": [w.to_dict() for w in self.warnings],
            "findings": dict(self.findings),
            "tokens": [] if withheld else list(self.tokens),
        }
        if self.flagged and show_flagged_text:
            d["flagged_text"] = self.text
        if attention and not withheld and self.attention_layout:  # no layout: a model without attention
            att = np.asarray(self.attention, np.float64)
            if attention_decimals is not None:
                att = np.round(att, attention_decimals)
            d["attention"] = att.tolist()
            d["attention_layout"] = dict(self.attention_layout)
        d.update(
            {
                "timings": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.timings.items()},
                "beam": self.beam,
                "finished": self.finished,
                "inputs": dict(self.inputs),
                "image_stats": self.image_stats,
                "bundle": dict(self.bundle),
            }
        )
        return d

    def to_json(
        self,
        indent: Optional[int] = None,
        attention_decimals: Optional[int] = ATTENTION_DECIMALS,
        attention: bool = True,
        show_flagged_text: bool = False,
    ) -> str:
        return json.dumps(self.to_dict(attention_decimals, attention, show_flagged_text), indent=indent)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Report":
        if d.get("format") != FORMAT:
            raise ValueError(f"not an edgecap report (format {d.get('format')!r})")
        att = d.get("attention")
        text = d["text"] if d.get("text") is not None else d.get("flagged_text") or ""  # "": withheld
        return cls(
            text=text,
            tokens=list(d["tokens"]),
            attention=np.asarray(att if att is not None else np.zeros((0, 0)), np.float32),
            findings=dict(d["findings"]),
            timings=dict(d["timings"]),
            warnings=[Notice(w["code"], w["message"]) for w in d.get("warnings", [])],
            flagged=bool(d.get("flagged", False)) or d.get("status") == "flagged",
            inputs=dict(d.get("inputs", {})),
            attention_layout=dict(d.get("attention_layout", {})),
            image_stats=dict(d.get("image_stats", {})),
            bundle=dict(d.get("bundle", {})),
            beam=int(d.get("beam", 1)),
            finished=bool(d.get("finished", True)),
        )

    @classmethod
    def from_json(cls, s: str) -> "Report":
        return cls.from_dict(json.loads(s))


def findings_from_labels(labels: dict[str, Optional[int]]) -> dict[str, Optional[str]]:
    """Labeler output (1 / 0 / -1 / None) -> "positive" / "negative" / "uncertain" / None."""
    return {k: LABEL_NAMES[v] for k, v in labels.items()}
