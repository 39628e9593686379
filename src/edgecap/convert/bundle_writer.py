"""Write a bundle folder: the model files, vocab.json, and the manifest that describes them
(runtime.manifest, format "edgecap-bundle/1"). build_manifest for a run's recurrent decoder,
build_sequence_manifest for a user's sequence-input Keras decoder (convert.keras_import)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from edgecap import __version__
from edgecap.config import Config
from edgecap.convert.flatbuffer import read_ops
from edgecap.convert.modes import Mode
from edgecap.runtime.bundle import sha256_file
from edgecap.runtime.interpreter import SignatureModel
from edgecap.runtime.manifest import DEFAULT_NOTICE, DecoderSpec, FileRef, InputSpec, Manifest, ModelFile, TensorSpec
from edgecap.runtime.study import VIEW_ORDER
from edgecap.runtime.vocab import Vocabulary

# role -> signature tensor name, as convert.export.export_views names them
TENSOR_NAMES = {
    "encoder": ({"image": "image"}, {"features": "features"}),
    "decoder_step": (
        {"token": "token", "h": "h", "c": "c", "features": "features", "mask": "mask"},
        {"logits": "logits", "h": "h_out", "c": "c_out", "attention": "attention"},
    ),
}
# a sequence-input decoder step (training.keras_sequence.export_decoder)
SEQUENCE_TENSOR_NAMES = {
    "encoder": TENSOR_NAMES["encoder"],
    "decoder_step": ({"sequence": "sequence", "features": "features"}, {"logits": "logits"}),
}
COLOR = (
    "grayscale: RGB(A) input becomes ITU-R 601 luma, 16-bit input is min-max stretched; the gray image is "
    "replicated to the 3 channels (runtime.preprocess)"
)
RESIZE = "plain square resize to size x size (no crop, no letterbox), INTER_AREA when shrinking (runtime.preprocess)"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def write_model(out: Path, part: str, mode: Mode, data: bytes, names: dict | None = None) -> ModelFile:
    """Write one .tflite file and describe it (ops from the flatbuffer, tensors from the interpreter).
    names: role -> signature name per part (TENSOR_NAMES, or SEQUENCE_TENSOR_NAMES)."""
    path = out / mode.file_name(part)
    path.write_bytes(data)
    model = SignatureModel.load(data)
    ins, outs = (names or TENSOR_NAMES)[part]

    def spec(table, roles):
        return {
            role: TensorSpec(name, tuple(table[name]["shape"]), table[name]["dtype"]) for role, name in roles.items()
        }

    ops = read_ops(data)
    return ModelFile(
        path=path.name,
        sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data),
        precision=mode.precision(part),
        ops=tuple(ops),
        op_versions=ops,
        min_runtime={
            "ai-edge-litert": _version("ai-edge-litert"),
            "tflite-runtime": "2.14.0" if mode.tflite_runtime_214 else None,
        },
        inputs=spec(model.inputs, ins),
        outputs=spec(model.outputs, outs),
    )


def _oldest(mode: Mode, litert: str | None) -> str:
    """The oldest interpreter known to run the files, per CPU where that differs (convert.modes)."""
    if mode.tflite_runtime_214_aarch64:
        return "tflite-runtime 2.14.0"
    if mode.tflite_runtime_214:
        return f"tflite-runtime 2.14.0 on x86_64; ai-edge-litert {litert} on aarch64 (Raspberry Pi, Android)"
    return f"ai-edge-litert {litert}"


def build_manifest(
    out: Path,
    mode: Mode,
    cfg: Config,
    vocab: Vocabulary,
    files: dict[str, ModelFile],
    source: dict,
    calibration: dict | None,
    notice: str = DEFAULT_NOTICE,
    *,
    positions: int,
    step_batch: int,
) -> Manifest:
    """Write vocab.json beside the model files and return the manifest (not yet saved, no verification).
    positions: P, attention positions per view; step_batch: rows of the decoder step file (its token input)."""
    image = InputSpec(
        size=cfg.image.size,
        channels=3,
        mean=cfg.image.mean,
        std=cfg.image.std,
        color=COLOR,
        resize=RESIZE,
        max_views=cfg.max_views,
        view_order=VIEW_ORDER[: cfg.max_views],
    )
    decoder = DecoderSpec(
        max_len=cfg.text.max_len,
        hidden_size=cfg.decoder.hidden,
        positions_per_view=positions,
        feature_dim=cfg.encoder.feature_dim,
        attention_positions=cfg.max_views * positions,
        vocab_size=len(vocab),
        step_batch=step_batch,
    )
    return build_sequence_manifest(out, mode, vocab, files, source, calibration, notice, image=image, decoder=decoder)


def _runtime(mode: Mode) -> dict:
    """The manifest's "runtime": which interpreters load the files."""
    litert = _version("ai-edge-litert")
    return {
        "tflite_runtime_2_14": mode.tflite_runtime_214,
        "tflite_runtime_2_14_aarch64": mode.tflite_runtime_214_aarch64,
        "oldest": _oldest(mode, litert),
        "verified_with": f"ai-edge-litert {litert}",
        "converted_with": f"tensorflow {_version('tensorflow-cpu') or _version('tensorflow')}",
        "note": mode.note,
    }


def build_sequence_manifest(
    out: Path,
    mode: Mode,
    vocab: Vocabulary,
    files: dict[str, ModelFile],
    source: dict,
    calibration: dict | None,
    notice: str,
    *,
    image: InputSpec,
    decoder: DecoderSpec,
) -> Manifest:
    """The manifest from its input and decoder fields given whole: build_manifest derives them from an edgecap
    run's config, convert.keras_import from the user's models and tokenizer (a sequence-input decoder)."""
    vocab_path = out / "vocab.json"
    vocab.save(vocab_path)
    return Manifest(
        edgecap_version=__version__,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        mode=mode.name,
        mode_settings=json.loads(json.dumps(mode.to_dict())),
        notice=notice,
        files=files,
        vocab=FileRef(vocab_path.name, sha256_file(vocab_path), vocab_path.stat().st_size),
        input=image,
        decoder=decoder,
        special=vocab.special_ids(),
        runtime=_runtime(mode),
        source=source,
        calibration=calibration,
    )
