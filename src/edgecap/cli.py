"""The `edgecap` command line: one thin function per command, heavy imports inside each command.

Exit status: 0 success; 1 the command ran but some inputs failed; 2 bad usage or unreadable input.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from edgecap import __version__
from edgecap.benchmarks.cli import bench as bench_command
from edgecap.caption_cli import caption as caption_command
from edgecap.convert.cli import convert as convert_command
from edgecap.edge_app.cli import app_command
from edgecap.labeler.cli import label as label_command
from edgecap.serve.cli import serve as serve_command

app = typer.Typer(help="edgecap: chest X-ray report generation on edge devices, offline.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
data_app = typer.Typer(help="IU X-Ray data: statistics and download.", no_args_is_help=True)
app.add_typer(data_app, name="data")
bundle_app = typer.Typer(help="Edge bundles: compare two bundle folders.", no_args_is_help=True)
app.add_typer(bundle_app, name="bundle")
app.command("caption")(caption_command)
app.command("convert")(convert_command)
app.command("serve")(serve_command)
app.command("app", help="The point-of-care app (Kivy), or a headless screenshot of a report.")(app_command)
app.command("bench")(bench_command)
app.command("label", help="Label reports for 14 CheXpert-style observations (rule-based proxy).")(label_command)


def fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for j, r in enumerate(rows):
        typer.echo("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if j == 0:
            typer.echo("  ".join("-" * w for w in widths))


@app.callback(invoke_without_command=True)
def main(version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit()


# ---- bundle -------------------------------------------------------------------------------------
@bundle_app.command("compare")
def bundle_compare(
    a: Path = typer.Argument(..., help="A bundle folder (e.g. one you just converted)."),
    b: str = typer.Argument("default", help="The bundle to compare with; 'default': the shipped default bundle."),
    data: Optional[Path] = typer.Option(None, "--data", help="Studies to caption with both (an IU X-Ray folder "
                                        "or a folder of images); default: the bundled real sample."),
) -> None:
    """Compare two bundles: each file's sha256, then the reports both write (greedy and beam 3) on every
    study. Exit 0 when every report is token-identical or a near tie (byte-identical files or not), 1 when
    one differs more."""
    from edgecap.convert.compare import compare_bundles
    from edgecap.convert.sources import SourceError, find_studies
    from edgecap.resources import sample_dir
    from edgecap.runtime.bundle import BundleError
    from edgecap.runtime.captioner import default_bundle_path

    other = default_bundle_path() if b == "default" else Path(b)
    try:
        src = find_studies(data or sample_dir(), max_views=2)
        studies = [(s.uid, s.views) for s in src.studies]
        cmp = compare_bundles(a, other, studies)
    except (BundleError, SourceError) as e:
        fail(str(e))
    print_table(cmp.rows())
    for r in cmp.reports:
        if not r["same"]:
            kind = "near tie" if r["near_tie"] else "differs"
            typer.echo(f"\nstudy {r['study']}, beam {r['beam']} ({kind}, tie gap {r['tie_gap']:.3f} nats):\n"
                       f"  A: {r['a']}\n  B: {r['b']}")
    if cmp.manifest_differences:
        typer.echo(f"manifest fields that differ: {', '.join(cmp.manifest_differences)}")
    files = "byte-identical" if cmp.identical_files else "not byte-identical"
    reports = ("the same reports" if cmp.same_reports else "the same reports up to near ties"
               if cmp.same_or_near_ties else "DIFFERENT reports")
    typer.echo(f"model files {files}; {reports} on {len(studies)} studies (greedy and beam 3)")
    if not cmp.same_or_near_ties:
        raise typer.Exit(1)


# ---- data ---------------------------------------------------------------------------------------
@data_app.command("stats")
def data_stats(
    path: Path = typer.Argument(..., help="IU X-Ray data folder (any of the three layouts)."),
    layout: str = typer.Option("auto", help="auto, openi, kaggle or r2gen."),
    section: str = typer.Option("findings", help="findings or findings+impression."),
    check_images: bool = typer.Option(True, help="Decode every image found (reports unreadable files)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the figures as JSON."),
) -> None:
    """Layout, studies, images found / missing / unreadable, views, empty findings, report lengths."""
    from dataclasses import asdict

    from edgecap.data.iu_xray import DataError, load
    from edgecap.data.stats import compute_stats

    try:
        st = compute_stats(load(path, layout), check_images=check_images, section=section)
    except (DataError, ValueError) as e:
        fail(str(e))
    for k, v in st.table():
        typer.echo(f"{k:36s} {v}")
    for msg in st.images_unreadable[:20]:
        typer.echo(f"unreadable: {msg}")
    if st.missing_examples:
        typer.echo(f"missing (first {len(st.missing_examples)}): {', '.join(st.missing_examples)}")
    if json_out:
        json_out.write_text(json.dumps(asdict(st), indent=2) + "\n")


@data_app.command("fetch")
def data_fetch(
    dataset: str = typer.Argument(..., help="Only 'iu-xray'."),
    out: Path = typer.Option(..., "--out", help="Folder for the archives."),
    extract: bool = typer.Option(True, help="Unpack the archives after verifying them."),
    reports_only: bool = typer.Option(False, help="Only NLMCXR_reports.tgz (1 MB), not the 1.1 GB images."),
    base_url: Optional[str] = typer.Option(None, help="Mirror URL (default: Open-i; env EDGECAP_IU_XRAY_URL)."),
) -> None:
    """Download the official Open-i archives with resume and checksum checks."""
    from edgecap.data.fetch import FetchError, fetch_iu_xray

    if dataset != "iu-xray":
        fail(f"unknown dataset {dataset!r}: only 'iu-xray'")
    files = ["NLMCXR_reports.tgz"] if reports_only else None
    try:
        results = fetch_iu_xray(out, base_url=base_url, files=files, extract=extract)
    except (FetchError, OSError) as e:
        fail(str(e), 1)
    for r in results:
        state = "verified" if r.verified else "size checked (no published checksum)" if r.verified is None else "?"
        typer.echo(f"{r.name}: {r.bytes:,} bytes, sha256 {r.sha256}, {state}"
                   + (f", resumed from {r.resumed_from:,}" if r.resumed_from else "")
                   + (f", extracted to {r.extracted_to}" if r.extracted_to else ""))
    typer.echo(f"next: edgecap data stats {out}")


# ---- training -----------------------------------------------------------------------------------
@app.command()
def train(
    data: Path = typer.Option(..., "--data", help="IU X-Ray data folder."),
    out: Path = typer.Option(..., "--out", help="Run directory (re-run the same command to resume)."),
    config: str = typer.Option("edge", "--config", help="edge (EfficientNet-Lite0) or tiny (fast tests)."),
    epochs: Optional[int] = typer.Option(None, help="Image-conditioned epochs."),
    batch_size: Optional[int] = typer.Option(None, help="Global batch size."),
    seed: Optional[int] = typer.Option(None, help="Seed for split, init, shuffling and augmentation."),
    learning_rate: Optional[float] = typer.Option(None, help="Adam learning rate."),
    pretrain_text: bool = typer.Option(False, "--pretrain-text", help="Train the decoder as a language model on "
                                       "the training split's report text first (all studies, images or not)."),
    text_epochs: Optional[int] = typer.Option(None, help="Epochs of --pretrain-text (default: epochs / 2)."),
    section: Optional[str] = typer.Option(None, help="findings (default) or findings+impression."),
    min_count: Optional[int] = typer.Option(None, help="Vocabulary: minimum count of a training token."),
    split_mode: str = typer.Option("auto", help="auto (annotation.json split if present), random or annotation."),
    val_fraction: Optional[float] = typer.Option(None, help="Random split: share of studies for validation."),
    test_fraction: Optional[float] = typer.Option(None, help="Random split: share of studies for test."),
    strategy: str = typer.Option("default", help="default or mirrored (tf.distribute.MirroredStrategy)."),
    logical_cpus: int = typer.Option(0, help="Split the CPU into N logical devices (to run mirrored without GPUs)."),
    progress: bool = typer.Option(True, help="Progress bars."),
) -> None:
    """Train the CNN encoder + attention LSTM decoder; writes a self-contained run directory."""
    _quiet_tensorflow()
    from edgecap.config import Config
    from edgecap.data.iu_xray import DataError

    try:
        cfg = Config.preset(config)
    except ValueError as e:
        fail(str(e))
    for obj, key, val in ((cfg.train, "epochs", epochs), (cfg.train, "batch_size", batch_size),
                          (cfg.train, "seed", seed), (cfg.train, "learning_rate", learning_rate),
                          (cfg.train, "pretrain_text_epochs", text_epochs), (cfg.text, "section", section),
                          (cfg.text, "min_count", min_count), (cfg.train, "val_fraction", val_fraction),
                          (cfg.train, "test_fraction", test_fraction)):
        if val is not None:
            setattr(obj, key, val)
    if cfg.text.section not in ("findings", "findings+impression"):
        fail(f"unknown section {cfg.text.section!r}")
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
        typer.echo(f"\ninterrupted: the last finished epoch is saved; run the same command to resume.")
        raise typer.Exit(130)
    typer.echo(f"done: {r.epochs_done} epochs, best epoch {r.best_epoch} (val loss {r.best_val_loss:.3f}, "
               f"validated on {r.val_source}: {r.n_val} studies; trained on {r.n_train}), "
               f"{r.seconds_per_epoch:.1f} s per epoch")
    if r.text_val_perplexity is not None:
        typer.echo(f"text model perplexity on the validation reports: {r.text_val_perplexity:.2f}")
    typer.echo(f"run directory: {out}\nnext: edgecap evaluate --run {out} --data {data} --split test")


@app.command()
def evaluate(
    run: Path = typer.Option(..., "--run", help="Run directory."),
    data: Path = typer.Option(..., "--data", help="IU X-Ray data folder."),
    split: str = typer.Option("test", help="train, val, test or all (the run's own split)."),
    beam: int = typer.Option(3, help="Beam size (1 = greedy)."),
    meteor: bool = typer.Option(True, help="METEOR (needs Java)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the numbers as JSON."),
    grid: Optional[Path] = typer.Option(None, "--grid", help="PNG grid: images, attention, generated vs reference."),
    html: Optional[Path] = typer.Option(None, "--html", help="Self-contained HTML evaluation report."),
) -> None:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr, clinical efficacy and diversity of the model and two baselines."""
    _quiet_tensorflow()
    from edgecap.data.iu_xray import DataError
    from edgecap.evaluation.nlg import MetricsUnavailable
    from edgecap.training.evaluate import EvaluateError, save_json
    from edgecap.training.evaluate import evaluate as run_eval

    try:
        res = run_eval(run, data, split, beam=beam, meteor=meteor, grid_png=grid, html=html, log=typer.echo)
    except (EvaluateError, DataError, FileNotFoundError, MetricsUnavailable, ValueError) as e:
        fail(str(e))
    typer.echo(f"\n{res.n_studies} studies of the {split!r} split")
    print_table(res.table())
    for n in res.notes:
        typer.echo(f"note: {n}")
    if json_out:
        save_json(res, json_out)
        typer.echo(f"wrote {json_out}")
    for f in (grid, html):
        if f:
            typer.echo(f"wrote {f}")


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Run directory for the demo model."),
    epochs: int = typer.Option(120, help="Epochs (about 1 s each here)."),
    progress: bool = typer.Option(True, help="Progress bars."),
) -> None:
    """Train the tiny model on the bundled real sample, then write a report for a bundled X-ray."""
    _quiet_tensorflow()
    from edgecap.training.demo import run_demo

    r = run_demo(out, epochs, progress, log=typer.echo)
    typer.echo(f"\nimage:     {r.image.name} (IU X-Ray uid 25, CC BY-NC-ND 4.0)")
    typer.echo(f"generated: {r.report}")
    typer.echo(f"reference: {r.reference}")
    typer.echo("A demonstration trained on 9 studies: it recites its training reports. Not for clinical use.\n"
               f"Train on the full data: edgecap data fetch iu-xray --out data/iu_xray && "
               f"edgecap train --data data/iu_xray --out runs/edge --config edge --pretrain-text")


if __name__ == "__main__":
    sys.exit(app())
