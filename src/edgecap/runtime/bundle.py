"""A converted bundle, loaded for inference through its manifest only. Device-safe.

    bundle = Bundle.load("bundles/demo", num_threads=2)
    feats, mask = encode_study_files(bundle, [frontal_path, lateral_path])   # runtime.study: (N, D), (N,)
    report = decode(bundle, feats, mask, bundle.special, bundle.max_len, beam=3)

Every file's sha256 is checked against the manifest BEFORE an interpreter sees it: a truncated or
tampered .tflite is a BundleError naming the file, never a crash inside the interpreter. When trust is
configured (runtime.signing: a folder of trusted public keys), the manifest's signature is checked before the
files: a bundle unsigned, signed by an untrusted key, or changed after signing (a vocab edited and re-hashed into
its manifest) is refused. Then each model's signature is checked against the tensors the manifest promises
(names, shapes, dtypes).

`Bundle` implements runtime.decoding.StepModel and runtime.study.ImageEncoder. The decoder step model takes
a fixed number of rows (the manifest's decoder.step_batch, 3 by default: a whole beam-3 step in one
interpreter call; 1 in older bundles); `step` pads a smaller batch and splits a larger one. The shared
features and mask are copied in once per report.

A manifest whose decoder.kind is "sequence" (a user's Keras captioner, convert.keras_import) loads as a
`SequenceBundle`: runtime.decoding.SequenceModel instead of StepModel (padded prefixes + the image's feature
vector -> logits; no state, no attention), the same encoder, checks and step_batch padding.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecap.runtime.decoding import SpecialIds
from edgecap.runtime.interpreter import InterpreterUnavailable, SignatureModel
from edgecap.runtime.manifest import MANIFEST_NAME, Manifest, ManifestError, ModelFile
from edgecap.runtime.vocab import Vocabulary

if TYPE_CHECKING:
    from edgecap.runtime.signing import TrustStore


class BundleError(ValueError):
    """A bundle that cannot be used: missing or corrupt files, or a manifest that does not match them."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class Bundle:
    """Encoder + decoder step + vocabulary of one bundle folder (a recurrent decoder; SequenceBundle below)."""

    decoder_kind = "recurrent"
    has_attention = True  # the decoder step returns attention weights over the image positions

    def __init__(
        self, path: Path, manifest: Manifest, vocab: Vocabulary, encoder: SignatureModel, decoder: SignatureModel
    ):
        self.path, self.manifest, self.vocab = path, manifest, vocab
        self.special = SpecialIds.from_vocab(vocab)
        i, d = manifest.input, manifest.decoder
        self.image_size, self.max_views = i.size, i.max_views
        self.mean: Any = i.mean  # a float, or a (3,) array for a per-channel normalization (below)
        self.std: Any = i.std
        self.max_len, self.hidden_size = d.max_len, d.hidden_size or 0
        if i.channel_mean is not None and i.channel_std is not None:  # a Keras application's per-channel mode
            self.mean, self.std = np.array(i.channel_mean, np.float32), np.array(i.channel_std, np.float32)
        self.positions, self.feature_dim, self.vocab_size = d.positions_per_view, d.feature_dim, d.vocab_size
        self.interpreter_name = encoder.package
        self.view_order = i.view_order  # slot names of the views (runtime.captioner.ReportModel)
        self.info = {
            "path": str(path),
            "mode": manifest.mode,
            "interpreter": encoder.package,
            "notice": manifest.notice,
            "edgecap_version": manifest.edgecap_version,
        }
        self.encoder, self.decoder = encoder, decoder
        enc = manifest.files["encoder"]
        self._image = encoder.index(enc.inputs["image"].name)
        self._features_out = encoder.index(enc.outputs["features"].name, output=True)
        self._bound: tuple = (None, None)  # the (features, mask) objects last copied into the decoder
        # rows of one decoder call (B); the features and mask inputs are always one study's: (1, N, D), (1, N)
        self.step_batch = d.step_batch
        self._pad_buffers: tuple | None = None
        self._bind_decoder(manifest.files["decoder_step"])

    def _bind_decoder(self, dec: ModelFile) -> None:
        """The decoder step's tensor indexes, by role (manifest.ROLES)."""
        self._token, self._h, self._c, self._feats, self._mask = (
            self.decoder.index(dec.inputs[r].name) for r in ("token", "h", "c", "features", "mask")
        )
        self._logits, self._h_out, self._c_out, self._att = (
            self.decoder.index(dec.outputs[r].name, output=True) for r in ("logits", "h", "c", "attention")
        )

    # ---- loading -----------------------------------------------------------------------------------
    @classmethod
    def load(
        cls, path: str | Path, num_threads: int | None = None, trust: TrustStore | str | Path | None = None
    ) -> Bundle:
        """Bundle folder -> Bundle. `trust`: the keys its signature must verify with (runtime.signing; None:
        EDGECAP_TRUSTED_KEYS or the config folder, when set up). Raises BundleError (missing / corrupt /
        mismatched files; signing.SignatureError: unsigned, untrusted or modified after signing while trust is
        configured) or InterpreterUnavailable (no TFLite interpreter installed)."""
        root = Path(path)
        manifest = check_files(root, trust)  # signature and every checksum before any interpreter sees a file
        try:
            vocab = Vocabulary.load(root / manifest.vocab.path)
        except ValueError as e:  # not JSON, not an object, wrong types: the message names the file
            raise BundleError(str(e)) from None
        if len(vocab) != manifest.decoder.vocab_size:
            raise BundleError(
                f"{root}: vocab.json has {len(vocab)} tokens, the manifest says {manifest.decoder.vocab_size}"
            )
        expected = vocab.special_ids()
        if any(manifest.special.get(k) != v for k, v in expected.items()):
            raise BundleError(
                f"{root}: special token ids in the manifest {manifest.special} do not match vocab.json's {expected}"
            )
        models = []
        for part in ("encoder", "decoder_step"):
            f = manifest.files[part]
            try:
                model = SignatureModel.load(root / f.path, num_threads)
            except InterpreterUnavailable:
                raise
            except (ValueError, RuntimeError) as e:
                raise BundleError(f"{root / f.path}: the interpreter cannot load it: {e}") from None
            _check_signature(root / f.path, f, model)
            _check_shapes(root / f.path, manifest, part, model)
            models.append(model)
        kind = SequenceBundle if manifest.decoder.kind == "sequence" else Bundle
        return kind(root, manifest, vocab, *models)

    # ---- inference ---------------------------------------------------------------------------------
    def encode(self, prepared: np.ndarray) -> np.ndarray:
        """One view: prepared image (S, S, 3) float32 (runtime.preprocess) -> features (P, D)."""
        s = self.image_size
        if prepared.shape != (s, s, 3):
            raise ValueError(f"expected a prepared ({s}, {s}, 3) image, got {prepared.shape}")
        self.encoder.set_tensor(self._image, np.ascontiguousarray(prepared[None], np.float32))
        self.encoder.invoke()
        return self.encoder.get_tensor(self._features_out)[0]

    def step(self, tokens: np.ndarray, h: np.ndarray, c: np.ndarray, features: np.ndarray, mask: np.ndarray):
        """runtime.decoding.StepModel: tokens (B,), h/c (B, H), features (N, D), mask (N,)
        -> logits (B, V), h' (B, H), c' (B, H), attention (B, N)."""
        dec = self.decoder
        set_, get, invoke = dec.set_tensor, dec.get_tensor, dec.invoke
        tokens = np.ascontiguousarray(tokens, np.int32)
        h = np.ascontiguousarray(h, np.float32)
        c = np.ascontiguousarray(c, np.float32)
        b = len(tokens)
        if features is not self._bound[0] or mask is not self._bound[1]:
            # The same (N, D) memory for every step of a report: copied into the interpreter once per report,
            # not once per step (100 KB for the edge model; input tensors keep their values across invokes,
            # tests/test_bundle_runtime.py::test_bound_features). Decoding never mutates these arrays.
            set_(self._feats, np.ascontiguousarray(features[None], np.float32))
            set_(self._mask, np.ascontiguousarray(mask[None], np.float32))
            self._bound = (features, mask)
        rows = self.step_batch
        if b == rows:  # the common case: a full beam in one call
            set_(self._token, tokens)
            set_(self._h, h)
            set_(self._c, c)
            invoke()
            return get(self._logits), get(self._h_out), get(self._c_out), get(self._att)
        if b < rows:  # greedy, or a beam not yet full: pad with copies of the last row, keep the first b
            self._pad(tokens, h, c, b)
            invoke()
            return get(self._logits)[:b], get(self._h_out)[:b], get(self._c_out)[:b], get(self._att)[:b]
        parts = [
            self.step(tokens[i : i + rows], h[i : i + rows], c[i : i + rows], features, mask) for i in range(0, b, rows)
        ]  # a beam wider than the model: several calls
        return tuple(np.concatenate(x) for x in zip(*parts))

    def _pad(self, tokens: np.ndarray, h: np.ndarray, c: np.ndarray, b: int) -> None:
        """Set the decoder's row inputs from b < step_batch rows (preallocated buffers, no per-step allocation)."""
        if self._pad_buffers is None:
            rows = self.step_batch
            self._pad_buffers = (
                np.empty(rows, np.int32),
                np.empty((rows, self.hidden_size), np.float32),
                np.empty((rows, self.hidden_size), np.float32),
            )
        for buf, src, index in zip(self._pad_buffers, (tokens, h, c), (self._token, self._h, self._c)):
            buf[:b] = src
            buf[b:] = src[b - 1]
            self.decoder.set_tensor(index, buf)

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}({str(self.path)!r}, mode={self.manifest.mode!r}, interpreter={self.interpreter_name!r})"


