"""`edgecap train`: data folder -> run directory (see training.run_dir).

    python -m edgecap.cli train --data DATA --out runs/NAME --config edge

One loop for every setting: a tf.distribute strategy (the default one, MirroredStrategy for several
GPUs / logical devices, or MultiWorkerMirroredStrategy across processes and machines through TF_CONFIG) runs
the step; frozen encoders train on cached CNN maps (training.feature_cache),
trainable ones on images augmented per epoch. After every epoch the run directory holds a resume point;
running the same command again continues where it stopped.

Several workers (--strategy multiworker): every worker runs the same command with its own TF_CONFIG. Each
global batch is split by rows: worker w builds only its share (its images are the only ones it reads), so
every example is seen once per epoch across the workers and each step sees the same global batch as one
machine would. The chief (task 0) writes the run directory; the other workers write their checkpoints to a
temporary directory that is deleted at the end (all workers must save, as tf.distribute requires), and
read a resume point from the chief's run directory (shared storage on a cluster).
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edgecap.config import Config
from edgecap.data import iu_xray, rehearsal, splits
from edgecap.runtime.files import write_atomically
from edgecap.runtime.text import clean_report
from edgecap.runtime.vocab import Vocabulary
from edgecap.training.dataset import Example, load_gray, make_examples, readable, token_arrays, view_mask
from edgecap.training.run_dir import RunDir

HISTORY_FIELDS = ("phase", "epoch", "train_loss", "val_loss", "val_token_acc", "val_perplexity", "seconds")


class TrainError(RuntimeError):
    """Training cannot start (no usable data, inconsistent run directory)."""


@dataclass
class TrainResult:
    run: Path
    epochs_done: int
    best_epoch: int
    best_val_loss: float
    seconds_per_epoch: float
    text_val_perplexity: float | None
    val_source: str
    n_train: int
    n_val: int
    warnings: list[str] = field(default_factory=list)


def configure_logical_cpus(n: int) -> None:
    """Split the CPU into n logical devices (before TensorFlow initialises them), so MirroredStrategy can
    be exercised on a machine without GPUs."""
    from edgecap.training.tf_env import tf

    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * n)


STRATEGIES = ("default", "mirrored", "multiworker")


@dataclass(frozen=True)
class WorkerRole:
    """This process among the training workers: index 0 is the chief (the one that writes the run)."""

    index: int = 0
    count: int = 1

    @property
    def chief(self) -> bool:
        return self.index == 0

    def describe(self) -> str:
        if self.count == 1:
            return "one worker"
        what = "the chief: writes the run directory" if self.chief else "writes to a temporary directory"
        return f"worker {self.index} of {self.count} ({what})"


def tf_config_role(raw: str | None) -> WorkerRole:
    """TF_CONFIG (JSON: {"cluster": {"chief": [...]?, "worker": ["host:port", ...]}, "task": {"type", "index"}})
    -> this process's WorkerRole, numbered as tf.distribute numbers workers (a "chief" task first, then the
    "worker" tasks). Raises TrainError with what is wrong, before TensorFlow would fail less clearly."""
    if not raw:
        raise TrainError(
            "--strategy multiworker needs TF_CONFIG, e.g. "
            '{"cluster": {"worker": ["node0:12345", "node1:12345"]}, "task": {"type": "worker", "index": 0}} '
            "(docs/scale.md)"
        )
    try:
        conf = json.loads(raw)
        cluster, task = conf["cluster"], conf["task"]
        kind, index = task["type"], int(task["index"])
        chiefs, workers = list(cluster.get("chief", [])), list(cluster.get("worker", []))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise TrainError(f"TF_CONFIG is not a cluster and task description ({type(e).__name__}: {e})") from None
    tasks = {"chief": chiefs, "worker": workers}
    if kind not in tasks or not 0 <= index < len(tasks[kind]):
        raise TrainError(
            f"TF_CONFIG task {kind} {index} is not in its cluster ({len(chiefs)} chief, {len(workers)} worker)"
        )
    if len(chiefs) > 1:
        raise TrainError("TF_CONFIG: a cluster has at most one chief")
    return WorkerRole(index + (len(chiefs) if kind == "worker" else 0), len(chiefs) + len(workers))


def make_strategy(name: str):
    """The tf.distribute strategy called name (STRATEGIES). multiworker must come first: TensorFlow wants it
    created before any other TensorFlow operation; creating it waits until every worker has joined."""
    from edgecap.training.tf_env import tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multiworker":
        tf_config_role(os.environ.get("TF_CONFIG"))
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise TrainError(f"unknown strategy {name!r}: {', '.join(STRATEGIES)}")


def strategy_name(strategy) -> str:
    """The name a user asked for (MultiWorkerMirroredStrategy's class is CollectiveAllReduceStrategy)."""
    from edgecap.training.tf_env import tf

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "MultiWorkerMirroredStrategy"
    return type(strategy).__name__


def worker_role(strategy) -> WorkerRole:
    """This process's role under strategy: one worker unless it is a MultiWorkerMirroredStrategy."""
    from edgecap.training.tf_env import tf

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return tf_config_role(os.environ.get("TF_CONFIG"))
    return WorkerRole()


def barrier(strategy) -> None:
    """Return once every worker of strategy has called it: an all-reduce of one number."""
    from edgecap.training.tf_env import tf

    @tf.function
    def all_reduce():
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(1.0)), axis=None)

    all_reduce()


