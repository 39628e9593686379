"""runtime.files.write_atomically: the old file or the new one, never part of one, and no temporary file left."""

import os

import pytest

from edgecap.runtime.files import write_atomically


def test_replaces_whole_and_cleans_up_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    write_atomically(path, "old\n")
    write_atomically(path, b"new\n")
    assert path.read_text() == "new\n" and oct(path.stat().st_mode & 0o777) == "0o644"

    def interrupted(src, dst):
        raise KeyboardInterrupt  # killed between the write and the rename

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, "half of a newer one")
    assert path.read_text() == "new\n" and [p.name for p in tmp_path.iterdir()] == ["config.json"]