class SequenceBundle(Bundle):
    """A bundle whose decoder reads the padded prefix (manifest decoder.kind "sequence"):
    runtime.decoding.SequenceModel. Its encoder gives one feature vector per image: (1, D)."""

    decoder_kind = "sequence"
    has_attention = False

    def _bind_decoder(self, dec: ModelFile) -> None:
        d = self.manifest.decoder
        self.sequence_length, self.padding = d.sequence_length or 0, d.padding or "pre"
        self._sequence, self._vector = (self.decoder.index(dec.inputs[r].name) for r in ("sequence", "features"))
        self._sequence_dtype = np.dtype(dec.inputs["sequence"].dtype)  # the Keras model's: float32 or int32
        self._logits = self.decoder.index(dec.outputs["logits"].name, output=True)

    def step(self, tokens, h, c, features, mask):
        raise TypeError(f"{self.path}: a sequence decoder has no recurrent step; decode with runtime.decoding")

    def predict_next(self, prefixes: np.ndarray, features: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """runtime.decoding.SequenceModel: prefixes (B, L) int padded with 0, features (1, D) (N = 1 position),
        mask (1,) -> logits (B, V). A batch other than step_batch is padded with its last row or split."""
        rows, b = self.step_batch, len(prefixes)
        if b > rows:
            return np.concatenate(
                [self.predict_next(prefixes[i : i + rows], features, mask) for i in range(0, b, rows)]
            )
        if features is not self._bound[0]:  # the same vector on every row, every step of a report: set once
            vector = np.ascontiguousarray(np.broadcast_to(features[:1], (rows, features.shape[1])), np.float32)
            self.decoder.set_tensor(self._vector, vector)
            self._bound = (features, mask)
        padded = np.empty((rows, self.sequence_length), self._sequence_dtype)
        padded[:b] = prefixes
        padded[b:] = prefixes[b - 1]
        self.decoder.set_tensor(self._sequence, padded)
        self.decoder.invoke()
        return self.decoder.get_tensor(self._logits)[:b]


def check_files(root: str | Path, trust: TrustStore | str | Path | None = None) -> Manifest:
    """Read the manifest and check every file it lists (presence, size, sha256); no interpreter involved.
    When trust is configured (`trust`, else the environment's: runtime.signing.resolve_trust), the manifest's
    signature first. Raises BundleError naming the first bad file (signing.SignatureError for the signature)."""
    root = Path(root)
    _check_trust(root, trust)
    try:
        manifest = Manifest.load(root)
    except ManifestError as e:
        raise BundleError(str(e)) from None
    refs = [(f"{part} model", f) for part, f in manifest.files.items()] + [("vocabulary", manifest.vocab)]
    for where, ref in refs:
        _check_file(root, where, ref.path, ref.sha256, ref.bytes)
    return manifest


def _check_trust(root: Path, trust: TrustStore | str | Path | None) -> None:
    """With trust configured: manifest.json signed by a trusted key and unchanged since (signing.verify_bundle).
    A folder without a manifest is left to Manifest.load, whose message says so."""
    from edgecap.runtime.signing import resolve_trust, verify_bundle  # here: runtime.signing imports this module

    store = resolve_trust(trust)
    if store.configured and (root / MANIFEST_NAME).is_file():
        verify_bundle(root, store)


def _check_file(root: Path, where: str, name: str, sha256: str, size: int) -> None:
    path = root / name
    if not path.is_file():
        raise BundleError(f"{path}: the {where} listed in the manifest is missing")
    actual = path.stat().st_size
    if actual != size:
        raise BundleError(
            f"{path}: the {where} has {actual} bytes, the manifest says {size} (truncated or replaced file)"
        )
    digest = sha256_file(path)
    if digest != sha256:
        raise BundleError(
            f"{path}: sha256 mismatch for the {where} (corrupt or tampered file): {digest} != manifest {sha256}"
        )


def _check_signature(path: Path, f: ModelFile, model: SignatureModel) -> None:
    for kind, promised, actual in (("input", f.inputs, model.inputs), ("output", f.outputs, model.outputs)):
        for role, spec in promised.items():
            got = actual.get(spec.name)
            if got is None:
                raise BundleError(f"{path}: no {kind} tensor {spec.name!r} ({role}); the model has {sorted(actual)}")
            if tuple(got["shape"]) != tuple(spec.shape) or got["dtype"] != spec.dtype:
                raise BundleError(
                    f"{path}: {kind} {spec.name!r} is {got['dtype']} {tuple(got['shape'])}, "
                    f"the manifest says {spec.dtype} {tuple(spec.shape)}"
                )


# which manifest fields each tensor's shape follows from (Manifest.tensor_shapes), for the error message
_SHAPE_FIELDS = {
    "image": "input.size, input.channels",
    "encoder.features": "decoder.positions_per_view, decoder.feature_dim",
    "decoder_step.features": "decoder.attention_positions, decoder.feature_dim",
    "token": "decoder.step_batch",
    "h": "decoder.step_batch, decoder.hidden_size",
    "c": "decoder.step_batch, decoder.hidden_size",
    "mask": "decoder.attention_positions",
    "logits": "decoder.step_batch, decoder.vocab_size",
    "attention": "decoder.step_batch, decoder.attention_positions",
    "sequence": "decoder.step_batch, decoder.sequence_length",
    "sequence.decoder_step.features": "decoder.step_batch, decoder.feature_dim",
}


def _check_shapes(path: Path, manifest: Manifest, part: str, model: SignatureModel) -> None:
    """The loaded model's tensors against the shapes the manifest's input and decoder fields imply: an image
    size, hidden size, vocabulary size... that the model does not have would fail on every image or step."""
    f = manifest.files[part]
    for kind, shapes in manifest.tensor_shapes()[part].items():
        specs, actual = (f.inputs, model.inputs) if kind == "inputs" else (f.outputs, model.outputs)
        for role, want in shapes.items():
            got = tuple(actual[specs[role].name]["shape"])  # present: _check_signature ran first
            if got != want:
                fields = (
                    _SHAPE_FIELDS.get(f"{manifest.decoder.kind}.{part}.{role}")
                    or _SHAPE_FIELDS.get(role)
                    or _SHAPE_FIELDS[f"{part}.{role}"]
                )
                raise BundleError(f"{path}: {kind[:-1]} {role!r} is {got}, but the manifest's {fields} imply {want}")
