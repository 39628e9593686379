"""`edgecap train --strategy multiworker` (issue #17, past one machine): tf.distribute.MultiWorkerMirroredStrategy
through TF_CONFIG, two real worker processes on loopback (127.0.0.1, free ports), CPU only.

What is exactly comparable. Both workers and the reference run the same config file (the tiny model on the
bundled real sample, decoder dropout 0: a dropout mask is drawn per replica, so it cannot be shared), the same
seed, the same global batch of 4 in the same order, and the same split of every global batch: replica r gets
rows [2r, 2r + 2). The reference is one process with MirroredStrategy over 2 logical CPUs, not a single
replica: the tiny encoder has batch normalisation, whose statistics each replica takes over its own 2 rows, so
a single replica of 4 rows is a different computation (measured: its epoch-1 loss differs by 0.14 %, ten
times the tolerance below). Augmentation stays on: an example's draws are seeded by (seed, epoch, index), so a
worker that builds only its own rows draws what the reference draws.

Resume: the workers train 2 epochs, then the same command with --epochs 3 resumes them; so does the reference.
The same, because a resume is not a no-op under any mirrored strategy here: each replica keeps its own batch
norm moving statistics (Keras 3 creates them with aggregation "none"), the checkpoint holds replica 0's, and a
resumed run starts both replicas from those (measured: epoch-3 validation loss 5.6948 resumed against 5.68882
straight through, with the same training loss; measured with full-length reports), one process or two.

Tolerance: relative 1e-4 on every figure of history.csv (written with 6 significant digits). The arithmetic
is the same, replica by replica; only the transport differs (a ring all-reduce over gRPC against an all-reduce
in one process; a sum of two values is the same either way round), so the only expected differences are
float32 roundings in kernels whose summation order follows their thread pool, amplified by a few Adam steps:
measured, none in the 6 digits written. A worker that trained on the wrong rows, or an all-reduce missing,
moves the loss by far more (the single replica above already does).
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from edgecap.training.train import TrainError, WorkerRole, batch_indices, tf_config_role, worker_slices

TOLERANCE = 1e-4
FIGURES = ("train_loss", "val_loss", "val_token_acc", "val_perplexity")


# ---- fast: the parts that need no TensorFlow ------------------------------------------------------------------
def test_tf_config_role_numbers_workers_as_tf_distribute_does():
    two = {"cluster": {"worker": ["h0:1", "h1:1"]}}
    assert tf_config_role(json.dumps({**two, "task": {"type": "worker", "index": 1}})) == WorkerRole(1, 2)
    with_chief = {"cluster": {"chief": ["c:1"], "worker": ["h0:1"]}}
    assert tf_config_role(json.dumps({**with_chief, "task": {"type": "chief", "index": 0}})).chief
    assert tf_config_role(json.dumps({**with_chief, "task": {"type": "worker", "index": 0}})) == WorkerRole(1, 2)
    for bad, says in [
        (None, "needs TF_CONFIG"),
        ("{not json", "not a cluster and task"),
        (json.dumps({"cluster": two["cluster"]}), "not a cluster and task"),
        (json.dumps({**two, "task": {"type": "worker", "index": 2}}), "is not in its cluster"),
        (json.dumps({**two, "task": {"type": "ps", "index": 0}}), "is not in its cluster"),
    ]:
        with pytest.raises(TrainError, match=says):
            tf_config_role(bad)


def test_worker_slices_cover_every_row_once_per_epoch():
    """Across workers and their replicas each row of each global batch is fed once, in replica order."""
    chunks = batch_indices(10, 4, shuffle_seed=7)
    assert [len(c) for c in chunks] == [4, 4, 4]  # the last batch wrapped around to the start
    for workers, local in ((2, 1), (2, 2), (4, 1)):
        fed = [worker_slices(chunks, w, workers, local) for w in range(workers)]
        for step, idx in enumerate(chunks):
            rows = [r for w in range(workers) for r in fed[w][step * local : (step + 1) * local]]
            assert list(map(list, rows)) == [
                list(idx[i : i + 4 // (workers * local)]) for i in range(0, 4, 4 // (workers * local))
            ]
    evaluation = batch_indices(5, 4, shuffle_seed=None)
    assert list(evaluation[1]) == [4, -1, -1, -1]  # padding rows: empty, ignored by the metrics


# ---- slow: two real workers --------------------------------------------------------------------------------------
def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _env(tmp: Path, cache_dir: Path, tf_config: dict | None = None) -> dict:
    """One CPU thread per kernel for each process (two workers share the 2 cores of a small machine), its own
    temporary directory (a worker that is not the chief writes its checkpoints there and deletes them)."""
    tmp.mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ, EDGECAP_CACHE=str(cache_dir), TMPDIR=str(tmp), TF_NUM_INTRAOP_THREADS="1", OMP_NUM_THREADS="1"
    )
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


def _train(data: Path, out: Path, config: Path, epochs: int, *extra: str) -> list[str]:
    argv = [sys.executable, "-m", "edgecap.cli", "train", "--data", str(data), "--out", str(out)]
    return [*argv, "--config", str(config), "--epochs", str(epochs), "--split-mode", "random", "--no-progress", *extra]


def _workers(argv: list[str], tmp: Path, cache_dir: Path, logs: dict, label: str, extra=()) -> list[subprocess.Popen]:
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(2):
        env = _env(tmp / f"tmp{i}", cache_dir, {"cluster": cluster, "task": {"type": "worker", "index": i}})
        log = open(tmp / f"{label}{i}.log", "w")
        logs[f"{label} worker {i}"] = tmp / f"{label}{i}.log"
        procs.append(subprocess.Popen([*argv, *extra], stdout=log, stderr=subprocess.STDOUT, text=True, env=env))
    return procs


def _wait(procs: list[subprocess.Popen], logs: dict, timeout: int = 900) -> None:
    try:
        for p in procs:
            p.wait(timeout=timeout)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    codes = [p.returncode for p in procs]
    assert codes == [0] * len(procs), f"exit codes {codes}\n{_show(logs)}"


def _show(logs: dict) -> str:
    return "\n".join(
        f"---- {name} ----\n{Path(path).read_text()}" for name, path in logs.items() if Path(path).exists()
    )


def _history(run: Path) -> list[dict]:
    lines = (run / "history.csv").read_text().splitlines()
    head = lines[0].split(",")
    return [dict(zip(head, line.split(","))) for line in lines[1:]]


@pytest.mark.tf
@pytest.mark.slow
def test_two_workers_on_loopback_train_like_one_machine_and_resume(iu_data, tmp_path, cache_dir):
    from edgecap.config import Config

    cfg = Config.preset("tiny")
    cfg.decoder.dropout, cfg.train.batch_size = 0.0, 4
    # reports cut at 16 tokens: the decoder is a Python unroll over the report length, traced once per replica and
    # per process; a shorter graph makes the three concurrent compiles (the cost of this test) several times faster
    cfg.text.max_len = 16
    config = tmp_path / "tiny-nodropout.json"
    cfg.save(config)
    run, ref = tmp_path / "run", tmp_path / "ref"
    logs: dict = {}
    mirrored = ("--strategy", "mirrored", "--logical-cpus", "2")
    reference_argv = [_train(iu_data, ref, config, epochs, *mirrored) for epochs in (2, 3)]  # the same resume
    logs["reference (mirrored, 2 logical CPUs)"] = tmp_path / "ref.log"
    with open(tmp_path / "ref.log", "w") as f:
        reference = subprocess.Popen(
            ["sh", "-c", " && ".join(shlex.join(a) for a in reference_argv)],
            stdout=f,
            stderr=subprocess.STDOUT,
            env=_env(tmp_path / "tmpr", cache_dir),
        )
    try:
        first = _workers(_train(iu_data, run, config, 2, "--strategy", "multiworker"), tmp_path, cache_dir, logs, "a")
        _wait(first, logs)
        # resumed by the same command with more epochs: both workers read the chief's resume point
        second = _workers(_train(iu_data, run, config, 3, "--strategy", "multiworker"), tmp_path, cache_dir, logs, "b")
        _wait(second, logs)
    finally:
        _wait([reference], logs)
    shown = _show(logs)
    print(shown)  # both workers' logs, kept in the report of a failure (and with -s)
    for label in ("a", "b"):
        assert "MultiWorkerMirroredStrategy with 2 replica(s), worker 0 of 2 (the chief" in logs_text(logs, label, 0), (
            shown
        )
        assert "worker 1 of 2 (writes to a temporary directory)" in logs_text(logs, label, 1), shown
        for i in range(2):
            assert "done: " in logs_text(logs, label, i), shown
    # the reference is the mirrored strategy's own test: 2 replicas in one process, a run directory, resumable
    reference_log = Path(logs["reference (mirrored, 2 logical CPUs)"]).read_text()
    assert reference_log.count("MirroredStrategy with 2 replica(s), one worker") == 2, reference_log
    assert "resuming" in reference_log and (ref / "best.weights.h5").is_file()
    for i in range(2):
        assert "resuming" in logs_text(logs, "b", i) and "after 0 text and 2 image epochs" in logs_text(logs, "b", i)
    # the chief wrote the run; the other worker's temporary checkpoints are gone
    names = {p.name for p in run.iterdir()}
    assert {"config.json", "vocab.json", "split.json", "best.weights.h5", "last.weights.h5", "state.json",
            "history.csv", "curves.png"} <= names, names  # fmt: skip
    assert not any((tmp_path / "tmp1").iterdir()), list((tmp_path / "tmp1").iterdir())
    got, want = _history(run), _history(ref)
    assert [r["epoch"] for r in got] == [r["epoch"] for r in want] == ["1", "2", "3"]
    for g, w in zip(got, want):
        for k in FIGURES:
            assert abs(float(g[k]) - float(w[k])) <= TOLERANCE * abs(float(w[k])), (k, g, w, shown)


def logs_text(logs: dict, label: str, worker: int) -> str:
    return Path(logs[f"{label} worker {worker}"]).read_text()
