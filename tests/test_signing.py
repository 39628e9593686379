"""Signed bundles (issue #13 item 16: integrity is not authenticity).

The attack: copy the default bundle, change "pneumothorax" in vocab.json and write the new hash and size into
manifest.json. Every checksum then matches, so without trust the bundle loads (documented behaviour); with
trusted keys configured it is refused before any interpreter sees a file, through Bundle.load, `caption`,
`serve` and the app's worker. Every test isolates EDGECAP_TRUSTED_KEYS and XDG_CONFIG_HOME, so a developer's
own trust folder never changes a result.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgecap.cli import app
from edgecap.resources import sample_image
from edgecap.runtime.bundle import Bundle, BundleError, check_files
from edgecap.runtime.captioner import default_bundle_path
from edgecap.runtime.signing import (
    SIGNATURE_NAME,
    NoTrustConfigured,
    SignatureError,
    TrustStore,
    generate_keypair,
    load_signing_key,
    read_public_keys,
    shipped_trusted_keys,
    sign_bundle,
    verify_bundle,
)

runner = CliRunner()
INJECTED = "NO-PNEUMOTHORAX-CHECK"


@pytest.fixture(autouse=True)
def no_trust_from_the_machine(monkeypatch, tmp_path):
    """No trust but what a test sets up: an empty config home, no EDGECAP_TRUSTED_KEYS, no passphrase."""
    monkeypatch.delenv("EDGECAP_TRUSTED_KEYS", raising=False)
    monkeypatch.delenv("EDGECAP_SIGNING_PASSPHRASE", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config-home"))


def copy_default(dest: Path, signed: bool = True) -> Path:
    shutil.copytree(default_bundle_path(), dest)
    if not signed:
        (dest / SIGNATURE_NAME).unlink()
    return dest


def rehash_vocab(bundle: Path) -> None:
    """The item-16 edit: "pneumothorax" -> INJECTED in vocab.json, its sha256 and size re-written in the manifest
    as Manifest.save writes it, so every integrity check passes."""
    vocab = bundle / "vocab.json"
    text = vocab.read_text()
    assert '"pneumothorax"' in text
    vocab.write_text(text.replace('"pneumothorax"', f'"{INJECTED}"'))
    manifest = json.loads((bundle / "manifest.json").read_text())
    data = vocab.read_bytes()
    manifest["vocab"]["sha256"], manifest["vocab"]["bytes"] = hashlib.sha256(data).hexdigest(), len(data)
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


@pytest.fixture
def tampered(tmp_path) -> Path:
    b = copy_default(tmp_path / "tampered")
    rehash_vocab(b)
    return b


@pytest.fixture
def other_key(tmp_path) -> tuple[Path, Path]:
    """A key pair that is not the maintainers': (private .pem, folder holding only its .pub)."""
    private, public = generate_keypair(tmp_path / "other-keys", "someone else")
    trust = tmp_path / "other-trust"
    trust.mkdir()
    shutil.copy(public, trust)
    return private, trust


# ---- item 16 ---------------------------------------------------------------------------------------------
def test_rehashed_vocab_passes_integrity_without_trust(tampered):
    """Documented behaviour without trust: integrity only. The edited vocabulary loads."""
    bundle = Bundle.load(tampered)
    assert INJECTED in bundle.vocab.tokens and "pneumothorax" not in bundle.vocab.tokens


def test_rehashed_vocab_refused_with_trust(tampered, tmp_path, monkeypatch):
    """Item 16: the same bundle refused when trust is configured: explicitly, by the variable, by the config
    folder. The manifest changed after the maintainers signed it."""
    with pytest.raises(SignatureError, match=r"does not match the manifest \(modified after signing\)"):
        Bundle.load(tampered, trust=shipped_trusted_keys())
    monkeypatch.setenv("EDGECAP_TRUSTED_KEYS", str(shipped_trusted_keys()))
    with pytest.raises(BundleError, match="modified after signing"):
        Bundle.load(tampered)
    monkeypatch.delenv("EDGECAP_TRUSTED_KEYS")
    config = tmp_path / "config-home" / "edgecap" / "trusted_keys"
    config.mkdir(parents=True)
    Bundle.load(tampered)  # an empty config folder configures nothing
    shutil.copy(shipped_trusted_keys() / "edgecap-maintainers.pub", config)
    with pytest.raises(SignatureError, match="modified after signing"):
        check_files(tampered)


