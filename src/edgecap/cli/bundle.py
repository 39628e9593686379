"""`edgecap bundle compare | keygen | sign | verify`: compare two bundle folders; sign bundles, check who signed one.

    edgecap bundle compare bundles/int8             # against the default bundle shipped with edgecap
    edgecap bundle compare bundles/a bundles/b --data data/iu_xray
    edgecap bundle keygen --out ~/keys --name "Clinic X"          # ~/keys/Clinic-X.pem (0600) + Clinic-X.pub
    edgecap bundle sign bundles/int8 --key ~/keys/Clinic-X.pem    # writes bundles/int8/manifest.sig
    edgecap bundle verify bundles/int8 [--trusted-keys DIR]       # signer, key id; every file checked

Keys, signatures and the trust folder: runtime.signing (docs/bundle.md, "Signed bundles").

Exit status: compare: 0 every report token-identical or a near tie; 1 some report differs more; 2 an unusable
bundle or data folder. keygen, sign: 0 done; 2 a key that cannot be written or read, a bundle that cannot be
signed (its files do not match its manifest). verify: 0 signed by a trusted key, unchanged since, every file
matching the manifest; 1 it is not (unsigned, untrusted key, modified, corrupt); 2 bad usage (no trusted keys
configured, no such bundle folder, an unreadable key file).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from edgecap.cli.common import EXIT_FAILED, fail, print_table

if TYPE_CHECKING:
    from edgecap.convert.compare import Comparison

bundle_app = typer.Typer(help="Edge bundles: compare two bundle folders; sign and verify one.", no_args_is_help=True)


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


@bundle_app.command("keygen")
def bundle_keygen(
    out: Path = typer.Option(..., "--out", help="Folder for the key pair (created if missing)."),
    name: Optional[str] = typer.Option(None, "--name", help="The signer's name, written into the .pub file and "
                                                            "every signature (default: user@host); the files are "
                                                            "named after it."),
) -> None:
    """Make an Ed25519 key pair: NAME.pem (private, mode 0600: keep it off devices and out of repositories) and
    NAME.pub (public: what a clinic copies into its trusted keys folder). Never overwrites a key."""
    from edgecap.runtime.signing import SignatureError, generate_keypair, read_public_keys

    try:
        private, public = generate_keypair(out, name)
        key = read_public_keys(public)[0]
    except SignatureError as e:
        fail(str(e))
    typer.echo(f"private key: {private}  (mode 0600; keep it secret)")
    typer.echo(f"public key:  {public}  ({key.name}, key id {key.key_id})")
    typer.echo(f"next: edgecap bundle sign BUNDLE --key {private}")


@bundle_app.command("sign")
def bundle_sign(
    bundle: Path = typer.Argument(..., help="The bundle folder to sign."),
    key: Path = typer.Option(..., "--key", help="The private key (PEM, from edgecap bundle keygen; an encrypted one "
                                                "reads its passphrase from EDGECAP_SIGNING_PASSPHRASE)."),
) -> None:
    """Sign a bundle: manifest.sig over manifest.json, which hashes every other file (they are checked first:
    a broken bundle is never signed). Replaces an older signature."""
    from edgecap.runtime.bundle import BundleError
    from edgecap.runtime.signing import SIGNATURE_NAME, sign_bundle

    try:
        signer = sign_bundle(bundle, key)
    except BundleError as e:  # signing.SignatureError included
        fail(str(e))
    typer.echo(f"{bundle / SIGNATURE_NAME}: signed by {signer.name} (key id {signer.key_id})")


@bundle_app.command("verify")
def bundle_verify(
    bundle: Path = typer.Argument(..., help="The bundle folder to check."),
    trusted_keys: Optional[Path] = typer.Option(None, "--trusted-keys", help="A folder of trusted .pub keys (or one "
                                                                             ".pub file); default: "
                                                                             "EDGECAP_TRUSTED_KEYS, else "
                                                                             "~/.config/edgecap/trusted_keys."),
) -> None:
    """Check that a bundle is signed by a trusted key, unchanged since, and that every file matches its manifest.
    Exit 0 when it is; 1 when not; 2 when no trusted keys are configured."""
    from edgecap.runtime.bundle import BundleError, check_files
    from edgecap.runtime.signing import NoTrustConfigured, SignatureError, TrustStore, verify_bundle

    if not bundle.is_dir():
        fail(f"{bundle}: no such bundle folder")
    try:
        store = TrustStore.load(trusted_keys, "--trusted-keys") if trusted_keys else TrustStore.from_environment()
    except SignatureError as e:  # a trust folder that does not exist, a malformed .pub file
        fail(str(e))
    try:
        signer = verify_bundle(bundle, store)
        check_files(bundle, store)  # as the runtime checks it: the signature, then every file against the manifest
    except NoTrustConfigured as e:
        fail(str(e))
    except BundleError as e:  # unsigned, untrusted, modified (signing.SignatureError) or a corrupt file
        fail(str(e), EXIT_FAILED)
    typer.echo(
        f"{bundle}: signed by {signer.name} (key id {signer.key_id}, {signer.created or 'undated'}), trusted in "
        f"{store.describe()}; every file matches the manifest"
    )
