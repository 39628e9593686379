"""The conversion's default sizes, in a module of their own: `edgecap convert`'s options show them, and the CLI
reads them at start-up without importing the conversion pipeline (every `edgecap` command pays for what the
CLI imports)."""

from edgecap.runtime.decoding import DEFAULT_BEAM

DEFAULT_SAMPLES = 200  # calibration images (real first, then augmentations): encoder inputs, decoded by Keras
DECODER_SAMPLES = 2000  # recorded decoder steps used to calibrate an int8 decoder
VERIFY_STUDIES = 50  # studies whose reports are compared with Keras's
# Rows of the decoder step model (the manifest's decoder.step_batch): one call advances a whole beam of the
# caption default's size; a smaller batch is padded, a larger beam takes several calls (runtime.bundle.Bundle.step).
STEP_BATCH = DEFAULT_BEAM