def prepare_run(
    data: Path, out: Path, cfg: Config, split_mode: str, log: Callable, write: bool = True, resume: bool | None = None
) -> tuple[Config, Vocabulary, iu_xray.Dataset]:
    """Fresh run: split, vocabulary, config written. Existing run: everything read back (cfg epochs may grow).

    write False (a worker other than the chief): the same split and vocabulary (both follow from the data and
    the seed), nothing written. resume: whether out holds a run, decided by the caller before any worker could
    write (default: look now)."""
    rd = RunDir(out)
    ds = iu_xray.load(data)
    if write:
        rehearsal.carry(data, out, log)  # rehearsal data: the run directory says so too (REHEARSAL)
    if rd.exists() if resume is None else resume:
        saved = rd.load_config()
        if saved.model_hash() != cfg.model_hash():
            log(f"resuming {out}: the model is rebuilt from its saved config.json ({saved.name}), not from the options")
        saved.train.epochs = cfg.train.epochs
        saved.train.pretrain_text_epochs = max(saved.train.pretrain_text_epochs, cfg.train.pretrain_text_epochs)
        if write:
            saved.save(rd.config)
        cfg = saved
        split_of = rd.load_split()["splits"]
        for s in ds.studies:
            s.split = split_of.get(s.uid)
        return cfg, rd.load_vocab(), ds
    splits.ensure_split(ds, split_mode, cfg.train.seed, cfg.train.val_fraction, cfg.train.test_fraction)
    train_texts = [clean_report(s.text(cfg.text.section), cfg.text.xxxx) for s in splits.studies_in(ds, "train")]
    vocab = Vocabulary.build([t for t in train_texts if t], cfg.text.min_count)
    if not write:
        return cfg, vocab, ds
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(rd.config)
    vocab.save(rd.vocab)
    write_atomically(
        rd.split,
        json.dumps(
            {
                "source": ds.split_source,
                "layout": ds.layout,
                "data": str(Path(data).resolve()),
                "splits": {s.uid: s.split for s in ds.studies},
            },
            indent=0,
        )
        + "\n",
    )
    return cfg, vocab, ds


