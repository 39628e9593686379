"""The runtime never touches the network, and never needs TensorFlow: in a fresh process where sockets
raise and TensorFlow / Keras cannot be imported, a real bundle loads, real images (PNG and DICOM) are
captioned, and the `caption` command writes a batch.

Every socket the process tries to create is refused and recorded, and any attempt at all fails the test. (pydicom
imports pydicom.data -> requests -> urllib3, whose import-time `_has_ipv6` probe creates a socket bound to ::1;
runtime.dicom.import_pydicom imports pydicom without requests, so not even that probe runs: issue #13 item 14.)
"""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.tf  # building the bundle fixture needs TensorFlow; the child process has none

CODE = r"""
import socket, sys

sys.modules["tensorflow"] = None  # any `import tensorflow` now raises ImportError
sys.modules["keras"] = None
attempts = []


def refuse(*args, **kwargs):
    caller = sys._getframe(2 if isinstance(args[0] if args else None, NoSocket) else 1).f_code
    attempts.append((caller.co_filename, caller.co_name, args[1:] if args and isinstance(args[0], NoSocket) else args))
    raise OSError("network access attempted")


class NoSocket(socket.socket):
    def __init__(self, *args, **kwargs):
        refuse(self, *args)


socket.socket = NoSocket
socket.create_connection = refuse
socket.getaddrinfo = refuse

from pathlib import Path

import typer
from typer.testing import CliRunner

from edgecap.cli.caption import caption
from edgecap.runtime.captioner import Captioner

bundle, image, dicom_file, out = (Path(a) for a in sys.argv[1:5])
captioner = Captioner.from_bundle(bundle)
png = captioner.caption(image, beam=3)
dcm = captioner.caption(dicom_file, beam=3)
assert png.text and png.tokens == dcm.tokens, (png.text, dcm.text)

app = typer.Typer(add_completion=False)
app.command()(caption)
result = CliRunner().invoke(app, [str(image), str(dicom_file), "--bundle", str(bundle), "--out", str(out)])
assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
assert len(out.read_text().splitlines()) == 2

assert not attempts, attempts
assert sys.modules["tensorflow"] is None and not [m for m in sys.modules if m.startswith("tensorflow.")]
assert "ai_edge_litert" in sys.modules or "tflite_runtime" in sys.modules
print("ok")
"""


def test_caption_offline_without_tensorflow(caption_bundle, iu_data, make_dicom, tmp_path):
    import numpy as np

    from edgecap.runtime.preprocess import read_image

    image = iu_data / "images" / "CXR25_IM-1024-2001.png"
    dicom_file = tmp_path / "study.dcm"
    dicom_file.write_bytes(make_dicom(np.ascontiguousarray(read_image(image)[..., 0])))
    p = subprocess.run(
        [sys.executable, "-c", CODE, str(caption_bundle), str(image), str(dicom_file), str(tmp_path / "out.jsonl")],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stdout[-2000:] + p.stderr[-4000:]


def test_the_guard_works():
    """The same guard stops a real connection attempt (so a passing test above means something)."""
    code = CODE.split("from pathlib import Path")[0] + (
        "import urllib.request\n"
        "try:\n    urllib.request.urlopen('http://127.0.0.1:9/', timeout=1)\nexcept OSError:\n    pass\n"
        "print(len(attempts))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and int(p.stdout.strip()) >= 1, p.stderr[-2000:]
