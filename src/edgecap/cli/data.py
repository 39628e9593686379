"""`edgecap data stats | fetch | rehearsal`: figures of an IU X-Ray folder, the Open-i download, a rehearsal set.

    edgecap data fetch iu-xray --out data/iu_xray [--reports-only] [--base-url MIRROR]
    edgecap data stats data/iu_xray [--json stats.json]
    edgecap data rehearsal data/rehearsal --reports data/iu_xray/NLMCXR_reports.tgz [--jobs 2]

Exit status: 0 done; 1 the download failed (network, checksum, disk); 2 bad usage or no readable data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from edgecap.cli.common import EXIT_FAILED, fail

data_app = typer.Typer(help="IU X-Ray data: statistics, download and a rehearsal set.", no_args_is_help=True)


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
    from edgecap.data.rehearsal import notice_of as rehearsal_notice
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
    notice = rehearsal_notice(path)
    if notice:
        typer.echo(f"warning: {notice} ({path} holds a REHEARSAL marker)", err=True)
    if json_out:
        json_out.write_text(json.dumps({**asdict(st), "rehearsal": notice}, indent=2) + "\n")


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
        fail(str(e), EXIT_FAILED)
    for r in results:
        state = "verified" if r.verified else "size checked (no published checksum)" if r.verified is None else "?"
        typer.echo(
            f"{r.name}: {r.bytes:,} bytes, sha256 {r.sha256}, {state}"
            + (f", resumed from {r.resumed_from:,}" if r.resumed_from else "")
            + (f", extracted to {r.extracted_to}" if r.extracted_to else "")
        )
    typer.echo(f"next: edgecap data stats {out}")


@data_app.command("rehearsal")
def data_rehearsal(
    out: Path = typer.Argument(..., help="Folder to write (Open-i layout: ecgen-radiology/ + images/)."),
    reports: Path = typer.Option(..., "--reports", help="The Open-i NLMCXR_reports.tgz (or its ecgen-radiology/)."),
    seed: int = typer.Option(0, help="Seed of the image derivations (same seed, same bytes)."),
    jobs: int = typer.Option(0, help="Worker processes (0: one per CPU)."),
    limit: int = typer.Option(0, help="Only the first N reports (0: all)."),
    split: Optional[Path] = typer.Option(None, "--split", help="An R2Gen-style annotation.json whose train / val / "
                                                               "test split every stage then uses."),
) -> None:
    """A full-size rehearsal folder: the real reports, and for every real image name a PNG derived from the
    packaged real sample. It measures cost and robustness, never quality (docs/scale.md)."""
    from edgecap.data.iu_xray import DataError
    from edgecap.data.rehearsal import NOTICE, build

    if jobs < 0 or limit < 0:
        fail("--jobs and --limit must be 0 or more")
    try:
        r = build(reports, out, seed=seed, jobs=jobs or None, limit=limit or None, split=split, log=typer.echo)
    except DataError as e:
        fail(str(e))
    except OSError as e:
        fail(str(e), EXIT_FAILED)
    by = ", ".join(f"{v:,} {k}" for k, v in r.by_projection.items() if v)
    typer.echo(f"{r.studies:,} reports, {r.images:,} images ({by}); {r.written:,} written now")
    typer.echo(f"warning: {NOTICE}")
    typer.echo(f"next: edgecap data stats {out}")
