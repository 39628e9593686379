"""`edgecap train | evaluate | demo`: the Keras model, trained into a run directory and scored. Needs TensorFlow.

    edgecap train --data data/iu_xray --out runs/edge --config edge --pretrain-text   # re-run to resume
    edgecap evaluate --run runs/edge --data data/iu_xray --split test --json eval.json --html eval.html
    # the split to evaluate: train ends with the one that has studies (test, else val, else all); a split
    # without any fails with each split's count and the one to use (exit 2)
    edgecap demo                                      # the tiny model on the bundled real sample

A train flag left unset keeps the value of the --config preset (edgecap.config.Config). Exit status: 0 done;
2 bad usage or unreadable data / run directory; 130 interrupted (train: the last finished epoch is saved).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from edgecap.cli.common import EXIT_INTERRUPTED, beam_option, fail, print_table, quiet_tensorflow, warn

if TYPE_CHECKING:
    from edgecap.config import Config

SECTIONS = ("findings", "findings+impression")


def train(
    data: Path = typer.Option(..., "--data", help="IU X-Ray data folder."),
    out: Path = typer.Option(..., "--out", help="Run directory (re-run the same command to resume)."),
    config: str = typer.Option("edge", "--config", help="edge (EfficientNet-Lite0), tiny (fast tests) or a "
                                                        "config.json (e.g. a run's, for every worker of a cluster)."),
    epochs: Optional[int] = typer.Option(None, help="Image-conditioned epochs."),
    batch_size: Optional[int] = typer.Option(None, help="Global batch size."),
    seed: Optional[int] = typer.Option(None, help="Seed for split, init, shuffling and augmentation."),
    learning_rate: Optional[float] = typer.Option(None, help="Adam learning rate."),
    pretrain_text: bool = typer.Option(False, "--pretrain-text", help="Train the decoder as a language model on the "
                                                                      "training split's report text first (all "
                                                                      "studies, images or not)."),
    text_epochs: Optional[int] = typer.Option(None, help="Epochs of --pretrain-text (default: epochs / 2)."),
    section: Optional[str] = typer.Option(None, help="findings (default) or findings+impression."),
    min_count: Optional[int] = typer.Option(None, help="Vocabulary: minimum count of a training token."),
    split_mode: str = typer.Option("auto", help="auto (annotation.json split if present), random or annotation."),
    val_fraction: Optional[float] = typer.Option(None, help="Random split: share of studies for validation."),
    test_fraction: Optional[float] = typer.Option(None, help="Random split: share of studies for test."),
    strategy: str = typer.Option("default", help="default, mirrored (tf.distribute.MirroredStrategy) or "
                                                 "multiworker (MultiWorkerMirroredStrategy: one process per "
                                                 "worker, each with its TF_CONFIG; docs/scale.md)."),
    logical_cpus: int = typer.Option(0, help="Split the CPU into N logical devices (to run mirrored without GPUs)."),
    progress: bool = typer.Option(True, help="Progress bars."),
) -> None:
    """Train the CNN encoder + attention LSTM decoder; writes a self-contained run directory."""
    quiet_tensorflow()
    train_overrides = dict(epochs=epochs, batch_size=batch_size, seed=seed, learning_rate=learning_rate,
                           pretrain_text_epochs=text_epochs, val_fraction=val_fraction, test_fraction=test_fraction)
    cfg = _config(config, train=train_overrides, text=dict(section=section, min_count=min_count))
    from edgecap.data.iu_xray import DataError
    from edgecap.training.train import TrainError, configure_logical_cpus
    from edgecap.training.train import train as run_training

    if logical_cpus > 1:
        configure_logical_cpus(logical_cpus)
    try:
        r = run_training(data, out, cfg, pretrain_text=pretrain_text or bool(text_epochs), strategy=strategy,
                         split_mode=split_mode, progress=progress, log=typer.echo)
    except (TrainError, DataError, ValueError) as e:
        fail(str(e))
    except KeyboardInterrupt:
        typer.echo("\ninterrupted: the last finished epoch is saved; run the same command to resume.")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    typer.echo(
        f"done: {r.epochs_done} epochs, best epoch {r.best_epoch} (val loss {r.best_val_loss:.3f}, "
        f"validated on {r.val_source}: {r.n_val} studies; trained on {r.n_train}), "
        f"{r.seconds_per_epoch:.1f} s per epoch"
    )
    if r.text_val_perplexity is not None:
        typer.echo(f"text model perplexity on the validation reports: {r.text_val_perplexity:.2f}")
    typer.echo(f"run directory: {out}\nnext: edgecap evaluate --run {out} --data {data} {_evaluate_split(out, data)}")


def _evaluate_split(run: Path, data: Path) -> str:
    """`--split NAME` for the next step: the run's test split, else val, else all (with why) where the data
    has studies to score (evaluate_run.suggest_split); a run trained on the bundled sample has no test split."""
    from edgecap.training.evaluate_run import load_with_run_split, split_counts, suggest_split
    from edgecap.training.run_dir import RunDir

    rd = RunDir(run)
    ds, _ = load_with_run_split(rd, data)
    counts = split_counts(ds, rd.load_vocab(), rd.load_config())
    best = suggest_split(counts) or "all"
    if best == "all":
        return f"--split all   # no held-out study has an image here: {counts['all']} training studies (fit)"
    return f"--split {best}   # {counts[best]} {'study' if counts[best] == 1 else 'studies'}"


def _config(preset: str, train: dict[str, Any], text: dict[str, Any]) -> Config:
    """The preset with every flag that was given (not None) set on its train / text part; bad ones exit 2."""
    from edgecap.config import Config

    try:
        cfg = Config.load(Path(preset)) if preset.endswith(".json") else Config.preset(preset)
    except (OSError, ValueError, TypeError, KeyError) as e:
        fail(f"--config {preset}: {e}")
    for part, overrides in ((cfg.train, train), (cfg.text, text)):
        for key, value in overrides.items():
            if value is not None:
                setattr(part, key, value)
    if cfg.text.section not in SECTIONS:
        fail(f"unknown section {cfg.text.section!r}")
    return cfg


def evaluate(
    run: Path = typer.Option(..., "--run", help="Run directory."),
    data: Path = typer.Option(..., "--data", help="IU X-Ray data folder."),
    split: str = typer.Option("test", help="train, val, test or all (the run's own split)."),
    beam: int = beam_option(),
    meteor: bool = typer.Option(True, help="METEOR (needs Java)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the numbers as JSON."),
    grid: Optional[Path] = typer.Option(None, "--grid", help="PNG grid: images, attention, generated vs reference."),
    html: Optional[Path] = typer.Option(None, "--html", help="Self-contained HTML evaluation report."),
) -> None:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr, clinical efficacy and diversity of the model and two baselines."""
    quiet_tensorflow()
    from edgecap.data.iu_xray import DataError
    from edgecap.evaluation.nlg import MetricsUnavailable
    from edgecap.training.evaluate_run import EvaluateError, save_json
    from edgecap.training.evaluate_run import evaluate as run_eval

    try:
        res = run_eval(run, data, split, beam=beam, meteor=meteor, grid_png=grid, html=html, log=typer.echo)
    except (EvaluateError, DataError, FileNotFoundError, MetricsUnavailable, ValueError) as e:
        fail(str(e))
    typer.echo(f"\n{res.n_studies} studies of the {split!r} split")
    print_table(res.table())
    for n in res.notes:
        typer.echo(f"note: {n}")
    for w in res.warnings:
        warn(w)
    if json_out:
        save_json(res, json_out)
        typer.echo(f"wrote {json_out}")
    for f in (grid, html):
        if f:
            typer.echo(f"wrote {f}")


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Run directory for the demo model."),
    epochs: int = typer.Option(120, help="Epochs (about 1 s each here)."),
    progress: bool = typer.Option(True, help="Progress bars."),
) -> None:
    """Train the tiny model on the bundled real sample, then write a report for a bundled X-ray."""
    quiet_tensorflow()
    from edgecap.training.demo import run_demo

    r = run_demo(out, epochs, progress, log=typer.echo)
    typer.echo(f"\nimage:     {r.image.name} (IU X-Ray uid 25, CC BY-NC-ND 4.0)")
    typer.echo(f"generated: {r.report}")
    typer.echo(f"reference: {r.reference}")
    typer.echo(
        "A demonstration trained on 9 studies: it recites its training reports. Not for clinical use.\n"
        "Train on the full data: edgecap data fetch iu-xray --out data/iu_xray && "
        "edgecap train --data data/iu_xray --out runs/edge --config edge --pretrain-text"
    )
