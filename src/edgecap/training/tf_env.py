"""TensorFlow's one home: every edgecap module that uses TensorFlow or Keras imports them from here.

    from edgecap.training.tf_env import keras, tf     # and keras's layers, ops

The first import sets TensorFlow's environment, then imports TensorFlow and Keras quietly:

    TF_CPP_MIN_LOG_LEVEL=2   TensorFlow's C++ info and warning lines off (unless already set, or EDGECAP_VERBOSE=1)
    start-up lines           absl's "WARNING: All log messages before absl::InitializeLog() ..." and oneDNN's
                             "I0000 ... oneDNN custom operations are on ...", each printed twice by TensorFlow 2.21
                             whatever TF_CPP_MIN_LOG_LEVEL says: dropped by runtime.native_logs (any other line of
                             the import, e.g. an error loading a library, still shows)

So `edgecap train`, `evaluate`, `demo` and `convert` (and the bench's Keras reference) print no third-party line
however their modules are imported. EDGECAP_VERBOSE=1 shows every line, for debugging. Importing `tensorflow` or
`keras` directly elsewhere would print the start-up lines again: import them from here.
"""

from __future__ import annotations

import os

from edgecap.runtime.native_logs import native_stderr, verbose

if not verbose():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

with native_stderr():
    import keras
    import tensorflow as tf
    from keras import layers, ops

__all__ = ["keras", "layers", "ops", "tf"]
