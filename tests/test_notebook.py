"""docs/walkthrough.ipynb: committed without outputs, and executed end to end (nbclient) in a fresh folder.

The executed run trains fewer epochs than the notebook's default (its `parameters` cell is rewritten): the
notebook's own code runs unchanged, in a kernel started from this interpreter (never another Python's kernel).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "walkthrough.ipynb"
EPOCHS = 30  # the executed run: ~30 s of training here instead of the notebook's 120 epochs (~75 s)
CELL_TIMEOUT_S = 600  # per cell: a hung kernel fails the test instead of the suite


def tagged(nb, tag: str):
    """The one cell carrying `tag` in its metadata."""
    cells = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{len(cells)} cells tagged {tag!r}"
    return cells[0]


def text_of(cell) -> str:
    """Everything a code cell printed or displayed as text (streams, text/plain, text/markdown)."""
    parts = []
    for out in cell.outputs:
        if out.output_type == "stream":
            parts.append(out.text)
        elif "data" in out:
            parts += [out.data.get("text/markdown", ""), out.data.get("text/plain", "")]
    return "\n".join(parts)


def test_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "the walkthrough has no code cells"
    for c in code:
        assert c.outputs == [] and c.execution_count is None, f"outputs left in cell: {c.source[:60]!r}"
    assert nb.metadata["kernelspec"]["name"] == "python3"
    # the first cell installs edgecap on Colab / Kaggle, guarded by whether edgecap imports
    assert code[0] is tagged(nb, "install") and 'find_spec("edgecap") is None' in code[0].source
    assert "EPOCHS = 120" in tagged(nb, "parameters").source


def venv_kernel():
    """An async kernel manager whose kernel is this interpreter (sys.executable) with ipykernel, whatever
    kernel named python3 a user or system folder may also hold."""
    from ipykernel.kernelspec import get_kernel_dict
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    class ThisPython(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            return KernelSpec(resource_dir="", **get_kernel_dict())

    assert get_kernel_dict()["argv"][0] == sys.executable
    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=ThisPython())


@pytest.mark.slow
@pytest.mark.tf
def test_walkthrough_runs_end_to_end(tmp_path, cache_dir):
    pytest.importorskip("tensorflow")
    pytest.importorskip("ipykernel")
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = tagged(nb, "parameters")
    params.source = params.source.replace("EPOCHS = 120", f"EPOCHS = {EPOCHS}")
    assert f"EPOCHS = {EPOCHS}" in params.source
    client = NotebookClient(
        nb, km=venv_kernel(), timeout=CELL_TIMEOUT_S, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, when any cell fails

    for c in nb.cells:
        if c.cell_type == "code":
            assert c.execution_count is not None, c.source[:60]
            assert not [o for o in c.outputs if o.output_type == "error"], c.source[:60]
    assert tagged(nb, "install").outputs == []  # edgecap is importable here: nothing installed, nothing printed
    assert "openi" in text_of(tagged(nb, "data-stats")) and "3955" in text_of(tagged(nb, "data-stats"))
    for tag in ("sample-images", "curves", "attention"):
        assert any("image/png" in o.get("data", {}) for o in tagged(nb, tag).outputs), f"no picture from {tag}"
    assert "token-identical to Keras" in text_of(tagged(nb, "convert"))  # the verification table

    run, bundle = tmp_path / "runs" / "walkthrough", tmp_path / "runs" / "walkthrough-int8"
    assert (run / "best.weights.h5").is_file() and (run / "curves.png").is_file()
    history = (run / "history.csv").read_text().splitlines()
    assert sum(line.startswith("image,") for line in history) == EPOCHS  # every epoch trained, one row each
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["mode"] == "int8" and "demonstration" in manifest["notice"].lower()
    for part in manifest["files"].values():
        assert (bundle / part["path"]).is_file()

    cli = text_of(tagged(nb, "caption-cli"))
    assert "exit status 0" in cli
    report = text_of(tagged(nb, "caption"))
    assert "demonstration model: True" in report
    # the report itself: the line after the notice, words and a full stop, never the anonymisation token
    text = report.split("\n\n", 1)[1].splitlines()[0]
    assert len(text.split()) >= 3 and "." in text and "xxxx" not in text.lower(), report
    assert text in cli  # the command and the API wrote the same report
    assert "total_ms" in text_of(tagged(nb, "timing"))