class Trainer:
    """Holds model, optimizer and compiled steps for one run."""

    def __init__(self, cfg: Config, vocab: Vocabulary, strategy, log: Callable, embedding_init=None):
        from edgecap.training.model import CaptionModel, masked_token_loss
        from edgecap.training.tf_env import keras, tf

        self.cfg, self.vocab, self.strategy, self.log = cfg, vocab, strategy, log
        self.role = worker_role(strategy)
        with strategy.scope():
            self.model = CaptionModel(cfg, len(vocab), embedding_init)
            self.optimizer = keras.optimizers.Adam(cfg.train.learning_rate, clipnorm=cfg.train.clip_norm)
            self.optimizer.build(self.model.trainable_variables)
        model, opt = self.model, self.optimizer
        n = cfg.max_views * model.positions
        d = cfg.encoder.feature_dim

        def forward(b, training):
            if "x" in b:
                logits, _ = model({"x": b["x"], "view_mask": b["view_mask"], "tokens": b["tokens"]}, training=training)
            else:  # text only: no image memory, the decoder is a language model
                zeros = tf.zeros((tf.shape(b["tokens"])[0], n, d))
                logits, _ = model.decoder.unroll(b["tokens"], zeros, zeros[:, :, 0], training=training)
            return logits

        def train_replica(b, global_batch):
            with tf.GradientTape() as tape:
                per_ex = masked_token_loss(b["targets"], forward(b, True))
                loss = tf.nn.compute_average_loss(per_ex, global_batch_size=global_batch)
            # text batches (no "x") train the decoder only
            variables = model.trainable_variables if "x" in b else model.decoder.trainable_variables
            grads = tape.gradient(loss, variables)
            opt.apply_gradients(zip(grads, variables))
            return loss

        def eval_replica(b):
            logits = forward(b, False)
            t = b["targets"]
            ce = keras.losses.sparse_categorical_crossentropy(t, logits, from_logits=True)
            w = tf.cast(tf.not_equal(t, 0), tf.float32)
            hit = tf.cast(tf.equal(tf.cast(tf.argmax(logits, -1), t.dtype), t), tf.float32) * w
            per_ex = tf.reduce_sum(ce * w, 1) / tf.maximum(tf.reduce_sum(w, 1), 1.0)
            real = tf.reduce_sum(tf.cast(tf.reduce_any(t > 0, axis=1), tf.float32))  # padding rows are all <pad>
            return tf.reduce_sum(per_ex), tf.reduce_sum(ce * w), tf.reduce_sum(hit), tf.reduce_sum(w), real

        sum_ = tf.distribute.ReduceOp.SUM

        @tf.function(reduce_retracing=True)
        def train_step(batch, global_batch):
            return strategy.reduce(sum_, strategy.run(train_replica, args=(batch, global_batch)), axis=None)

        @tf.function(reduce_retracing=True)
        def eval_step(batch):
            out = strategy.run(eval_replica, args=(batch,))
            return [strategy.reduce(sum_, o, axis=None) for o in out]

        self.train_step, self.eval_step = train_step, eval_step

    # ---- batches --------------------------------------------------------------------------------
    def dataset(self, arrays: dict[str, np.ndarray] | Callable, n: int, batch: int, shuffle_seed: int | None):
        """arrays: dict of aligned numpy arrays, or a function(indices) -> dict (images loaded lazily).

        Every batch is full, so each replica of a MirroredStrategy gets rows: training batches wrap around
        to the start of the shuffled order; evaluation batches (shuffle_seed None) are padded with empty
        rows (all-<pad> targets, index -1), which the metrics ignore. Under several workers each one builds
        only its rows of every global batch (worker_slices): -> (distributed dataset, steps).
        """
        from edgecap.training.tf_env import tf

        chunks = batch_indices(n, batch, shuffle_seed)

        def get(idx):
            real = idx[idx >= 0]
            b = arrays(real) if callable(arrays) else {k: v[real] for k, v in arrays.items()}
            if len(real) < len(idx):
                pad = len(idx) - len(real)
                b = {k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)]) for k, v in b.items()}
            return b

        first = get(chunks[0][:1])
        sig = {k: tf.TensorSpec((None,) + v.shape[1:], tf.as_dtype(v.dtype)) for k, v in first.items()}

        def from_rows(rows):
            return tf.data.Dataset.from_generator(lambda: (get(i) for i in rows), output_signature=sig).prefetch(2)

        if self.role.count == 1:
            return self.strategy.experimental_distribute_dataset(from_rows(chunks)), len(chunks)
        replicas = self.strategy.num_replicas_in_sync
        if batch % replicas:
            raise TrainError(f"the global batch size ({batch}) must be a multiple of the {replicas} replicas")

        def per_worker(ctx):  # ctx: tf.distribute.InputContext of this worker
            local = replicas // ctx.num_input_pipelines
            return from_rows(worker_slices(chunks, ctx.input_pipeline_id, ctx.num_input_pipelines, local))

        return self.strategy.distribute_datasets_from_function(per_worker), len(chunks)

    def run_epoch(self, arrays, n, seed, progress, desc) -> float:
        from tqdm import tqdm

        bs = self.cfg.train.batch_size
        dist, steps = self.dataset(arrays, n, bs, seed)
        total = 0.0
        # the bar only where stderr is a terminal (tqdm's disable=None): a log file gets the epoch lines alone
        with tqdm(dist, total=steps, desc=desc, disable=None if progress else True, unit="batch", leave=False) as bar:
            for i, b in enumerate(bar):
                loss = float(self.train_step(b, bs))
                total += loss
                bar.set_postfix(loss=f"{total / (i + 1):.3f}")
        return total / max(steps, 1)

    def evaluate(self, arrays, n) -> dict[str, float]:
        dist, _ = self.dataset(arrays, n, self.cfg.train.batch_size, None)
        acc = np.zeros(5)
        for b in dist:
            acc += np.array([float(v) for v in self.eval_step(b)])
        per_ex_sum, nll, hits, tokens, count = acc
        return {
            "val_loss": per_ex_sum / max(count, 1),
            "val_token_acc": hits / max(tokens, 1),
            "val_perplexity": math.exp(nll / max(tokens, 1)),
        }

    # ---- resume ---------------------------------------------------------------------------------
    def save_resume(self, rd: RunDir, state: dict) -> None:
        self.model.save_weights(rd.last)
        np.savez(rd.optimizer, *[np.asarray(v) for v in self.optimizer.variables])
        write_atomically(rd.state, json.dumps(state, indent=1) + "\n")  # workers read it to resume

    def load_resume(self, rd: RunDir) -> dict:
        self.model.load_weights(rd.last)
        with np.load(rd.optimizer) as z:
            values = [z[f"arr_{i}"] for i in range(len(z.files))]
        if len(values) != len(self.optimizer.variables):
            raise TrainError(f"{rd.optimizer}: optimizer state does not match the model")
        for var, val in zip(self.optimizer.variables, values):
            var.assign(val)
        return rd.load_state()


