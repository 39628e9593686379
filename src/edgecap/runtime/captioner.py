"""Image(s) -> Report on a converted bundle: the whole inference flow, device-safe (never TensorFlow).

    captioner = Captioner.from_bundle()              # the default bundle shipped in edgecap.resources
    report = captioner.caption("frontal.png", lateral="lateral.dcm", beam=3)
    print(report.render_text())                      # says first when the input is not a chest X-ray
    report.to_json()                                 # runtime.report: the edgecap-report/1 schema

Per view: runtime.preprocess.read_image (PNG 8/16-bit, JPEG, DICOM via runtime.dicom, bytes or arrays)
-> runtime.sanity.check (is it a chest X-ray at all?) -> runtime.preprocess.prepare -> model.encode.
Then runtime.study.fuse_views -> runtime.decoding.decode over model.step -> vocab.render ->
the rule-based labeler on the generated text -> Report. Each stage is timed.

The model is a `ReportModel`: a TFLite bundle (runtime.bundle.Bundle), or the Keras model of a run
(training.keras_step.KerasBundle: the reference, through the very same flow). Its decoder is recurrent (a
StepModel) or reads the padded prefix (a SequenceModel: runtime.bundle.SequenceBundle, or a user's Keras
captioner behind training.keras_sequence.KerasSequence); such a model has no attention (has_attention False):
its reports carry an empty (T, 0) attention and no attention_layout, and every output form leaves both out.

An input that fails a sanity check (runtime.sanity.FLAG_CODES: not a chest X-ray, or too small to read) is
still decoded, but the report is `flagged`, its warnings say why, and every output form withholds the text
by default (runtime.report: status "flagged", text null; the model's text only on explicit request, marked).
"""

from __future__ import annotations

import math
import time
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, Union

import numpy as np

from edgecap.runtime import preprocess, sanity
from edgecap.runtime.decoding import DEFAULT_BEAM, SpecialIds, StepModel, decode
from edgecap.runtime.image_header import DEFAULT_MAX_PIXELS
from edgecap.runtime.report import Notice, Report, findings_from_labels
from edgecap.runtime.study import ImageEncoder, fuse_views
from edgecap.runtime.vocab import Vocabulary

ImageInput = Union[str, Path, bytes, bytearray, memoryview, np.ndarray]


class ReportModel(StepModel, ImageEncoder, Protocol):
    """What a Captioner runs: an image encoder and a decoder step, plus what a report names."""

    special: SpecialIds
    max_len: int  # tokens per report, without <bos>/<eos>
    vocab: Vocabulary
    positions: int  # P: attention positions per view
    view_order: tuple[str, ...]  # slot names of the views, frontal first
    info: dict[str, Any]  # path, mode, interpreter, notice, edgecap_version: Report.bundle
    # also: decoder_kind ("recurrent" when absent) and has_attention (True when absent)


class CaptionError(ValueError):
    """A request the bundle cannot serve (beam < 1, a lateral view for a one-view model)."""


def default_bundle_path() -> Path:
    """Where the package keeps its default bundle: edgecap/resources/bundles/default."""
    return Path(str(resources.files("edgecap.resources").joinpath("bundles", "default")))


def input_name(source: ImageInput) -> str:
    """A short name for a report: the path as given, or a description of bytes / arrays."""
    if isinstance(source, np.ndarray):
        return f"<array {'x'.join(map(str, source.shape))} {source.dtype}>"
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    return str(source)


