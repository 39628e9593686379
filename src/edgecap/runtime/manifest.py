"""The bundle contract: `manifest.json` beside the model files. Device-safe (stdlib and pydantic).

A bundle folder holds (S image size, P positions per view, D feature size, N = max_views * P, H LSTM size,
V vocabulary, B = decoder.step_batch rows per decoder call)

    manifest.json                  this schema (format "edgecap-bundle/1"), written by convert.bundle_writer
    encoder_<suffix>.tflite        one view: image (1, S, S, 3) float32 -> features (1, P, D)
    decoder_step_<suffix>.tflite   token (B,) int32, h, c (B, H), features (1, N, D), mask (1, N)
                                   -> logits (B, V), h_out, c_out (B, H), attention (B, N)
    vocab.json                     runtime.vocab.Vocabulary

A decoder of kind "sequence" (decoder.kind; a Keras captioner brought by its user, convert.keras_import) reads
the whole padded prefix instead of carrying a state, and has no attention (L = decoder.sequence_length):

    encoder_<suffix>.tflite        image (1, S, S, 3) float32 -> features (1, 1, D): one pooled vector
    decoder_step_<suffix>.tflite   sequence (B, L) (the model's dtype), features (B, D) -> logits (B, V)

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
                                       (runtime.study.fuse_views, the report's attention layout); optional:
                                       normalization (the name: "caffe", "torch", "tf", "raw" for a Keras
                                       application's encoder) with channel_mean, channel_std (3 values each, the
                                       model's channel order; they replace mean and std)
    decoder                            max_len, hidden_size, positions_per_view, feature_dim, vocab_size,
                                       attention_positions (= max_views * positions_per_view) and step_batch
                                       (B above; runtime.bundle.Bundle.step pads or splits other batches);
                                       kind ("recurrent" when absent, or "sequence": then sequence_length L
                                       and padding "pre" / "post" of the prefix, and no hidden_size)
    special                            pad, bos, eos, unk, sep ids (runtime.vocab.Vocabulary.special_ids);
                                       runtime.bundle checks them against vocab.json
    runtime                            which interpreters load the files (tflite_runtime_2_14: on x86_64,
                                       tflite_runtime_2_14_aarch64, oldest, ...)
    source                             the run: path, config_hash, config, weights, weights_sha256 (the bench
                                       and `bundle compare` match a bundle to its reference run with them)
    calibration, verification          reports of how edgecap.convert made and checked the bundle; a runtime
                                       does not need them, so their inner keys are documented, not enforced

Everything a runtime needs is read from the manifest; the runtime holds no model constants.

The schema is the pydantic dataclasses below, validated in strict JSON mode: a string is never taken for a
number ("224"), a number never for a string, true never for 1, NaN and infinities are refused; arrays become
tuples. Bounds a runtime relies on are declared on the fields (sizes > 0, std > 0, 1 <= max_len <= 1024);
`Manifest.validate` adds the checks across fields, and runtime.bundle the checks against vocab.json and the
loaded models (`Manifest.tensor_shapes`). Any failure is one ManifestError line naming the field
("manifest: input.size: Input should be a valid integer, got '224'"). `Manifest.json_schema()` (or
`python -m edgecap.runtime.manifest`) writes the schema as JSON Schema for people and other tools.

Compatibility: readers accept any "edgecap-bundle/1" manifest and ignore keys they do not know; a change
that an old reader would misread gets a new format id. A manifest written before decoder.step_batch existed
gets it from the decoder step's token input shape (B), which is what that field records. The optional keys
(decoder.kind, sequence_length, padding; input.normalization, channel_mean, channel_std) are written only
when they say something: a recurrent bundle's manifest is the same as before they existed. An older reader
refuses a sequence bundle (its decoder step lacks the token, h and c tensors) rather than misreading it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, field, fields
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Final, Literal

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

FORMAT: Final = "edgecap-bundle/1"
DEFAULT_NOTICE = "demonstration model, not validated for clinical use"
MANIFEST_NAME = "manifest.json"
PARTS = ("encoder", "decoder_step")
DECODER_KINDS = ("recurrent", "sequence")
# tensor roles each part must expose (role -> signature tensor name is stored per file), per decoder kind
Roles = dict[str, tuple[tuple[str, ...], tuple[str, ...]]]
ROLES: Roles = {
    "encoder": (("image",), ("features",)),
    "decoder_step": (("token", "h", "c", "features", "mask"), ("logits", "h", "c", "attention")),
}
SEQUENCE_ROLES: Roles = {
    "encoder": (("image",), ("features",)),
    "decoder_step": (("sequence", "features"), ("logits",)),
}
# keys written only when they differ from these (Manifest.to_json): older manifests round-trip unchanged
_QUIET_DEFAULTS: dict[str, dict[str, Any]] = {
    "decoder": {"kind": "recurrent", "sequence_length": None, "padding": None, "hidden_size": None},
    "input": {"normalization": None, "channel_mean": None, "channel_std": None},
}
# Reports of the edge model run ~60-100 tokens (the training config's text.max_len, 60 in the default bundle);
# the decode loop runs up to max_len steps, so a bound stops a manifest from asking for a runaway loop.
MAX_LEN_LIMIT = 1024

# strict: no "224" for 224, no 1 for "1", no true for 1; no NaN or infinity (json.loads would let them in)
_STRICT = ConfigDict(strict=True, allow_inf_nan=False)
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Positive = Annotated[int, Field(gt=0)]


class ManifestError(ValueError):
    """manifest.json is missing, unreadable or does not describe a usable bundle."""


@dataclass(frozen=True, config=_STRICT)
class TensorSpec:
    name: str  # signature tensor name in the .tflite file
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name: "float32", "int32"


@dataclass(frozen=True, config=_STRICT)
class ModelFile:
    path: str  # file name inside the bundle folder (no directories)
    sha256: Sha256
    bytes: Positive
    precision: str  # float32 | float16 | dynamic | int8 (convert.modes.PRECISIONS)
    ops: tuple[str, ...]  # operator names read from the flatbuffer at conversion time, sorted
    op_versions: dict[str, int]  # operator name -> highest version used (what old runtimes choke on)
    min_runtime: dict[str, str | None]  # interpreter package -> oldest version known to load it (None: cannot)
    inputs: dict[str, TensorSpec]  # role -> tensor (ROLES)
    outputs: dict[str, TensorSpec]


@dataclass(frozen=True, config=_STRICT)
class InputSpec:
    size: Positive  # S: the encoder takes (S, S, 3)
    channels: Literal[3]  # the gray image replicated
    mean: float  # input = (gray_0_255 - mean) / std; finite
    std: Annotated[float, Field(gt=0)]
    color: str  # how colour images become the model's channels
    resize: str  # how any image becomes S x S
    max_views: Positive  # views fused for attention (runtime.study.fuse_views)
    view_order: tuple[str, ...]  # slot order of the views, max_views names
    normalization: str | None = None  # the name of a per-channel normalization (a Keras application's mode)
    channel_mean: tuple[float, float, float] | None = None  # replaces mean per channel: (255 * gray - m_c) / s_c
    channel_std: tuple[Annotated[float, Field(gt=0)], ...] | None = None


@dataclass(frozen=True, config=_STRICT, kw_only=True)
class DecoderSpec:
    max_len: Annotated[int, Field(ge=1, le=MAX_LEN_LIMIT)]  # tokens per report, without <bos>/<eos>
    hidden_size: Positive | None = None  # H (recurrent only)
    positions_per_view: Positive  # P
    feature_dim: Positive  # D
    attention_positions: Positive  # N = max_views * P
    vocab_size: Positive  # V
    step_batch: Annotated[int, Field(ge=1)]  # B: rows of one decoder_step call (1 in the oldest bundles)
    kind: Literal["recurrent", "sequence"] = "recurrent"  # DECODER_KINDS: a step with state, or a prefix reader
    sequence_length: Annotated[int, Field(ge=2, le=MAX_LEN_LIMIT + 1)] | None = None  # L (sequence only)
    padding: Literal["pre", "post"] | None = None  # where the prefix's padding goes (sequence only)

    def roles(self) -> Roles:
        """part -> (input roles, output roles) of this decoder kind."""
        return SEQUENCE_ROLES if self.kind == "sequence" else ROLES


@dataclass(frozen=True, config=_STRICT)
class FileRef:
    path: str
    sha256: Sha256
    bytes: Positive


@dataclass(config=_STRICT)
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
    runtime: dict[str, Any]  # {"tflite_runtime_2_14": bool, "tflite_runtime_2_14_aarch64": bool, "oldest": str, ...}
    source: dict[str, Any]  # run, config_hash (Config.model_hash), config (full dict), weights, weights_sha256
    calibration: dict[str, Any] | None = None  # int8 parts only: sources, counts, augmentation, warnings
    verification: dict[str, Any] | None = None  # convert.verify: per-stage errors, identical shares, passed
    format: Literal["edgecap-bundle/1"] = FORMAT
    extra: dict[str, Any] = field(default_factory=dict)  # keys this reader does not know, kept on save

    # ---- JSON ----------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """JSON-native types only (lists, not tuples): equal to what `load` reads back."""
        d = asdict(self)
        extra = d.pop("extra")
        fmt = d.pop("format")
        for section, quiet in _QUIET_DEFAULTS.items():
            for key, default in quiet.items():
                if d[section].get(key, default) == default:
                    d[section].pop(key, None)
        return json.loads(json.dumps({"format": fmt, **d, **extra}))

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / MANIFEST_NAME
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path

    @classmethod
    def from_json(cls, d: Any) -> Manifest:
        """A parsed manifest.json -> Manifest, validated as JSON (strict types, bounds), then `validate`."""
        if not isinstance(d, dict):
            raise ManifestError("manifest: expected a JSON object")
        fmt = d.get("format")
        if fmt != FORMAT:
            raise ManifestError(f"manifest: format {fmt!r} is not {FORMAT!r} (made by another edgecap version?)")
        known = {f.name for f in fields(cls)} - {"extra"}
        payload = {k: v for k, v in d.items() if k in known}
        payload["extra"] = {k: v for k, v in d.items() if k not in known}
        if "decoder" in d:
            payload["decoder"] = _with_step_batch(d)
        try:
            # json mode: arrays are tuples, and strict means what it means in a JSON file
            m = _ADAPTER.validate_json(json.dumps(payload))
        except ValidationError as e:
            raise ManifestError(f"manifest: {_one_line(e)}") from None
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
        except ManifestError as e:  # "<path>: input.size: ...", the path naming the manifest
            raise ManifestError(f"{path}: {str(e).removeprefix('manifest: ')}") from None

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The manifest's JSON Schema (draft 2020-12), from the same dataclasses `from_json` validates with.
        `extra` is not a key of the file: unknown top-level keys are allowed; decoder.step_batch may be absent
        (older manifests, see the compatibility rules)."""
        schema = _ADAPTER.json_schema()
        schema["title"] = f"edgecap bundle manifest ({FORMAT})"
        schema["description"] = "manifest.json of an edgecap bundle folder: see docs/bundle.md"
        schema["properties"].pop("extra")
        schema["additionalProperties"] = True
        decoder = schema["$defs"]["DecoderSpec"]
        decoder["required"] = [k for k in decoder["required"] if k != "step_batch"]
        return schema

    # ---- checks --------------------------------------------------------------------------------
    def validate(self) -> None:
        """Checks across fields that a runtime relies on (types and bounds are the schema's); raises
        ManifestError. runtime.bundle checks the rest against vocab.json and the loaded models."""
        missing = [p for p in PARTS if p not in self.files]
        if missing:
            raise ManifestError(f"manifest: files lack {', '.join(missing)}")
        refs = [(f"files.{k}", f.path) for k, f in self.files.items()] + [("vocab", self.vocab.path)]
        for where, path in refs:
            p = PurePosixPath(path)
            if not path or p.is_absolute() or len(p.parts) != 1 or path in (".", "..") or "\\" in path:
                raise ManifestError(f"manifest: {where}.path {path!r} must be a plain file name inside the bundle")
        i, dec = self.input, self.decoder
        for part, (ins, outs) in dec.roles().items():
            f = self.files[part]
            for role in ins:
                if role not in f.inputs:
                    raise ManifestError(f"manifest: files.{part}.inputs lacks {role!r}")
            for role in outs:
                if role not in f.outputs:
                    raise ManifestError(f"manifest: files.{part}.outputs lacks {role!r}")
        if len(i.view_order) != i.max_views:
            raise ManifestError(
                f"manifest: input.view_order names {len(i.view_order)} views, max_views is {i.max_views}"
            )
        if dec.attention_positions != i.max_views * dec.positions_per_view:
            raise ManifestError("manifest: decoder.attention_positions != input.max_views * positions_per_view")
        self._validate_kind()
        if (i.channel_mean is None) != (i.channel_std is None) or len(i.channel_std or (1, 1, 1)) != 3:
            raise ManifestError("manifest: input.channel_mean and channel_std go together, 3 values each")
        rows_role = "sequence" if dec.kind == "sequence" else "token"
        token = self.files["decoder_step"].inputs[rows_role].shape
        if tuple(token[:1]) != (dec.step_batch,):
            raise ManifestError(
                f"manifest: decoder.step_batch {dec.step_batch} != the decoder step's {rows_role} rows {tuple(token)}"
            )
        for key in ("pad", "bos", "eos", "unk"):
            if not 0 <= self.special.get(key, -1) < dec.vocab_size:
                raise ManifestError(f"manifest: special.{key} missing or outside the vocabulary")
        if not -1 <= self.special.get("sep", -1) < dec.vocab_size:
            raise ManifestError("manifest: special.sep outside the vocabulary (-1: none)")
        if not self.notice.strip():
            raise ManifestError("manifest: notice is empty")

    def _validate_kind(self) -> None:
        """The fields each decoder kind needs, and none it cannot use."""
        i, dec = self.input, self.decoder
        if dec.kind == "recurrent":
            if dec.hidden_size is None:
                raise ManifestError("manifest: decoder lacks hidden_size (a recurrent decoder's state size)")
            if dec.sequence_length is not None or dec.padding is not None:
                raise ManifestError("manifest: decoder.sequence_length and padding are for kind 'sequence' only")
            return
        if dec.sequence_length is None or dec.padding is None:
            raise ManifestError("manifest: a decoder of kind 'sequence' needs sequence_length and padding")
        if dec.max_len > dec.sequence_length - 1:
            raise ManifestError(
                f"manifest: decoder.max_len {dec.max_len} does not fit sequence_length {dec.sequence_length} "
                f"(<bos> + max_len tokens)"
            )
        if (i.max_views, dec.positions_per_view) != (1, 1):
            raise ManifestError(
                "manifest: a decoder of kind 'sequence' reads one feature vector: max_views 1, positions_per_view 1"
            )

    def tensor_shapes(self) -> dict[str, dict[str, dict[str, tuple[int, ...]]]]:
        """part -> "inputs" / "outputs" -> role -> the shape the input and decoder fields imply (the module
        docstring's table); runtime.bundle holds each loaded model to it."""
        i, d = self.input, self.decoder
        b, h, n = d.step_batch, d.hidden_size or 0, d.attention_positions
        encoder: dict[str, dict[str, tuple[int, ...]]] = {
            "inputs": {"image": (1, i.size, i.size, i.channels)},
            "outputs": {"features": (1, d.positions_per_view, d.feature_dim)},
        }
        if d.kind == "sequence":
            return {
                "encoder": encoder,
                "decoder_step": {
                    "inputs": {"sequence": (b, d.sequence_length or 0), "features": (b, d.feature_dim)},
                    "outputs": {"logits": (b, d.vocab_size)},
                },
            }
        return {
            "encoder": encoder,
            "decoder_step": {
                "inputs": {"token": (b,), "h": (b, h), "c": (b, h), "features": (1, n, d.feature_dim), "mask": (1, n)},
                "outputs": {"logits": (b, d.vocab_size), "h": (b, h), "c": (b, h), "attention": (b, n)},
            },
        }