def test_caption_cli_refuses_the_rehashed_bundle(tampered, tmp_path):
    """Item 16 through `edgecap caption`: exit 2, one error line, no traceback, nothing written."""
    out = tmp_path / "reports.jsonl"
    args = ["caption", str(sample_image()), "--bundle", str(tampered), "--out", str(out)]
    r = runner.invoke(app, args, env={"EDGECAP_TRUSTED_KEYS": str(shipped_trusted_keys())})
    assert r.exit_code == 2, r.output
    assert "modified after signing" in r.output and "Traceback" not in r.output
    assert [line for line in r.output.splitlines() if line.strip()] == [r.output.strip()]
    assert r.exception is None or isinstance(r.exception, SystemExit)
    assert not out.exists() or INJECTED not in out.read_text()


def test_default_bundle_loads_under_the_shipped_key(monkeypatch):
    """Trust set to the shipped maintainers' key: the default bundle loads as caption, serve and the app load
    it (Captioner.from_bundle with no path)."""
    from edgecap.runtime.captioner import Captioner

    monkeypatch.setenv("EDGECAP_TRUSTED_KEYS", str(shipped_trusted_keys()))
    assert Captioner.from_bundle(None).bundle.path == default_bundle_path()


def test_serve_refuses_the_rehashed_bundle_at_start(tampered, monkeypatch):
    """`edgecap serve` loads its bundles before it binds: refused with exit 2 and one line."""
    import typer
    import uvicorn

    from edgecap.cli.serve import serve

    serve_app = typer.Typer()
    serve_app.command()(serve)
    monkeypatch.setenv("EDGECAP_TRUSTED_KEYS", str(shipped_trusted_keys()))
    # a server that starts (the bundle accepted) would serve until killed: end the test instead of hanging
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, *a, **k: pytest.fail("serve started the bundle"))
    r = CliRunner().invoke(serve_app, ["--bundle", str(tampered)])
    assert r.exit_code == 2 and "modified after signing" in r.output and "Traceback" not in r.output


def test_app_worker_reports_the_refused_bundle(tampered, monkeypatch):
    """The app's worker loads through Captioner.from_bundle: the study fails with the bundle message, no report."""
    from edgecap.edge_app.worker import CaptionWorker

    monkeypatch.setenv("EDGECAP_TRUSTED_KEYS", str(shipped_trusted_keys()))
    done: list = []
    worker = CaptionWorker(on_done=done.append)
    worker.submit(str(sample_image()), None, str(tampered), 1, 1)
    deadline = time.monotonic() + 60
    while not done and time.monotonic() < deadline:
        time.sleep(0.02)
    worker.shutdown()
    assert done and done[0].report is None
    assert done[0].error.code == "bundle" and "modified after signing" in done[0].error.detail


# ---- what trust refuses ------------------------------------------------------------------------------------
def test_unsigned_bundle_refused_when_trust_is_on(tmp_path):
    unsigned = copy_default(tmp_path / "unsigned", signed=False)
    Bundle.load(unsigned)  # no trust: integrity only
    with pytest.raises(SignatureError, match=r"is not signed, and trusted keys are configured in .*refusing it"):
        Bundle.load(unsigned, trust=shipped_trusted_keys())


def test_bundle_signed_by_another_key_refused(tmp_path, other_key):
    private, other_trust = other_key
    b = copy_default(tmp_path / "resigned")
    rehash_vocab(b)
    signer = sign_bundle(b, private)  # the attacker re-signs with a key of their own
    assert signer.name == "someone else"
    with pytest.raises(SignatureError, match=rf"signed by an untrusted key {signer.key_id} \(someone else\)"):
        Bundle.load(b, trust=shipped_trusted_keys())
    assert INJECTED in Bundle.load(b, trust=other_trust).vocab.tokens  # trusted where that key is trusted
    with pytest.raises(SignatureError, match="untrusted key"):  # the default bundle, where only that key is
        check_files(default_bundle_path(), trust=other_trust)


