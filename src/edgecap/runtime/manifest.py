"""The bundle contract: `manifest.json` beside the model files. Device-safe (stdlib only).

A bundle folder holds (S image size, P positions per view, D feature size, N = max_views * P, H LSTM size,
V vocabulary, B = decoder.step_batch rows per decoder call)

    manifest.json                  this schema (format "edgecap-bundle/1"), written by convert.bundle_writer
    encoder_<suffix>.tflite        one view: image (1, S, S, 3) float32 -> features (1, P, D)
    decoder_step_<suffix>.tflite   token (B,) int32, h, c (B, H), features (1, N, D), mask (1, N)
                                   -> logits (B, V), h_out, c_out (B, H), attention (B, N)
    vocab.json                     runtime.vocab.Vocabulary

The manifest's fields and who reads them:

    format, edgecap_version, created   Manifest.load refuses another format id; the rest is shown in reports
    mode, mode_settings, notice        the convert.modes row the bundle was made with (`bundle compare` takes
                                       its tie margin by mode name, the tflite-runtime 2.14 check reads
                                       mode_settings' thresholds); the notice is shown by every front end
    files.encoder, files.decoder_step  runtime.bundle: file name, sha256 and size (checked before an interpreter
                                       sees the file), tensor role -> signature name, shape and dtype (checked
                                       against the loaded model); ops, op_versions and min_runtime for people
    vocab                              runtime.bundle: vocab.json's name, sha256 and size
    input                              image size, mean, std (runtime.preprocess), max_views and view_order
                                       (runtime.study.fuse_views, the report's attention layout)
    decoder                            max_len, hidden_size, positions_per_view, feature_dim, vocab_size,
                                       attention_positions (= max_views * positions_per_view) and step_batch
                                       (B above; runtime.bundle.Bundle.step pads or splits other batches)
    special                            pad, bos, eos, unk, sep ids (runtime.vocab.Vocabulary.special_ids);
                                       runtime.bundle checks them against vocab.json
    runtime                            which interpreters load the files (tflite_runtime_2_14, oldest, ...)
    source                             the run: path, config_hash, config, weights, weights_sha256 (the bench
                                       and `bundle compare` match a bundle to its reference run with them)
    calibration, verification          reports of how edgecap.convert made and checked the bundle; a runtime
                                       does not need them, so their inner keys are documented, not enforced

Everything a runtime needs is read from the manifest; the runtime holds no model constants.

Compatibility: readers accept any "edgecap-bundle/1" manifest and ignore keys they do not know; a change
that an old reader would misread gets a new format id. A manifest written before decoder.step_batch existed
gets it from the decoder step's token input shape (B), which is what that field records.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

FORMAT = "edgecap-bundle/1"
DEFAULT_NOTICE = "demonstration model, not validated for clinical use"
MANIFEST_NAME = "manifest.json"
PARTS = ("encoder", "decoder_step")
# tensor roles each part must expose (role -> signature tensor name is stored per file)
ROLES = {
    "encoder": (("image",), ("features",)),
    "decoder_step": (("token", "h", "c", "features", "mask"), ("logits", "h", "c", "attention")),
}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(ValueError):
    """manifest.json is missing, unreadable or does not describe a usable bundle."""


@dataclass(frozen=True)
class TensorSpec:
    name: str  # signature tensor name in the .tflite file
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name: "float32", "int32"


@dataclass(frozen=True)
class ModelFile:
    path: str  # file name inside the bundle folder (no directories)
    sha256: str
    bytes: int
    precision: str  # float32 | float16 | dynamic | int8 (convert.modes.PRECISIONS)
    ops: tuple[str, ...]  # operator names read from the flatbuffer at conversion time, sorted
    op_versions: dict[str, int]  # operator name -> highest version used (what old runtimes choke on)
    min_runtime: dict[str, str | None]  # interpreter package -> oldest version known to load it (None: cannot)
    inputs: dict[str, TensorSpec]  # role -> tensor (ROLES)
    outputs: dict[str, TensorSpec]


@dataclass(frozen=True)
class InputSpec:
    size: int  # S: the encoder takes (S, S, 3)
    channels: int  # 3
    mean: float  # input = (gray_0_255 - mean) / std
    std: float
    color: str  # how colour images become the model's channels
    resize: str  # how any image becomes S x S
    max_views: int  # views fused for attention (runtime.study.fuse_views)
    view_order: tuple[str, ...]  # slot order of the views


@dataclass(frozen=True)
class DecoderSpec:
    max_len: int  # tokens per report, without <bos>/<eos>
    hidden_size: int  # H
    positions_per_view: int  # P
    feature_dim: int  # D
    attention_positions: int  # N = max_views * P
    vocab_size: int  # V
    step_batch: int  # B: rows of one decoder_step call (convert.pipeline.STEP_BATCH; 1 in the oldest bundles)


@dataclass(frozen=True)
class FileRef:
    path: str
    sha256: str
    bytes: int


@dataclass
class Manifest:
    edgecap_version: str
    created: str  # UTC, ISO 8601
    mode: str  # convert.modes name
    mode_settings: dict[str, Any]  # the mode's row of convert.modes.MODES when the bundle was made
    notice: str  # free text shown by every front end
    files: dict[str, ModelFile]  # "encoder", "decoder_step"
    vocab: FileRef
    input: InputSpec
    decoder: DecoderSpec
    special: dict[str, int]  # pad, bos, eos, unk, sep (-1: none)
    runtime: dict[str, Any]  # oldest interpreter that loads every file: {"tflite_runtime_2_14": bool, ...}
    source: dict[str, Any]  # run, config_hash (Config.model_hash), config (full dict), weights, weights_sha256
    calibration: dict[str, Any] | None = None  # int8 parts only: sources, counts, augmentation, warnings
    verification: dict[str, Any] | None = None  # convert.verify: per-stage errors, identical shares, passed
    format: str = FORMAT
    extra: dict[str, Any] = field(default_factory=dict)  # keys this reader does not know, kept on save

    # ---- JSON ----------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """JSON-native types only (lists, not tuples): equal to what `load` reads back."""
        d = asdict(self)
        extra = d.pop("extra")
        fmt = d.pop("format")
        return json.loads(json.dumps({"format": fmt, **d, **extra}))

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / MANIFEST_NAME
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path

    @classmethod
    def from_json(cls, d: Any) -> Manifest:
        if not isinstance(d, dict):
            raise ManifestError("manifest: expected a JSON object")
        fmt = d.get("format")
        if fmt != FORMAT:
            raise ManifestError(f"manifest: format {fmt!r} is not {FORMAT!r} (made by another edgecap version?)")
        try:
            known = {f for f in cls.__dataclass_fields__ if f != "extra"}
            files = {part: _model_file(part, f) for part, f in _dict(d, "files").items()}
            m = cls(
                edgecap_version=_str(d, "edgecap_version"),
                created=_str(d, "created"),
                mode=_str(d, "mode"),
                mode_settings=_dict(d, "mode_settings"),
                notice=_str(d, "notice"),
                files=files,
                vocab=FileRef(**_fields(_dict(d, "vocab"), FileRef, "vocab")),
                input=InputSpec(
                    **{
                        **_fields(_dict(d, "input"), InputSpec, "input"),
                        "view_order": tuple(_dict(d, "input")["view_order"]),
                    }
                ),
                decoder=DecoderSpec(**_fields(_decoder(d, files), DecoderSpec, "decoder")),
                special={k: int(v) for k, v in _dict(d, "special").items()},
                runtime=_dict(d, "runtime"),
                source=_dict(d, "source"),
                calibration=d.get("calibration"),
                verification=d.get("verification"),
                extra={k: v for k, v in d.items() if k not in known},
            )
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, ManifestError):
                raise
            raise ManifestError(f"manifest: malformed ({type(e).__name__}: {e})") from None
        m.validate()
        return m

    @classmethod
    def load(cls, folder: str | Path) -> Manifest:
        """Read and validate <folder>/manifest.json (a path to the file itself is accepted too)."""
        path = Path(folder)
        if path.is_dir():
            path = path / MANIFEST_NAME
        if not path.is_file():
            raise ManifestError(f"{path}: no such file (not an edgecap bundle?)")
        try:
            d = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ManifestError(f"{path}: not readable JSON ({e})") from None
        try:
            return cls.from_json(d)
        except ManifestError as e:
            raise ManifestError(f"{path}: {e}") from None

    # ---- checks --------------------------------------------------------------------------------
    def validate(self) -> None:
        """Structural checks a runtime relies on; raises ManifestError."""
        missing = [p for p in PARTS if p not in self.files]
        if missing:
            raise ManifestError(f"manifest: files lack {', '.join(missing)}")
        refs = [(f"files.{k}", f.path, f.sha256, f.bytes) for k, f in self.files.items()]
        refs.append(("vocab", self.vocab.path, self.vocab.sha256, self.vocab.bytes))
        for where, path, sha, size in refs:
            p = PurePosixPath(path)
            if not path or p.is_absolute() or len(p.parts) != 1 or path in (".", "..") or "\\" in path:
                raise ManifestError(f"manifest: {where}.path {path!r} must be a plain file name inside the bundle")
            if not _SHA256.match(sha):
                raise ManifestError(f"manifest: {where}.sha256 is not a sha256 hex digest")
            if size <= 0:
                raise ManifestError(f"manifest: {where}.bytes must be positive")
        for part, (ins, outs) in ROLES.items():
            f = self.files[part]
            for role in ins:
                if role not in f.inputs:
                    raise ManifestError(f"manifest: files.{part}.inputs lacks {role!r}")
            for role in outs:
                if role not in f.outputs:
                    raise ManifestError(f"manifest: files.{part}.outputs lacks {role!r}")
        i, dec = self.input, self.decoder
        if i.size <= 0 or i.channels != 3 or i.std == 0 or i.max_views < 1:
            raise ManifestError("manifest: input needs size > 0, channels 3, std != 0, max_views >= 1")
        if dec.attention_positions != i.max_views * dec.positions_per_view:
            raise ManifestError("manifest: decoder.attention_positions != input.max_views * positions_per_view")
        if dec.step_batch < 1:
            raise ManifestError("manifest: decoder.step_batch must be >= 1")
        token = self.files["decoder_step"].inputs["token"].shape
        if tuple(token[:1]) != (dec.step_batch,):
            raise ManifestError(
                f"manifest: decoder.step_batch {dec.step_batch} != the decoder step's token rows {tuple(token)}"
            )
        for key in ("pad", "bos", "eos", "unk"):
            if not 0 <= self.special.get(key, -1) < dec.vocab_size:
                raise ManifestError(f"manifest: special.{key} missing or outside the vocabulary")
        if not self.notice.strip():
            raise ManifestError("manifest: notice is empty")


def _str(d: dict, key: str) -> str:
    v = d[key]
    if not isinstance(v, str):
        raise ManifestError(f"manifest: {key} must be a string")
    return v


def _dict(d: dict, key: str) -> dict:
    v = d[key]
    if not isinstance(v, dict):
        raise ManifestError(f"manifest: {key} must be an object")
    return v


def _decoder(d: dict, files: dict[str, ModelFile]) -> dict:
    """The decoder object; step_batch, when absent (older bundles), from the decoder step's token input (B,)."""
    dec = _dict(d, "decoder")
    if "step_batch" in dec:
        return {**dec, "step_batch": int(dec["step_batch"])}
    token = files["decoder_step"].inputs.get("token") if "decoder_step" in files else None
    return {**dec, "step_batch": token.shape[0] if token is not None and token.shape else 0}


def _fields(d: dict, cls, where: str) -> dict:
    names = set(cls.__dataclass_fields__)
    lacking = names - set(d)
    if lacking:
        raise ManifestError(f"manifest: {where} lacks {', '.join(sorted(lacking))}")
    return {k: d[k] for k in names}


def _tensors(d: dict) -> dict[str, TensorSpec]:
    return {
        role: TensorSpec(str(t["name"]), tuple(int(s) for s in t["shape"]), str(t["dtype"])) for role, t in d.items()
    }


def _model_file(part: str, d: dict) -> ModelFile:
    f = _fields(d, ModelFile, f"files.{part}")
    return ModelFile(
        path=str(f["path"]),
        sha256=str(f["sha256"]),
        bytes=int(f["bytes"]),
        precision=str(f["precision"]),
        ops=tuple(f["ops"]),
        op_versions={str(k): int(v) for k, v in f["op_versions"].items()},
        min_runtime=dict(f["min_runtime"]),
        inputs=_tensors(f["inputs"]),
        outputs=_tensors(f["outputs"]),
    )
