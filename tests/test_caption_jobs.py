"""`edgecap caption --jobs N` (issue #17, past one machine): N worker processes, each with its own interpreter,
give exactly the records of one process, in the same order; a corrupt image is still an error record; Ctrl-C
still exits 130 with the records written so far, and the same command resumes them.

Inputs (real processes, the shipped default bundle, no TensorFlow): the real IU X-Ray pair CXR54 (one study,
frontal + lateral), 12 images derived from 6 real sample images (each flipped left-right, and each cropped to
its central 90 %: real pixels, new files and keys) and one corrupt PNG (a real image cut to its first 300 bytes).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

SOURCES = [
    "CXR1000_IM-0003-2001.png",
    "CXR100_IM-0002-2001.png",
    "CXR25_IM-1024-2001.png",
    "CXR2608_IM-1098-1001.png",
    "CXR303_IM-1404-1001.png",
    "CXR799_IM-2333-1001.png",
]
TIMINGS = ("timings", "total_ms")  # measured, differ between any two runs


@pytest.fixture
def archive(iu_data, tmp_path) -> Path:
    d = tmp_path / "archive"
    d.mkdir()
    for name in ("CXR54_IM-2145-1001.png", "CXR54_IM-2145-1002.png"):
        shutil.copy(iu_data / "images" / name, d / name)
    for i, name in enumerate(SOURCES):
        gray = cv2.imread(str(iu_data / "images" / name), cv2.IMREAD_GRAYSCALE)
        h, w = gray.shape
        cv2.imwrite(str(d / f"derived_{i:02d}_flip.png"), gray[:, ::-1])
        cv2.imwrite(str(d / f"derived_{i:02d}_crop.png"), gray[h // 20 : h - h // 20, w // 20 : w - w // 20])
    (d / "broken.png").write_bytes((iu_data / "images" / SOURCES[0]).read_bytes()[:300])
    return d


def run(*args, timeout=600) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "edgecap.cli", "caption", *map(str, args), "--no-progress", "--no-attention"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def records(path: Path) -> list[dict]:
    """The output's records without their timings, in file order."""
    out = []
    for line in path.read_text().splitlines():
        r = json.loads(line)
        for k in TIMINGS:
            r.pop(k, None)
        out.append(r)
    return out


def test_jobs_2_writes_exactly_the_records_of_jobs_1(archive, tmp_path):
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    r1 = run(archive, "--out", one, "--jobs", "1")
    r2 = run(archive, "--out", two, "--jobs", "2")
    for r in (r1, r2):
        assert r.returncode == 1, r.stderr  # the corrupt image: exit 1, every other input captioned
        assert "Traceback" not in r.stderr, r.stderr
        assert "13 captioned, 0 already done, 1 failed" in r.stderr, r.stderr
        assert [line for line in r.stderr.splitlines() if line.startswith("error:")] == [
            line for line in r1.stderr.splitlines() if line.startswith("error:")
        ]
    a, b = records(one), records(two)
    assert len(a) == 14 and a == b
    assert [x["status"] for x in a].count("error") == 1 and "broken.png" in next(
        x for x in a if x["status"] == "error"
    )["input"]
    assert any(x.get("study") for x in a)  # the CXR54 pair is one study record
    assert len({x["text"] for x in a if x["status"] == "ok"}) > 1  # different images, not one repeated report
    # resumed with --jobs 2: nothing left to do, the same exit status
    again = run(archive, "--out", two, "--jobs", "2")
    assert again.returncode == 1 and "0 captioned, 14 already done, 1 failed" in again.stderr


def test_jobs_interrupted_exits_130_keeps_records_and_resumes(archive, tmp_path):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) while 2 workers caption 40 inputs."""
    for i in range(3):  # more inputs, so the interrupt lands mid-batch: hard links, each its own key
        (archive / f"copy{i}").mkdir()
        for f in archive.glob("derived_*.png"):
            os.link(f, archive / f"copy{i}" / f.name)
    out = tmp_path / "reports.jsonl"
    argv = [sys.executable, "-m", "edgecap.cli", "caption", str(archive), "--out", str(out), "--jobs", "2"]
    argv += ["--no-progress", "--no-attention"]

    def own_group():
        os.setpgrp()
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # a runner may start the suite with SIGINT ignored

    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=own_group)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 3):
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "Traceback" not in err and "interrupted: results so far are in" in err, err
    kept = records(out)
    assert 3 <= len(kept) < 50
    r = run(archive, "--out", out, "--jobs", "2")
    assert r.returncode == 1 and f"{len(kept)} already done" in r.stderr, r.stderr
    keys = [x["key"] for x in records(out)]
    assert len(keys) == len(set(keys)) == 50  # 1 study + 12 derived + 36 linked copies + 1 corrupt, each once


def test_shards_of_n_machines_caption_every_input_once(archive, tmp_path):
    """--shard I/N: two "machines" (each with --jobs 2 and its own --out) write together the records of one run."""
    whole = tmp_path / "whole.jsonl"
    assert run(archive, "--out", whole).returncode == 1
    parts = [tmp_path / f"part{i}.jsonl" for i in range(2)]
    for i, part in enumerate(parts):
        r = run(archive, "--out", part, "--jobs", "2", "--shard", f"{i}/2")
        assert r.returncode in (0, 1) and "Traceback" not in r.stderr, r.stderr
    a, b = records(parts[0]), records(parts[1])
    assert {x["key"] for x in a}.isdisjoint({x["key"] for x in b})
    assert sorted(a + b, key=lambda x: x["key"]) == sorted(records(whole), key=lambda x: x["key"])
    for bad in ("2/2", "1", "a/b"):
        r = run(archive, "--shard", bad)
        assert r.returncode == 2 and "--shard" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_take_shard_deals_items_round_robin():
    from edgecap.cli.parallel import take_shard

    items = list(range(7))
    assert [take_shard(items, f"{i}/3") for i in range(3)] == [[0, 3, 6], [1, 4], [2, 5]]
    with pytest.raises(ValueError, match="no input in this shard"):
        take_shard([1], "1/2")