class Captioner:
    """A loaded bundle + labeler. Not thread-safe (one interpreter per bundle): one Captioner per thread."""

    def __init__(
        self, bundle: ReportModel, labeler=None, check_inputs: bool = True, max_pixels: int | None = DEFAULT_MAX_PIXELS
    ):
        """check_inputs: run runtime.sanity on every view (tools that feed known X-rays may turn it off);
        max_pixels: refuse larger images from their header (runtime.image_header; None: no limit)."""
        from edgecap.labeler import Labeler

        self.bundle = bundle
        self.labeler = labeler if labeler is not None else Labeler.default()
        self.check_inputs = check_inputs
        self.max_pixels = max_pixels
        self.bundle_info = dict(bundle.info)
        p = bundle.positions
        grid = math.isqrt(p)
        self.has_attention = bool(getattr(bundle, "has_attention", True))
        self.attention_layout = (
            {"views": list(bundle.view_order), "positions_per_view": p, "grid": grid if grid * grid == p else None}
            if self.has_attention
            else {}
        )

    @classmethod
    def from_bundle(
        cls, path: str | Path | None = None, num_threads: int | None = None, trust=None, **kwargs
    ) -> "Captioner":
        """Load a bundle folder (None: the default bundle). `trust`: a folder of trusted public keys or a
        runtime.signing.TrustStore (None: EDGECAP_TRUSTED_KEYS, else ~/.config/edgecap/trusted_keys, when
        present). Raises BundleError (missing, corrupt or mismatched files, no default bundle installed; its
        subclass SignatureError: unsigned or untrusted while trust is configured) or InterpreterUnavailable."""
        from edgecap.runtime.bundle import Bundle, BundleError

        if path is None:
            path = default_bundle_path()
            if not (path / "manifest.json").is_file():
                raise BundleError(
                    f"no default bundle installed at {path}: pass a bundle folder (--bundle PATH, "
                    f"one with manifest.json), e.g. one made by `edgecap convert`"
                )
        return cls(Bundle.load(path, num_threads=num_threads, trust=trust), **kwargs)

    def caption(self, frontal: ImageInput, lateral: ImageInput | None = None, beam: int = DEFAULT_BEAM) -> Report:
        """Write the report for one study (a frontal view, optionally a lateral one).

        Raises:
            ImageError: an input cannot be read (missing, corrupt, DICOM without a codec); its subclasses
                UnsupportedImageError (not an image format edgecap reads) and ImageTooLargeError (more
                pixels than max_pixels, refused from the header).
            CaptionError: beam < 1, or a lateral view for a bundle that takes one view.
        """
        b = self.bundle
        if beam < 1:
            raise CaptionError(f"beam must be >= 1, got {beam}")
        if lateral is not None and b.max_views < 2:
            raise CaptionError(f"this bundle takes {b.max_views} view: no lateral image")
        t = {"read_ms": 0.0, "sanity_ms": 0.0, "preprocess_ms": 0.0, "encoder_ms": 0.0}
        start = time.perf_counter()
        warnings: list[Notice] = []
        stats: dict[str, dict | None] = {"frontal": None, "lateral": None}
        views: list[np.ndarray | None] = []  # (P, D) per view slot; fuse_views pads the slots not given
        for role, source in (("frontal", frontal), ("lateral", lateral))[: b.max_views]:
            if source is None:
                views.append(None)
                continue
            t0 = time.perf_counter()
            notes: list[tuple[str, str]] = []
            image = preprocess.read_image(source, notes, self.max_pixels)  # (H, W[, 3]) as stored
            t1 = time.perf_counter()
            if self.check_inputs:
                problems, s = sanity.check(image)
                stats[role] = s.to_dict()
                notes += [(code, f"{role} image {msg}") for code, msg in problems]
            t2 = time.perf_counter()
            prepared = preprocess.prepare(image, b.image_size, b.mean, b.std)  # (S, S, 3)
            t3 = time.perf_counter()
            views.append(b.encode(prepared))  # (P, D)
            t4 = time.perf_counter()
            warnings += [Notice(code, msg) for code, msg in notes]
            for key, dt in (
                ("read_ms", t1 - t0),
                ("sanity_ms", t2 - t1),
                ("preprocess_ms", t3 - t2),
                ("encoder_ms", t4 - t3),
            ):
                t[key] += dt * 1e3
        features, mask = fuse_views(views, b.max_views)  # (N, D), (N,)
        t0 = time.perf_counter()
        decoded = decode(b, features, mask, b.special, b.max_len, beam=beam)
        t1 = time.perf_counter()
        text = b.vocab.render(decoded.ids)
        flagged = any(w.code in sanity.FLAG_CODES for w in warnings)
        findings = {} if flagged else findings_from_labels(self.labeler.label(text))  # see Report.findings
        t2 = time.perf_counter()
        if not decoded.finished:
            warnings.append(
                Notice(
                    "unfinished",
                    f"the report reached the maximum length ({b.max_len} tokens) before its end: it may be cut off",
                )
            )
        t.update(
            decoder_ms=(t1 - t0) * 1e3,
            labeler_ms=(t2 - t1) * 1e3,
            total_ms=(t2 - start) * 1e3,
            decoder_steps=decoded.steps,
        )
        return Report(
            text=text,
            tokens=b.vocab.decode(decoded.ids),
            attention=decoded.attention
            if decoded.attention is not None
            else np.zeros((len(decoded.ids), 0), np.float32),
            findings=findings,
            timings=t,
            warnings=warnings,
            flagged=flagged,
            inputs={"frontal": input_name(frontal), "lateral": None if lateral is None else input_name(lateral)},
            attention_layout=self.attention_layout,
            image_stats=stats,
            bundle=self.bundle_info,
            beam=beam,
            finished=decoded.finished,
        )
