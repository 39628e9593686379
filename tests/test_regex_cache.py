"""The labeler's regexes compiled ahead of time (labeler.regex_cache): a second process builds each Pattern from
the cached opcodes, and gets exactly re.compile's Pattern and the same labels; a broken cache is ignored."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from edgecap.labeler import regex_cache

REPORTS = [
    "No pneumothorax or pleural effusion. Heart size is mildly enlarged.",
    "Possible small left basilar atelectasis versus consolidation. Sternotomy wires.",
    "The lungs are clear. XXXX XXXX are normal.",
]

PROBE = """
import json, re, sys
from edgecap.labeler import Labeler, regex_cache
lab = Labeler.default()
reports = json.loads(sys.argv[1])
patterns = [lab._multi.rx, lab._sent_rx, lab._clause_rx, *[o.mentions for o in lab._obs]]
print(json.dumps({
    "from_cache": len(regex_cache._entries or {}),
    "same": all(p == re.compile(p.pattern, p.flags & ~re.UNICODE) for p in patterns if p is not None),
    "labels": [lab.label(r) for r in reports],
}))
"""


def _probe(env_cache) -> dict:
    env = {"EDGECAP_CACHE": str(env_cache), "PATH": "", "HOME": str(env_cache)}
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(REPORTS)], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def test_second_process_builds_the_same_patterns_from_the_cache(tmp_path):
    first = _probe(tmp_path)  # compiles with re, writes the cache
    files = list((tmp_path / "regex").glob("*.json"))
    assert len(files) == 1 and first["from_cache"] > 0  # entries compiled by this process, now saved
    second = _probe(tmp_path)  # every pattern from the file
    assert second["same"] and first["same"]
    assert second["labels"] == first["labels"]
    assert first["labels"][0]["Pneumothorax"] == 0 and first["labels"][0]["Cardiomegaly"] == 1


def test_a_broken_or_foreign_cache_file_is_ignored(tmp_path):
    want = _probe(tmp_path / "clean")["labels"]
    broken = tmp_path / "broken"
    (broken / "regex").mkdir(parents=True)
    name = regex_cache.cache_file().name  # keyed by this Python build, whatever EDGECAP_CACHE is
    (broken / "regex" / name).write_text('{"entries": [["(?:a", 0, 32, [1, 2, 3], 0, {}, []]], "sources": {}')
    assert _probe(broken)["labels"] == want  # truncated JSON: read as empty, rewritten
    json.loads((broken / "regex" / name).read_text())  # now a whole file again


def test_pattern_equality_is_the_check(monkeypatch):
    """compile() stores an entry only when the Pattern built from it equals re.compile's: a mismatch (here,
    opcodes altered on the way) turns the cache off and returns re.compile's Pattern."""
    monkeypatch.setattr(regex_cache, "_enabled", True)
    monkeypatch.setattr(regex_cache, "_entries", {})
    real = regex_cache._parts
    monkeypatch.setattr(regex_cache, "_parts", lambda p, f: (lambda e: (e[0], e[1][:-1] + [0], *e[2:]))(real(p, f)))
    rx = regex_cache.compile(r"(?:pleural|pericardial) effusion")
    assert rx == re.compile(r"(?:pleural|pericardial) effusion") and regex_cache._enabled is False
    assert regex_cache._entries == {}


def test_an_unwritable_cache_is_no_error(tmp_path):
    """Where the cache folder cannot be made (here EDGECAP_CACHE is a file), the labeler still works, from re."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    out = _probe(blocker)
    assert out["same"] and out["labels"][0]["Pneumothorax"] == 0
    assert [p.name for p in tmp_path.iterdir()] == ["not-a-folder"]  # nothing written beside it either