def batch_indices(n: int, batch: int, shuffle_seed: int | None) -> list[np.ndarray]:
    """Row indices of each global batch, every one `batch` long: shuffled by shuffle_seed and wrapped around
    to fill the last batch (training), or in order with -1 (an empty row) filling it (evaluation, None)."""
    order = np.arange(n) if shuffle_seed is None else np.random.default_rng(shuffle_seed).permutation(n)
    chunks = [order[i : i + batch] for i in range(0, n, batch)]
    fill = batch - len(chunks[-1])
    if fill:
        tail = np.resize(order, fill) if shuffle_seed is not None else np.full(fill, -1)
        chunks[-1] = np.concatenate([chunks[-1], tail])
    return chunks


def worker_slices(chunks: list[np.ndarray], worker: int, workers: int, local_replicas: int) -> list[np.ndarray]:
    """The per-replica batches worker `worker` of `workers` feeds its `local_replicas` replicas, in order: its
    contiguous share of every global batch, cut into one piece per replica. Replica r of worker w gets rows
    [(w * local_replicas + r) * per : ... + per] of each global batch, as one replica of a single machine
    with the same number of replicas would: every row is seen once per epoch across the workers."""
    out = []
    for idx in chunks:
        per = len(idx) // (workers * local_replicas)
        for r in range(local_replicas):
            start = (worker * local_replicas + r) * per
            out.append(idx[start : start + per])
    return out


def _text_arrays(examples: list[Example], vocab: Vocabulary, max_len: int) -> dict[str, np.ndarray]:
    tokens, targets = token_arrays(examples, vocab, max_len)
    return {"tokens": tokens, "targets": targets}


