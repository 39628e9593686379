"""`edgecap bundle compare A [B]`: two bundle folders side by side, file hashes and the reports they write.

    edgecap bundle compare bundles/int8             # against the default bundle shipped with edgecap
    edgecap bundle compare bundles/a bundles/b --data data/iu_xray

Exit status: 0 every report token-identical or a near tie; 1 some report differs more; 2 an unusable bundle
or data folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from edgecap.cli.common import EXIT_FAILED, fail, print_table

if TYPE_CHECKING:
    from edgecap.convert.compare import Comparison

bundle_app = typer.Typer(help="Edge bundles: compare two bundle folders.", no_args_is_help=True)


@bundle_app.command("compare")
def bundle_compare(
    a: Path = typer.Argument(..., help="A bundle folder (e.g. one you just converted)."),
    b: str = typer.Argument("default", help="The bundle to compare with; 'default': the shipped default bundle."),
    data: Optional[Path] = typer.Option(None, "--data", help="Studies to caption with both (an IU X-Ray folder or a "
                                                             "folder of images); default: the bundled real sample."),
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
    _print_comparison(cmp, len(studies))
    if not cmp.same_or_near_ties:
        raise typer.Exit(EXIT_FAILED)


def _print_comparison(cmp: Comparison, n_studies: int) -> None:
    """The file table, each report pair that is not identical, then a one-line verdict."""
    print_table(cmp.rows())
    for r in cmp.reports:
        if not r["same"]:
            kind = "near tie" if r["near_tie"] else "differs"
            typer.echo(
                f"\nstudy {r['study']}, beam {r['beam']} ({kind}, tie gap {r['tie_gap']:.3f} nats):\n"
                f"  A: {r['a']}\n  B: {r['b']}"
            )
    if cmp.manifest_differences:
        typer.echo(f"manifest fields that differ: {', '.join(cmp.manifest_differences)}")
    files = "byte-identical" if cmp.identical_files else "not byte-identical"
    reports = (
        "the same reports"
        if cmp.same_reports
        else "the same reports up to near ties"
        if cmp.same_or_near_ties
        else "DIFFERENT reports"
    )
    typer.echo(f"model files {files}; {reports} on {n_studies} studies (greedy and beam 3)")
