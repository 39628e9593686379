"""`edgecap data stats | fetch`: figures of an IU X-Ray folder, and the download of the Open-i archives.

    edgecap data fetch iu-xray --out data/iu_xray [--reports-only] [--base-url MIRROR]
    edgecap data stats data/iu_xray [--json stats.json]

Exit status: 0 done; 1 the download failed (network, checksum, disk); 2 bad usage or no readable data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from edgecap.cli.common import EXIT_FAILED, fail

data_app = typer.Typer(help="IU X-Ray data: statistics and download.", no_args_is_help=True)


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
        fail(str(e), EXIT_FAILED)
    for r in results:
        state = "verified" if r.verified else "size checked (no published checksum)" if r.verified is None else "?"
        typer.echo(
            f"{r.name}: {r.bytes:,} bytes, sha256 {r.sha256}, {state}"
            + (f", resumed from {r.resumed_from:,}" if r.resumed_from else "")
            + (f", extracted to {r.extracted_to}" if r.extracted_to else "")
        )
    typer.echo(f"next: edgecap data stats {out}")