_ADAPTER = TypeAdapter(Manifest)  # validates a whole manifest and writes its JSON Schema


def _with_step_batch(d: dict) -> Any:
    """The decoder object; step_batch, when absent (older bundles), from the decoder step's token input (B,)."""
    dec = d["decoder"]
    if not isinstance(dec, dict) or "step_batch" in dec:
        return dec  # the schema judges it
    try:
        rows = d["files"]["decoder_step"]["inputs"]["token"]["shape"][0]
    except (KeyError, IndexError, TypeError):
        return dec  # "decoder lacks step_batch", or the token's own error
    return {**dec, "step_batch": rows}


def _one_line(e: ValidationError) -> str:
    """The first problem pydantic found, as one line naming the field: "input.size: Input should be a valid
    integer, got '224'"; "(and N more)" when there are others."""
    err = e.errors(include_url=False)[0]
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
    kind, ctx, value = err["type"], err.get("ctx", {}), err.get("input")
    if kind == "missing":
        parent, _, name = where.rpartition(".")
        text = f"{parent} lacks {name}" if parent else f"lacks {name}"
    elif kind in _BOUNDS:
        op, key = _BOUNDS[kind]
        text = f"{where} must be {op} {ctx[key]}, got {_short(value)}"
    elif kind == "string_pattern_mismatch":
        text = f"{where} {_short(value)} does not match {ctx['pattern']}"
    else:
        got = f", got {_short(value)}" if isinstance(value, (str, int, float, bool)) or value is None else ""
        text = f"{where}: {err['msg']}{got}" if where else f"{err['msg']}{got}"
    more = e.error_count() - 1
    return text + (f" (and {more} more)" if more else "")


_BOUNDS = {
    "greater_than": (">", "gt"),
    "greater_than_equal": (">=", "ge"),
    "less_than": ("<", "lt"),
    "less_than_equal": ("<=", "le"),
}


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


if __name__ == "__main__":  # python -m edgecap.runtime.manifest > manifest.schema.json
    json.dump(Manifest.json_schema(), sys.stdout, indent=2)
    sys.stdout.write("\n")
