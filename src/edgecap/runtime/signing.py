"""Signed bundles: who made a bundle, not only whether its files are intact. Device-safe: stdlib, and
`cryptography` (a core dependency) imported only to make keys, sign or check a signature, so a device without
it still loads bundles while no trust is configured, and refuses them, saying why, when trust is.

manifest.json holds the sha256 and size of every other file of a bundle (runtime.bundle.check_files checks
them), so an Ed25519 signature over the manifest's exact bytes covers the whole bundle. It lies beside it:

    manifest.sig   {"format": "edgecap-signature/1", "algorithm": "ed25519",
                    "key_id": sha256 hex of the signer's raw 32-byte public key,
                    "signer": the signer's name (informative: trust goes by key_id),
                    "created": UTC ISO 8601, "signature": base64 of the 64-byte signature of manifest.json}

Key files (generate_keypair, `edgecap bundle keygen`):

    NAME.pem   the private key: PKCS8 PEM, unencrypted, file mode 0600. An encrypted PKCS8 PEM works too
               (its passphrase from EDGECAP_SIGNING_PASSPHRASE). Keep it off devices and out of repositories.
    NAME.pub   the public key, one line: "edgecap-ed25519 <base64 of the raw 32 bytes> <name>". A .pub file
               may hold several such lines; blank lines and lines starting with "#" are skipped.

Trust (TrustStore): a folder of .pub files (or one .pub file), from the first of

    an explicit path                          trust=PATH, `--trusted-keys DIR`
    EDGECAP_TRUSTED_KEYS                      an environment variable naming the folder
    $XDG_CONFIG_HOME/edgecap/trusted_keys/    the config folder (default ~/.config/edgecap/trusted_keys/)

Trust is configured when a path is given (explicitly or by the variable; a path that does not exist is an
error, never trust silently turned off) or when the config folder holds at least one key. With trust
configured, runtime.bundle.check_files (so Bundle.load, `caption`, `serve` and the app) refuses a bundle that
is unsigned, signed by a key not in the store, or whose manifest changed after signing, before any
interpreter sees a file. Without it only integrity is checked, as before: a bundle whose vocab.json was edited
and re-hashed into its manifest is accepted. That is what trust is for.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import hashlib
import json
import os
import platform
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from edgecap.runtime.bundle import BundleError, check_files
from edgecap.runtime.files import write_atomically
from edgecap.runtime.manifest import MANIFEST_NAME

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

SIGNATURE_NAME = "manifest.sig"
SIGNATURE_FORMAT = "edgecap-signature/1"
ALGORITHM = "ed25519"
KEY_TYPE = "edgecap-ed25519"  # the first word of a public key line
TRUSTED_KEYS_ENV = "EDGECAP_TRUSTED_KEYS"
PASSPHRASE_ENV = "EDGECAP_SIGNING_PASSPHRASE"
MAX_SIGNATURE_BYTES = 64 * 1024  # manifest.sig is ~400 bytes; a larger file is refused unread
_ENCRYPTED_PEM = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"


class SignatureError(BundleError):
    """A bundle refused for its signature (unsigned, untrusted key, modified after signing), or a key or trust
    folder that cannot be used. A BundleError: every front end already reports those in one line."""


class NoTrustConfigured(SignatureError):
    """verify_bundle asked to check a signature with no trusted keys to check it against."""


# ---- keys ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PublicKey:
    """An Ed25519 public key (raw: 32 bytes) and the name it is known by."""

    raw: bytes
    name: str

    @property
    def key_id(self) -> str:
        """The key's fingerprint: sha256 hex of its raw 32 bytes (manifest.sig names the signer's key so)."""
        return hashlib.sha256(self.raw).hexdigest()

    def line(self) -> str:
        """The .pub file line: "edgecap-ed25519 <base64 raw> <name>"."""
        return f"{KEY_TYPE} {base64.b64encode(self.raw).decode()} {self.name}"

    def verifies(self, signature: bytes, data: bytes) -> bool:
        try:
            from cryptography.exceptions import InvalidSignature
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        except ImportError:
            raise SignatureError(
                "trusted keys are configured, but the `cryptography` package that checks signatures is not "
                "installed: refusing every bundle (pip install cryptography)"
            ) from None
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, data)
        except InvalidSignature:
            return False
        return True

    @classmethod
    def parse(cls, line: str, where: str) -> PublicKey:
        """One .pub line -> PublicKey; SignatureError naming `where` (file:line) when it is not one."""
        parts = line.strip().split(None, 2)
        if len(parts) < 2 or parts[0] != KEY_TYPE:
            raise SignatureError(f"{where}: not an edgecap public key (expected '{KEY_TYPE} <base64> <name>')")
        try:
            raw = base64.b64decode(parts[1], validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise SignatureError(f"{where}: the key is not the base64 of 32 bytes (an Ed25519 public key)")
        return cls(raw, parts[2].strip() if len(parts) > 2 else "")

    @classmethod
    def of(cls, private: Ed25519PrivateKey, name: str) -> PublicKey:
        from cryptography.hazmat.primitives import serialization

        raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return cls(raw, name)


@dataclass(frozen=True)
class SigningKey:
    """A private key loaded for signing, and the signer name written into manifest.sig."""

    private: Ed25519PrivateKey
    name: str

    @property
    def public(self) -> PublicKey:
        return PublicKey.of(self.private, self.name)


def read_public_keys(path: str | Path) -> list[PublicKey]:
    """Every key line of a .pub file (several lines, # comments and blank lines allowed)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SignatureError(f"{path}: cannot read the public key ({getattr(e, 'strerror', None) or e})") from None
    keys = [
        PublicKey.parse(line, f"{path}:{n}")
        for n, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not keys:
        raise SignatureError(f"{path}: no public key in the file")
    return keys


def load_signing_key(path: str | Path, passphrase: bytes | None = None) -> SigningKey:
    """A private key PEM (PKCS8, Ed25519) -> SigningKey. An encrypted PEM needs `passphrase`, else the
    EDGECAP_SIGNING_PASSPHRASE variable. The signer name: that of NAME.pub beside NAME.pem when it holds this
    key (as keygen writes them), else the file's stem."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SignatureError(f"{path}: cannot read the private key ({e.strerror or e})") from None
    password = None
    if _ENCRYPTED_PEM in data:
        env = os.environ.get(PASSPHRASE_ENV)
        password = passphrase if passphrase is not None else env.encode() if env else None
        if password is None:
            raise SignatureError(f"{path}: the private key is encrypted; set {PASSPHRASE_ENV} to its passphrase")
    try:
        key = serialization.load_pem_private_key(data, password)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise SignatureError(f"{path}: not a usable PEM private key ({e})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path}: a {type(key).__name__} key; edgecap signs with Ed25519 (edgecap bundle keygen)")
    return SigningKey(key, _name_beside(path, key))


def _name_beside(path: Path, key: Ed25519PrivateKey) -> str:
    """The name in NAME.pub beside NAME.pem when that file holds `key`'s public half, else NAME."""
    pub = path.with_suffix(".pub")
    mine = PublicKey.of(key, "")
    try:
        return next(k.name for k in read_public_keys(pub) if k.raw == mine.raw and k.name)
    except (SignatureError, StopIteration):
        return path.stem


def default_key_name() -> str:
    """user@host, as ssh-keygen names keys (or "edgecap" where the user cannot be told)."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError, ImportError):
        return "edgecap"
    host = platform.node()
    return f"{user}@{host}" if host else user


def key_stem(name: str) -> str:
    """A key name -> the stem of its files ("edgecap maintainers" -> "edgecap-maintainers")."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "edgecap-signing"


def generate_keypair(out: str | Path, name: str | None = None) -> tuple[Path, Path]:
    """A new Ed25519 key pair in folder `out`: (<stem>.pem private, mode 0600; <stem>.pub public), stem from
    the name. Refuses to overwrite either file (SignatureError)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    name = (name if name is not None else default_key_name()).strip()
    if not name or not name.isprintable():
        raise SignatureError(f"key name {name!r}: give a non-empty name on one line")
    out = Path(out)
    stem = key_stem(name)
    private_path, public_path = out / f"{stem}.pem", out / f"{stem}.pub"
    for p in (private_path, public_path):
        if p.exists():
            raise SignatureError(f"{p} exists: refusing to overwrite a key (choose another --out or --name)")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    try:
        out.mkdir(parents=True, exist_ok=True)
        _write_new(private_path, pem, 0o600)
        _write_new(public_path, (PublicKey.of(key, name).line() + "\n").encode(), 0o644)
    except OSError as e:
        raise SignatureError(f"{out}: cannot write the key pair ({e.strerror or e})") from None
    return private_path, public_path


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create `path` (never replacing a file, O_EXCL) with permissions `mode`, and write `data`."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask cannot widen it, and a group-readable private key would be a leak
        os.write(fd, data)
    finally:
        os.close(fd)


def shipped_trusted_keys() -> Path:
    """The public keys shipped with edgecap (the maintainers' key that signs the default bundle): a folder a
    clinic copies from into its trust folder."""
    return Path(str(resources.files("edgecap.resources").joinpath("trusted_keys")))


# ---- trust ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrustStore:
    """Public keys by key id, and where they were read from (location None: no trust configured)."""

    keys: dict[str, PublicKey]
    location: Path | None = None
    origin: str = "none"  # "--trusted-keys" / "explicit path", "EDGECAP_TRUSTED_KEYS", "config folder"

    @property
    def configured(self) -> bool:
        return self.location is not None

    def describe(self) -> str:
        return f"{self.location} ({self.origin})" if self.configured else "nowhere (no trust configured)"

    @classmethod
    def none(cls) -> TrustStore:
        """No trust configured: bundles are checked for integrity only (e.g. convert verifying the bundle it
        has just written, before signing it)."""
        return cls({})

    @classmethod
    def load(cls, path: str | Path, origin: str = "explicit path") -> TrustStore:
        """A folder of .pub files (hidden files and other suffixes skipped) or one .pub file -> TrustStore,
        configured even when it holds no key (then every bundle is refused). SignatureError when the path does
        not exist or a .pub file is malformed."""
        path = Path(path).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix == ".pub" and not p.name.startswith("."))
        elif path.is_file():
            files = [path]
        else:
            raise SignatureError(f"trusted keys: {path} ({origin}) does not exist")
        keys: dict[str, PublicKey] = {}
        for f in files:
            for k in read_public_keys(f):
                keys.setdefault(k.key_id, k)
        return cls(keys, path, origin)

    @classmethod
    def from_environment(cls) -> TrustStore:
        """EDGECAP_TRUSTED_KEYS when set, else the config folder when it holds a key, else no trust."""
        env = os.environ.get(TRUSTED_KEYS_ENV, "").strip()
        if env:
            return cls.load(env, TRUSTED_KEYS_ENV)
        folder = config_trust_folder()
        if folder.is_dir():
            store = cls.load(folder, "config folder")
            if store.keys:
                return store
        return cls.none()


def config_trust_folder() -> Path:
    """$XDG_CONFIG_HOME/edgecap/trusted_keys (an XDG_CONFIG_HOME that is not absolute is ignored, as the XDG
    spec says), default ~/.config/edgecap/trusted_keys."""
    xdg = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".config"
    return base / "edgecap" / "trusted_keys"


def resolve_trust(trust: TrustStore | str | Path | None) -> TrustStore:
    """None -> the environment's trust (TrustStore.from_environment); a path -> that folder or file; a store
    -> itself."""
    if trust is None:
        return TrustStore.from_environment()
    if isinstance(trust, TrustStore):
        return trust
    return TrustStore.load(trust)


# ---- signatures ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Signer:
    """Who signed a bundle: the key's name (the trust store's name for a verified key), its id, and when."""

    name: str
    key_id: str
    created: str


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def sign_bundle(folder: str | Path, key: str | Path | SigningKey, signer: str | None = None) -> Signer:
    """Sign bundle `folder` with `key` (a private key PEM path or a loaded SigningKey): manifest.sig over
    manifest.json's bytes, replacing an older one. The files are checked against the manifest first: a broken
    bundle is never signed. `signer` overrides the key's name. Raises BundleError / SignatureError."""
    root = Path(folder)
    signing = key if isinstance(key, SigningKey) else load_signing_key(key)
    data = _read_manifest(root)
    check_files(root, trust=TrustStore.none())
    record = {
        "format": SIGNATURE_FORMAT,
        "algorithm": ALGORITHM,
        "key_id": signing.public.key_id,
        "signer": signer if signer is not None else signing.name,
        "created": _now(),
        "signature": base64.b64encode(signing.private.sign(data)).decode(),
    }
    path = root / SIGNATURE_NAME
    try:
        write_atomically(path, json.dumps(record, indent=2) + "\n")  # a reader never sees half a signature
    except OSError as e:
        raise SignatureError(f"{path}: cannot write the signature ({e.strerror or e})") from None
    return Signer(record["signer"], record["key_id"], record["created"])


def verify_bundle(folder: str | Path, trust: TrustStore | str | Path | None = None) -> Signer:
    """Check that bundle `folder`'s manifest.json is signed, by a key in `trust` (resolve_trust), and unchanged
    since -> the Signer. The manifest covers the other files: check them with runtime.bundle.check_files (which
    calls this when trust is configured). Raises SignatureError with one line."""
    root = Path(folder)
    store = resolve_trust(trust)
    if not store.configured:
        raise NoTrustConfigured(
            f"no trusted keys configured: give a folder of .pub keys (--trusted-keys DIR), set {TRUSTED_KEYS_ENV} "
            f"or copy keys into {config_trust_folder()}"
        )
    data = _read_manifest(root)
    record = _read_signature(root)
    if record is None:
        raise SignatureError(
            f"bundle {root} is not signed, and trusted keys are configured in {store.describe()}: refusing it "
            f"(sign it with `edgecap bundle sign {root} --key KEY.pem`, KEY.pub being trusted there, or use a "
            "bundle signed by a trusted key)"
        )
    key_id, claimed, created, signature = record
    key = store.keys.get(key_id)
    if key is None:
        n = len(store.keys)
        raise SignatureError(
            f"bundle {root} is signed by an untrusted key {key_id} ({claimed}), not one of the {n} "
            f"key{'s' if n != 1 else ''} in {store.describe()}: refusing it"
        )
    if not key.verifies(signature, data):
        raise SignatureError(
            f"bundle {root}: the signature does not match the manifest (modified after signing): refusing it"
        )
    return Signer(key.name or claimed, key_id, created)


def _read_manifest(root: Path) -> bytes:
    path = root / MANIFEST_NAME
    try:
        return path.read_bytes()
    except OSError as e:
        raise SignatureError(f"{path}: cannot read the manifest ({e.strerror or e}; not an edgecap bundle?)") from None


def _read_signature(root: Path) -> tuple[str, str, str, bytes] | None:
    """manifest.sig -> (key_id, signer, created, signature bytes); None when the bundle has none."""
    path = root / SIGNATURE_NAME
    if not path.exists():
        return None
    try:
        if path.stat().st_size > MAX_SIGNATURE_BYTES:
            raise ValueError(f"over {MAX_SIGNATURE_BYTES} bytes")
        d = json.loads(path.read_bytes())
        if not isinstance(d, dict) or d.get("format") != SIGNATURE_FORMAT or d.get("algorithm") != ALGORITHM:
            raise ValueError(f"expected format {SIGNATURE_FORMAT!r}, algorithm {ALGORITHM!r}")
        key_id, signer, created = (d.get(k) for k in ("key_id", "signer", "created"))
        if not (isinstance(key_id, str) and re.fullmatch(r"[0-9a-f]{64}", key_id)):
            raise ValueError("key_id is not a sha256 hex digest")
        signature = base64.b64decode(d.get("signature") or "", validate=True)
        if len(signature) != 64:
            raise ValueError("the signature is not 64 bytes")
    except (OSError, ValueError, TypeError, binascii.Error) as e:  # json.JSONDecodeError is a ValueError
        raise SignatureError(f"{path}: not a valid edgecap signature ({e})") from None
    return key_id, str(signer or "unnamed"), str(created or ""), signature