def train(
    data: str | Path,
    out: str | Path,
    cfg: Config,
    *,
    pretrain_text: bool = False,
    strategy: str = "default",
    split_mode: str = "auto",
    progress: bool = True,
    cache_dir: Path | None = None,
    log: Callable = print,
) -> TrainResult:
    data, out = Path(data), Path(out)
    if pretrain_text and cfg.train.pretrain_text_epochs == 0:
        cfg.train.pretrain_text_epochs = max(1, cfg.train.epochs // 2)
    rd = RunDir(out)
    resume = rd.exists()  # decided before the strategy exists: no worker has written anything yet
    strat = make_strategy(strategy)  # first (multiworker: before any other TensorFlow op; waits for all workers)
    role = worker_role(strat)
    # the chief writes the run; another worker writes its (obligatory) checkpoints to a directory it deletes
    wd = rd if role.chief else RunDir(tempfile.mkdtemp(prefix=f"edgecap-worker{role.index}-"))
    try:
        result = _train(
            data, out, cfg, rd, wd, resume, strat, role, pretrain_text, split_mode, progress, cache_dir, log
        )
        if role.count > 1:  # leave together: a worker still running when task 0 (the coordination service) is gone
            barrier(strat)  # logs heartbeat errors (tensorflow/tensorflow#58434)
        return result
    finally:
        if not role.chief:
            shutil.rmtree(wd.root, ignore_errors=True)


def _train(
    data: Path,
    out: Path,
    cfg: Config,
    rd: RunDir,
    wd: RunDir,
    resume: bool,
    strat,
    role: WorkerRole,
    pretrain_text: bool,
    split_mode: str,
    progress: bool,
    cache_dir: Path | None,
    log: Callable,
) -> TrainResult:
    """train() once the strategy exists: rd is the run directory (read to resume), wd the one this worker
    writes (rd for the chief)."""
    from edgecap.training.tf_env import keras

    cfg, vocab, ds = prepare_run(data, out, cfg, split_mode, log, write=role.chief, resume=resume)
    keras.utils.set_random_seed(cfg.train.seed)
    warnings: list[str] = []

    train_studies, val_studies = splits.studies_in(ds, "train"), splits.studies_in(ds, "val")
    train_ex, bad1 = readable(make_examples(train_studies, vocab, cfg), cfg.image.size)
    val_ex, bad2 = readable(make_examples(val_studies, vocab, cfg), cfg.image.size)
    for msg in bad1 + bad2:
        warnings.append(f"skipped unreadable image: {msg}")
    if not train_ex:
        raise TrainError(f"{data}: no training study has both a report ({cfg.text.section}) and a readable image")
    val_source = "val"
    if not val_ex:
        val_ex, val_source = train_ex, "train"
        warnings.append(
            "the validation split has no study with images here: validating on the training studies "
            "(the figures measure fit, not generalisation)"
        )
    for w in warnings:
        log(f"warning: {w}")

    embedding_init = None
    if cfg.decoder.glove:
        from edgecap.training.glove import glove_matrix

        embedding_init, coverage = glove_matrix(vocab, cfg.decoder.embed_dim, cfg.train.seed)
        log(f"GloVe 6B 50d covers {coverage:.1%} of the {len(vocab) - 4} vocabulary words")
    log(
        f"strategy: {strategy_name(strat)} with {strat.num_replicas_in_sync} replica(s), {role.describe()}; "
        f"{len(train_ex)} training studies with images, {len(val_ex)} for validation ({val_source})"
    )
    trainer = Trainer(cfg, vocab, strat, log, embedding_init)

    state = {
        "text_epochs_done": 0,
        "epochs_done": 0,
        "best_val_loss": None,
        "best_epoch": 0,
        "text_val_perplexity": None,
    }
    history: list[dict] = []
    if resume and rd.state.is_file() and rd.last.is_file():
        state = trainer.load_resume(rd)
        history = _read_history(rd.history)
        log(f"resuming {out} after {state['text_epochs_done']} text and {state['epochs_done']} image epochs")

    # ---- phase 1: decoder as a language model on all training-split report text ------------------
    if state["text_epochs_done"] < cfg.train.pretrain_text_epochs:
        text_train = make_examples(train_studies, vocab, cfg, need_images=False)
        text_val = make_examples(val_studies, vocab, cfg, need_images=False) or text_train
        tr, va = _text_arrays(text_train, vocab, cfg.text.max_len), _text_arrays(text_val, vocab, cfg.text.max_len)
        log(
            f"text pre-training on {len(text_train)} training reports, perplexity on {len(text_val)} validation reports"
        )
        for epoch in range(state["text_epochs_done"] + 1, cfg.train.pretrain_text_epochs + 1):
            t0 = time.time()
            loss = trainer.run_epoch(tr, len(text_train), cfg.train.seed + 10_000 + epoch, progress, f"text {epoch}")
            m = trainer.evaluate(va, len(text_val))
            row = {"phase": "text", "epoch": epoch, "train_loss": loss, **m, "seconds": time.time() - t0}
            history.append(row)
            state.update(text_epochs_done=epoch, text_val_perplexity=m["val_perplexity"])
            log(f"text epoch {epoch}: loss {loss:.3f}  val perplexity {m['val_perplexity']:.2f}")
            trainer.save_resume(wd, state)
            _write_history(wd.history, history)

    # ---- phase 2: image-conditioned training ----------------------------------------------------
    get_train, get_val = _image_inputs(trainer, cfg, vocab, train_ex, val_ex, progress, cache_dir)
    if state["epochs_done"] < cfg.train.epochs:  # a line per epoch follows, the first one slower: it compiles
        first = state["epochs_done"] + 1
        log(f"training on images: epochs {first}-{cfg.train.epochs}, a line after each (the first also compiles)")
    for epoch in range(state["epochs_done"] + 1, cfg.train.epochs + 1):
        t0 = time.time()
        loss = trainer.run_epoch(get_train(epoch), len(train_ex), cfg.train.seed + epoch, progress, f"epoch {epoch}")
        m = trainer.evaluate(get_val(), len(val_ex))
        row = {"phase": "image", "epoch": epoch, "train_loss": loss, **m, "seconds": time.time() - t0}
        history.append(row)
        improved = state["best_val_loss"] is None or m["val_loss"] < state["best_val_loss"]
        if improved:
            trainer.model.save_weights(wd.best)
            state.update(best_val_loss=m["val_loss"], best_epoch=epoch)
        state["epochs_done"] = epoch
        trainer.save_resume(wd, state)
        _write_history(wd.history, history)
        log(
            f"epoch {epoch}/{cfg.train.epochs}: loss {loss:.3f}  val loss {m['val_loss']:.3f}  "
            f"val token acc {m['val_token_acc']:.3f}  {row['seconds']:.1f}s{'  *best' if improved else ''}"
        )
        patience = cfg.train.early_stop_patience
        if patience and epoch - state["best_epoch"] >= patience:
            log(f"early stop: no validation improvement for {patience} epochs")
            break
    if role.chief:
        plot_curves(history, rd.curves)
    image_rows = [r for r in history if r["phase"] == "image"]
    return TrainResult(
        run=out,
        epochs_done=state["epochs_done"],
        best_epoch=state["best_epoch"],
        best_val_loss=state["best_val_loss"] if state["best_val_loss"] is not None else float("nan"),
        seconds_per_epoch=float(np.mean([r["seconds"] for r in image_rows])) if image_rows else float("nan"),
        text_val_perplexity=state["text_val_perplexity"],
        val_source=val_source,
        n_train=len(train_ex),
        n_val=len(val_ex),
        warnings=warnings,
    )


class BoundedGrays:
    """The trainable encoder's decoded images, float32 (S, S) each: kept after their first decode while they fit in
    `budget` bytes (the sample, or a few thousand images at 128 px), decoded again on every use beyond that. The
    full collection at 224 px is 7,470 x 200 kB = 1.5 GB, which a loader must not hold; decoding one 512 px PNG
    costs a few ms against the seconds of a trainable-CNN training step on its batch."""

    def __init__(self, size: int, budget: int = 512 << 20):
        self.size, self.budget, self.held = size, budget, 0
        self.grays: dict[Path, np.ndarray] = {}

    def get(self, path: Path) -> np.ndarray:
        g = self.grays.get(path)
        if g is None:
            g = load_gray(path, self.size)
            if self.held + g.nbytes <= self.budget:
                self.grays[path] = g
                self.held += g.nbytes
        return g


def _image_inputs(trainer: Trainer, cfg: Config, vocab: Vocabulary, train_ex, val_ex, progress, cache_dir):
    """-> (get_train(epoch) -> batch loader, get_val() -> batch loader); a loader maps row indices to a batch.

    Frozen encoder: x = cached CNN maps (B, V, P, C), a random cached augmentation variant per view and epoch.
    Trainable encoder: x = images (B, V, S, S, 3), augmented on the fly.
    An example's random draws are seeded by (seed, epoch, its index), not by its place in a batch, so a
    worker that builds only its share of a batch draws what a single machine would.
    """
    from edgecap.runtime.preprocess import normalize
    from edgecap.training.augment import AugmentConfig, augment

    v = cfg.max_views
    sets = {"train": train_ex, "val": val_ex}
    arrays = {k: (*token_arrays(ex, vocab, cfg.text.max_len), view_mask(ex, v)) for k, ex in sets.items()}

    if not cfg.encoder.trainable:
        from edgecap.training.feature_cache import MapCache

        cache = MapCache(trainer.model.cnn, cfg, cache_dir)
        variants = cfg.train.feature_variants if cfg.train.augment else 1
        cache.ensure(sorted({p for ex in train_ex for p in ex.views if p}), variants, progress, log=trainer.log)
        cache.ensure(sorted({p for ex in val_ex for p in ex.views if p}), 1, progress, log=trainer.log)
        p, c = trainer.model.positions, trainer.model.map_channels

        def x_of(examples, idx, rng_of):
            x = np.zeros((len(idx), v, p, c), np.float16)
            for row, i in enumerate(idx):
                rng = rng_of(i)
                for j, path in enumerate(examples[i].views):
                    if path:
                        x[row, j] = cache.get(path, int(rng.integers(variants)) if rng is not None else 0)
            return x
    else:
        size = cfg.image.size
        grays = BoundedGrays(size)
        aug = AugmentConfig(clahe=cfg.train.clahe)

        def x_of(examples, idx, rng_of):
            x = np.zeros((len(idx), v, size, size, 3), np.float32)
            for row, i in enumerate(idx):
                rng = rng_of(i)
                for j, path in enumerate(examples[i].views):
                    if path:
                        g = augment(grays.get(path), rng, aug) if rng is not None else grays.get(path)
                        x[row, j] = normalize(g, cfg.image.mean, cfg.image.std)
            return x

    def loader(name, epoch):
        """epoch None: no augmentation (validation, or augment off)."""
        examples, (tok, tgt, mask) = sets[name], arrays[name]

        def rng_of(i):
            return None if epoch is None else np.random.default_rng([cfg.train.seed, epoch, int(i)])

        return lambda idx: {
            "x": x_of(examples, idx, rng_of),
            "view_mask": mask[idx],
            "tokens": tok[idx],
            "targets": tgt[idx],
        }

    def get_train(epoch):
        return loader("train", epoch if cfg.train.augment else None)

    return get_train, lambda: loader("val", None)


def _write_history(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, HISTORY_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in HISTORY_FIELDS})


def _read_history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [
            {k: (v if k == "phase" else float(v) if "." in v or "e" in v else int(v)) for k, v in r.items()}
            for r in csv.DictReader(f)
        ]


def plot_curves(history: list[dict], path: Path) -> None:
    """Loss per epoch (text pre-training and image training), validation token accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for phase, style in (("text", "--"), ("image", "-")):
        rows = [r for r in history if r["phase"] == phase]
        if rows:
            ep = [r["epoch"] for r in rows]
            a1.plot(ep, [r["train_loss"] for r in rows], style, label=f"{phase} train")
            a1.plot(ep, [r["val_loss"] for r in rows], style, label=f"{phase} val")
            a2.plot(ep, [r["val_token_acc"] for r in rows], style, label=f"{phase} val")
    a1.set(xlabel="epoch", ylabel="cross-entropy per token", title="loss")
    a2.set(xlabel="epoch", ylabel="teacher-forced token accuracy", title="validation accuracy")
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
