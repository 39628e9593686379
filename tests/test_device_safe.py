"""The device-safe parts import and work with TensorFlow and Keras made unimportable."""

import subprocess
import sys

CODE = r"""
import sys
sys.modules["tensorflow"] = None
sys.modules["keras"] = None
import numpy as np
from edgecap.runtime import decoding, errors, formats, preprocess, study, text, vocab
from edgecap.data import iu_xray, splits, stats, fetch
from edgecap.config import Config
from edgecap.resources import sample_image
x = preprocess.load(sample_image(), 224, 127.0, 128.0)
assert x.shape == (224, 224, 3)
v = vocab.Vocabulary.build([text.clean_report("The heart is normal. The lungs are clear.")], 1)
assert v.render(v.encode(text.clean_report("The heart is normal."))) == "The heart is normal."
print("ok")
"""


def test_runtime_and_data_without_tensorflow():
    p = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr[-2000:]