def test_invalid_signature_file_and_trust_folder(tmp_path, monkeypatch):
    b = copy_default(tmp_path / "b")
    (b / SIGNATURE_NAME).write_text('{"format": "edgecap-signature/1", "algorithm": "rsa"}')
    with pytest.raises(SignatureError, match="not a valid edgecap signature"):
        check_files(b, trust=shipped_trusted_keys())
    monkeypatch.setenv("EDGECAP_TRUSTED_KEYS", str(tmp_path / "typo"))  # fail closed, not trust switched off
    with pytest.raises(SignatureError, match=r"typo \(EDGECAP_TRUSTED_KEYS\) does not exist"):
        Bundle.load(default_bundle_path())
    bad = tmp_path / "bad-trust"
    bad.mkdir()
    (bad / "x.pub").write_text("ssh-ed25519 AAAA nobody\n")
    with pytest.raises(SignatureError, match=r"x.pub:1: not an edgecap public key"):
        check_files(default_bundle_path(), trust=bad)
    with pytest.raises(NoTrustConfigured):
        verify_bundle(default_bundle_path(), TrustStore.none())


def test_without_cryptography_only_trust_needs_it(tmp_path):
    """A device without `cryptography` (an APK without its recipe) still loads bundles while no trust is
    configured, and refuses them, saying why, when it is (fail closed)."""
    code = f"""
import sys
sys.modules["cryptography"] = None
from edgecap.runtime.bundle import BundleError, check_files
from edgecap.runtime.captioner import default_bundle_path
check_files(default_bundle_path())
try:
    check_files(default_bundle_path(), trust={str(shipped_trusted_keys())!r})
except BundleError as e:
    print("refused:", e)
"""
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config-home")}
    env.pop("EDGECAP_TRUSTED_KEYS", None)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert "refused:" in r.stdout and "`cryptography` package that checks signatures is not installed" in r.stdout


# ---- the shipped bundle and key ------------------------------------------------------------------------------
def test_default_bundle_verifies_against_the_shipped_key():
    (key,) = read_public_keys(shipped_trusted_keys() / "edgecap-maintainers.pub")
    signer = verify_bundle(default_bundle_path(), shipped_trusted_keys())
    assert signer.name == key.name == "edgecap maintainers" and signer.key_id == key.key_id
    sig = json.loads((default_bundle_path() / SIGNATURE_NAME).read_text())
    assert sig["key_id"] == hashlib.sha256(key.raw).hexdigest() and sig["algorithm"] == "ed25519"


# ---- keys and the commands -----------------------------------------------------------------------------------
def test_keygen_sign_verify_round_trip(tmp_path):
    keys = tmp_path / "keys"
    r = runner.invoke(app, ["bundle", "keygen", "--out", str(keys), "--name", "Clinic X"])
    assert r.exit_code == 0, r.output
    private, public = keys / "Clinic-X.pem", keys / "Clinic-X.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert public.read_text().startswith("edgecap-ed25519 ") and public.read_text().strip().endswith(" Clinic X")
    before = private.read_bytes()
    r = runner.invoke(app, ["bundle", "keygen", "--out", str(keys), "--name", "Clinic X"])
    assert r.exit_code == 2 and "refusing to overwrite" in r.output and private.read_bytes() == before

    b = copy_default(tmp_path / "b", signed=False)
    r = runner.invoke(app, ["bundle", "sign", str(b), "--key", str(private)])
    assert r.exit_code == 0 and "signed by Clinic X" in r.output, r.output
    key_id = read_public_keys(public)[0].key_id
    r = runner.invoke(app, ["bundle", "verify", str(b), "--trusted-keys", str(keys)])
    assert r.exit_code == 0 and f"signed by Clinic X (key id {key_id}" in r.output, r.output
    r = runner.invoke(app, ["bundle", "verify", str(b), "--trusted-keys", str(public)])  # one .pub file
    assert r.exit_code == 0, r.output

    r = runner.invoke(app, ["bundle", "verify", str(b), "--trusted-keys", str(shipped_trusted_keys())])
    assert r.exit_code == 1 and "untrusted key" in r.output
    r = runner.invoke(app, ["bundle", "verify", str(b)])  # nothing configured: a usage error
    assert r.exit_code == 2 and "no trusted keys configured" in r.output
    r = runner.invoke(app, ["bundle", "verify", str(b)], env={"EDGECAP_TRUSTED_KEYS": str(keys)})
    assert r.exit_code == 0, r.output

    model = next(b.glob("encoder_*.tflite"))  # a model byte flipped: the signature holds, the file check not
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    r = runner.invoke(app, ["bundle", "verify", str(b), "--trusted-keys", str(keys)])
    assert r.exit_code == 1 and "sha256 mismatch" in r.output
    r = runner.invoke(app, ["bundle", "sign", str(b), "--key", str(private)])  # a broken bundle is never signed
    assert r.exit_code == 2 and "sha256 mismatch" in r.output

    c = copy_default(tmp_path / "c")
    rehash_vocab(c)
    r = runner.invoke(app, ["bundle", "verify", str(c), "--trusted-keys", str(shipped_trusted_keys())])
    assert r.exit_code == 1 and "modified after signing" in r.output and len(r.output.strip().splitlines()) == 1
    r = runner.invoke(app, ["bundle", "sign", str(c), "--key", str(tmp_path / "missing.pem")])
    assert r.exit_code == 2 and "cannot read the private key" in r.output and "Traceback" not in r.output


