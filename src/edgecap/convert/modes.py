"""The one table of bundle modes: CLI flag, file suffix, converter setting per part, verification thresholds,
and whether the files load in tflite-runtime 2.14 (the last tflite-runtime; python-for-android builds it), on
x86_64 and on aarch64.

Everything that differs between modes is read from `MODES`; nothing else in the converter branches on a
mode's name. Device-safe (stdlib only), so the runtime and the bench may show the same table.

Precisions a part can be converted with (convert.export.convert_model):

    float32   no optimisation
    float16   weights stored as float16, expanded to float32 at load (half the size, float32 speed)
    dynamic   weights int8, activations float (hybrid kernels quantise activations on the fly)
    int8      weights and activations int8, calibrated on real data; float32 inputs and outputs; a part
              may keep a few operator types (`Part.float_ops`) or its few most error-prone small layers
              (`Part.float_layers`) in float32: selective quantization, see the int8 row for why
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

PRECISIONS = ("float32", "float16", "dynamic", "int8")


@dataclass(frozen=True)
class Thresholds:
    """What a conversion must reach against the Keras model (convert.verify); one place for all of them."""

    min_identical: float  # share of reports that match Keras's, greedy AND beam 3, same decode loop
    tie_margin: float  # a different report still counts when it is a near tie (convert.verify.tie_gap < this,
    #                    nats): greedy, Keras nearly chose the bundle's token; beam, the bundle itself does
    #                    not prefer its report to Keras's by this much
    max_feature_error: float  # encoder: ||tflite - keras|| / ||keras|| of a view's feature map, worst image
    max_logit_error: float  # decoder step: max |tflite - keras| / max |keras| over recorded real steps

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Part:
    """How one file of the bundle is converted."""

    precision: str  # PRECISIONS
    float_ops: tuple[str, ...] = ()  # int8 only: operator types left in float32 (selective quantization)
    # int8 only: this many layers left in float32, those whose own quantization error (rmse / scale of the
    # output, measured by TensorFlow's quantization debugger on the calibration data) is largest, among the
    # layers with at most FLOAT_LAYER_MAX_WEIGHTS weights (convert.export.rank_layers)
    float_layers: int = 0


@dataclass(frozen=True)
class Mode:
    name: str
    flag: str  # CLI flag of `edgecap convert`
    suffix: str  # encoder_<suffix>.tflite, decoder_step_<suffix>.tflite
    encoder: Part
    decoder: Part  # the decoder step file
    thresholds: Thresholds
    tflite_runtime_214: bool  # the files load in tflite-runtime 2.14 on x86_64 (scripts/check_tflite_runtime_214.py)
    tflite_runtime_214_aarch64: bool  # ... and run on aarch64 (edgecap device-check --runtime tflite-runtime-2.14)
    note: str  # why this mode exists / what its threshold means

    @property
    def needs_calibration(self) -> bool:
        return "int8" in (self.encoder.precision, self.decoder.precision)

    def part(self, name: str) -> Part:
        return {"encoder": self.encoder, "decoder_step": self.decoder}[name]

    def precision(self, name: str) -> str:
        return self.part(name).precision

    def file_name(self, part: str) -> str:
        return f"{part}_{self.suffix}.tflite"

    def to_dict(self) -> dict:
        return asdict(self)


# Report thresholds. float32 and float16 must give token-identical reports (tie_margin 0). int8 and dynamic
# parts carry logit errors of ~0.3-0.6 nats (99th percentile over real decoder steps), so where Keras's own
# choice is closer than that, either report is within conversion noise. Such a different report counts as
# matching, listed as a near tie, when
#   greedy: Keras preferred its token to the bundle's by < 0.5 nats (odds < 1.65 : 1) at the first difference;
#   beam:   the bundle's own model does not prefer its report to Keras's by 0.5 nats or more, i.e. pruning
#           took another path, not the converted model's preference.
# Both rules cover real cases: the tiny model's greedy report of a study it never trained on (uid 2779, a gap
# of 0.22 nats), and the 80-epoch edge model's beam-3 report of uid 79, where trigram blocking forbids the
# memorised report and the bundle itself rates Keras's report 16 nats above the one its beam keeps.
#
# Stage thresholds (encoder: relative L2 error of the feature map; decoder: max abs logit error / max abs
# logit). float32 differs from Keras only by the order of floating-point operations. float16 rounds weights to
# 11 significant bits (~5e-4 relative per weight), which adds up over the encoder's 16 blocks to a 1-1.7 %
# feature-map error on EfficientNet-Lite0 and 0.02 % on the tiny CNN. The bounds of quantized parts are loose
# on purpose: they catch a broken conversion (a zero or scrambled output has relative error >= 1), while the
# agreement of the reports on real images is the test that matters. Typical values on EfficientNet-Lite0:
# dynamic-range encoder 0.18-0.27, int8 encoder 0.34-0.48; int8 decoder logits 0.01-0.06.
_EXACT = {"min_identical": 1.0, "tie_margin": 0.0}
# A layer kept in float32 stores 4 bytes a weight instead of 1: 100,000 weights add 0.3 MB. EfficientNet-Lite0's
# layers that drift most are its small early ones (the stem, the first blocks); its 1x1 convolutions near the
# head (up to 410,000 weights) would add up to 1.2 MB each.
FLOAT_LAYER_MAX_WEIGHTS = 100_000
ENCODER_FLOAT_LAYERS = 8
DECODER_FLOAT_OPS = ("SOFTMAX", "MUL", "SUM", "DIV", "ADD", "TANH", "LOGISTIC", "RESHAPE")
MODES: dict[str, Mode] = {
    m.name: m
    for m in (
        Mode(
            "float32",
            "--float32",
            "float32",
            Part("float32"),
            Part("float32"),
            Thresholds(**_EXACT, max_feature_error=1e-4, max_logit_error=1e-4),
            True,
            True,
            "reference conversion: only the order of floating-point operations differs from Keras",
        ),
        Mode(
            "float16",
            "--float16",
            "float16",
            Part("float16"),
            Part("float16"),
            Thresholds(**_EXACT, max_feature_error=5e-2, max_logit_error=2e-2),
            True,
            True,
            "half the size of float32 at float32 speed; must give the same reports as Keras",
        ),
        # Dynamic range: the same 8-bit weight rounding as full int8, hence the same bar as int8. Not token
        # identity: the hybrid kernels quantise activations per call, which can flip a near tie between two next
        # tokens. Not a lower bar than int8 either: its activations stay float, so its drift is at most int8's.
        Mode(
            "dynamic",
            "--dynamic",
            "dynamic",
            Part("dynamic"),
            Part("dynamic"),
            Thresholds(min_identical=0.95, tie_margin=0.5, max_feature_error=0.75, max_logit_error=0.25),
            False,
            False,
            "int8 weights, float activations, no calibration; TF 2.21 writes FULLY_CONNECTED v12 / CONV_2D v5, "
            "which tflite-runtime 2.14 cannot load",
        ),
        # tflite-runtime 2.14 on aarch64 (the last tflite-runtime; a Pi's and Android's CPU), checked on an
        # emulated Pi (edgecap device-check --runtime tflite-runtime-2.14): the float32 and float16 files run,
        # and so did mode int8's encoder of the time (float16), but Invoke() of the int8 decoder step (int8
        # FULLY_CONNECTED v5, GATHER v2, SPLIT v2, CONCATENATION v2) dies with SIGSEGV, with XNNPACK on or off,
        # on Cortex-A76/A72/A57/A53 models, while the same file runs on tflite-runtime 2.14 x86_64 and on
        # ai-edge-litert 2.3 aarch64. Whether a real Pi crashes too cannot be told here (qemu may be at fault),
        # so the int8 modes do not promise it.
        #
        # int8 decoder (both int8 modes): the matrix products (FULLY_CONNECTED: attention query, LSTM kernels,
        # output projection, ~95 % of the weights) and the embedding lookup run in int8; the element-wise math
        # (DECODER_FLOAT_OPS) stays float32. Why: in an all-int8 step, the softmax over N positions rounds each
        # weight to a multiple of 1/256, and the mask renormalisation a / sum(a) can then divide by a sum rounded
        # to zero: LiteRT stops with "div.cc: data[i] != zero_point" (20 of 1,745 real steps of the tiny model),
        # and top-1 agreement is 94.7 %. With the attention ops in float32 there is no failure, 98.8 % agreement
        # and one greedy report differs; with all of DECODER_FLOAT_OPS in float32, 99.5 % and identical reports,
        # at the same file size and 3-4x the speed of float32.
        #
        # int8 encoder: EfficientNet-Lite0 drifts in full int8 (feature-map error 0.36 relative on the default
        # model's verification images) and, on the bench's 100 inputs, 78 of 100 beam-3 reports of the default model
        # stay token-identical to Keras's (the int8 decoder alone, with a float16 encoder: 96). The drift comes
        # from a few layers: ranked by their own quantization error (rmse / output scale; a well-quantized layer
        # has ~0.29, the stem 3.1 and the first depthwise 2.9, because chest X-rays use a small part of their
        # ReLU6 range), keeping the worst ENCODER_FLOAT_LAYERS small ones in float32 halves the feature error
        # (median 0.195 -> 0.090) and gives 95 identical reports, for 0.04 MB and ~0.7 ms a view. Measured on the
        # default model (k: layers kept -> identical of 100): 0 -> 78, 2 -> 82, 5 -> 87, 6 -> 86, 7 -> 90,
        # 8 -> 95, 9 -> 95, 10 -> 93, 12 -> 92, 16 -> 91; every depthwise layer in float32 instead: no gain; every
        # projection layer: 88. So `int8` is that encoder (4.3 MB, ~5 ms a view on one core, where the earlier
        # float16 encoder took 7.4 MB and ~10 ms) with the int8 decoder; `int8-full` quantizes every layer.
        Mode(
            "int8",
            "--int8",
            "int8",
            Part("int8", float_layers=ENCODER_FLOAT_LAYERS),
            Part("int8", DECODER_FLOAT_OPS),
            Thresholds(min_identical=0.95, tie_margin=0.5, max_feature_error=0.5, max_logit_error=0.25),
            True,
            False,
            f"int8 encoder with its {ENCODER_FLOAT_LAYERS} most error-prone small layers in float32 + int8 decoder "
            "(matrix products int8, element-wise math float32), both calibrated on real and augmented images (the "
            "decoder on steps recorded while Keras decodes them); float32 inputs and outputs",
        ),
        Mode(
            "int8-full",
            "--int8-full",
            "int8full",
            Part("int8"),
            Part("int8", DECODER_FLOAT_OPS),
            Thresholds(min_identical=0.95, tie_margin=0.5, max_feature_error=0.75, max_logit_error=0.25),
            True,
            False,
            "every encoder layer int8 (calibrated on real and augmented images) + the int8 decoder of mode int8: "
            "smallest and fastest, but EfficientNet-Lite0 drifts in full int8; use it only where verification passes",
        ),
    )
}


def by_name(name: str) -> Mode:
    try:
        return MODES[name]
    except KeyError:
        raise ValueError(f"unknown mode {name!r}: choose one of {', '.join(MODES)}") from None


def runtime_214_support(m: Mode) -> str:
    """Where tflite-runtime 2.14 runs a mode's files: "yes" (x86_64 and aarch64), "x86_64 only" or "no"."""
    return "yes" if m.tflite_runtime_214_aarch64 else "x86_64 only" if m.tflite_runtime_214 else "no"


def table_rows() -> list[list[str]]:
    """One row per mode, for help texts and reports."""
    rows = [
        ["mode", "flag", "encoder", "decoder", "identical >=", "feature err <=", "logit err <=", "tflite-runtime 2.14"]
    ]
    for m in MODES.values():
        t = m.thresholds
        rows.append(
            [
                m.name,
                m.flag,
                _describe(m.encoder),
                _describe(m.decoder),
                f"{t.min_identical:.0%}",
                f"{t.max_feature_error:g}",
                f"{t.max_logit_error:g}",
                runtime_214_support(m),
            ]
        )
    return rows


def _describe(p: Part) -> str:
    return p.precision + (f" ({'/'.join(p.float_ops)} float32)" if p.float_ops else "")