def test_encrypted_private_key_needs_its_passphrase(tmp_path, monkeypatch):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pem = tmp_path / "enc.pem"
    encryption = serialization.BestAvailableEncryption(b"correct horse")
    pem.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
    )
    with pytest.raises(SignatureError, match="encrypted; set EDGECAP_SIGNING_PASSPHRASE"):
        load_signing_key(pem)
    monkeypatch.setenv("EDGECAP_SIGNING_PASSPHRASE", "wrong")
    with pytest.raises(SignatureError, match="not a usable PEM private key"):
        load_signing_key(pem)
    monkeypatch.setenv("EDGECAP_SIGNING_PASSPHRASE", "correct horse")
    b = copy_default(tmp_path / "b", signed=False)
    signer = sign_bundle(b, pem)
    assert signer.name == "enc"  # no enc.pub beside it: the file's stem
    trust = tmp_path / "trust"
    trust.mkdir()
    (trust / "enc.pub").write_text(load_signing_key(pem).public.line() + "\n")
    assert verify_bundle(b, trust).key_id == signer.key_id


# ---- convert --sign-key --------------------------------------------------------------------------------------
@pytest.mark.tf
def test_convert_refuses_an_unusable_sign_key_before_converting(tmp_path):
    args = ["convert", "--run", str(tmp_path), "--out", str(tmp_path / "b"), "--float32"]
    r = runner.invoke(app, [*args, "--sign-key", str(tmp_path / "k")])
    assert r.exit_code == 2 and "--sign-key" in r.output and "cannot read the private key" in r.output
    assert not (tmp_path / "b").exists()


@pytest.mark.tf
@pytest.mark.slow
def test_convert_signs_the_verified_bundle(overfit_run, tmp_path, monkeypatch):
    """`convert --sign-key` signs after verification; its own verification is integrity-only, so a machine
    with trust configured still converts; the key's path is nowhere in the bundle."""
    private, public = generate_keypair(tmp_path / "keys", "converter")
    monkeypatch.setenv("EDGECAP_TRUSTED_KEYS", str(tmp_path / "keys"))
    out = tmp_path / "f32"
    out.mkdir()
    (out / SIGNATURE_NAME).write_text("stale")  # an earlier conversion's signature is not kept
    args = ["convert", "--run", str(overfit_run[0]), "--out", str(out), "--float32", "--verify-studies", "2"]
    r = runner.invoke(app, [*args, "--sign-key", str(private)])
    assert r.exit_code == 0, r.output
    key_id = read_public_keys(public)[0].key_id
    assert f"signed by converter (key id {key_id})" in r.output
    assert verify_bundle(out, tmp_path / "keys").key_id == key_id
    Bundle.load(out)  # under EDGECAP_TRUSTED_KEYS
    for f in out.iterdir():
        text = f.read_bytes()
        assert str(tmp_path / "keys").encode() not in text and b"converter.pem" not in text, f.name
