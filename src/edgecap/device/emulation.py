"""An emulated Raspberry Pi userland: Debian bookworm's arm64 Python 3.11 under qemu-user, with edgecap's device
install (`edgecap[litert,dicom]`, aarch64 wheels from PyPI), built once and cached.

    env = prepare("pi5")                      # builds or reuses ~/.cache/edgecap/device/pi5 (EDGECAP_DEVICE_CACHE)
    proc = env.run(["-m", "edgecap.cli", "caption", "x.png", "--format", "json"])   # python3.11 under qemu
    old = prepare("pi5", runtime="tflite-runtime-2.14")   # the same userland, tflite-runtime 2.14 instead of LiteRT
    app = prepare("pi5", runtime="app")       # + Kivy and Mesa's software GL: the app, headless (APP)

Layout of `<cache>/<target>/`: `root/` (the arm64 packages unpacked with dpkg-deb -x, qemu's QEMU_LD_PREFIX,
with a Pi-style `root/proc/cpuinfo`), `site/` (pip install --target of the device install), `app/edgecap` (a
copy of the host's edgecap package, refreshed when it changes, first on PYTHONPATH so the code under test is
the host's), `ready.json` (a hash of the inputs: a second prepare() with the same inputs reuses everything).
A second runtime (RUNTIMES) adds its own site, e.g. `site-tflrt214/` with `ready-tflite-runtime-2.14.json`: the
device install with tflite-runtime 2.14 in place of ai-edge-litert (no ai_edge_litert there, so
runtime.interpreter falls back to tflite_runtime, as on a system that only has the old runtime). The app's
install (APP) adds `site-app/` and unpacks its Debian packages (Mesa) into root/ as well.

Why the cpuinfo file and the pinned CPU model (measured with qemu 7.2, issue #14): qemu-user does not emulate
/proc/cpuinfo for aarch64, so LiteRT's CPU detection reads the host's x86 text and segfaults in Interpreter();
qemu looks every path up below QEMU_LD_PREFIX first, /proc/cpuinfo included. qemu's default CPU `max`
advertises SVE/SME and XNNPACK then picks kernels qemu runs wrongly (a garbage report): QEMU_CPU names the
Pi's core instead, so XNNPACK chooses its kernels from that core's features (dot product on a Pi 5, none on a
Pi 4). No root is needed once qemu-aarch64-static and the arm64 apt lists are there; installing those needs
root and apt (Debian/Ubuntu), else EmulationError says what to install.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import edgecap

QEMU = "qemu-aarch64-static"
QEMU_PACKAGE = "qemu-user-static"
# What Raspberry Pi OS bookworm (64-bit) gives: Debian bookworm's Python 3.11; libstdc++ for the C++ wheels.
DEBIAN_PACKAGES = ("python3.11", "libstdc++6")
# In the dependency closure only through dpkg's own packaging tools (never run here): left out.
DEBIAN_SKIP = frozenset({"dpkg", "install-info", "tar"})
DEVICE_EXTRAS = "litert,dicom"
# pip does not fall back from a newer glibc tag to older ones when --platform is given: every manylinux tag a
# Pi with glibc 2.36 accepts is listed (ai-edge-litert publishes manylinux_2_27 only).
PLATFORMS = ("manylinux2014_aarch64",) + tuple(f"manylinux_2_{v}_aarch64" for v in range(17, 37))
PIP_TARGET_ARGS = ("--only-binary=:all:", *(a for p in PLATFORMS for a in ("--platform", p)),
                   "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311")  # fmt: skip
CACHE_ENV = "EDGECAP_DEVICE_CACHE"
LAYOUT_VERSION = 1  # bump when the layout or the build steps change: old caches are rebuilt


@dataclass(frozen=True)
class Runtime:
    """The TFLite interpreter of a device install: the extras installed, extra requirements, and the versions
    that replace constraints.txt's pins (tflite-runtime 2.14 is built against numpy 1: numpy < 2, and the
    newest OpenCV wheel that still accepts numpy 1)."""

    name: str
    site: str  # the folder under <cache>/<target>
    extras: str
    requirements: tuple[str, ...] = ()
    pins: tuple[str, ...] = ()  # "name==version", replacing constraints.txt's line for that name
    unpinned: tuple[str, ...] = ()  # constraints.txt lines dropped (packages this runtime does not install)
    debian: tuple[str, ...] = ()  # arm64 packages it needs beyond DEBIAN_PACKAGES, unpacked into root/ too


RUNTIMES = {
    "litert": Runtime("litert", "site", DEVICE_EXTRAS),
    # The runtime closest to what python-for-android ships (its tflite-runtime recipe is 2.x with numpy 1).
    "tflite-runtime-2.14": Runtime(
        "tflite-runtime-2.14",
        "site-tflrt214",
        "dicom",
        requirements=("tflite-runtime==2.14.0",),
        pins=("numpy==1.26.4", "opencv-python-headless==4.11.0.86"),
        unpinned=("ai-edge-litert",),
    ),
}


# The app: the device install plus Kivy 2.3.1's aarch64 wheel (SDL2 inside), as packaging/raspberry-pi/README.md's
# second pip command installs it. It renders headless through SDL's offscreen driver, which draws with EGL:
# glvnd's libEGL and libGL with Mesa's EGL vendor and its software rasteriser (llvmpipe, in libgl1-mesa-dri), as a
# Pi without a display would. Not an interpreter: --runtime does not offer it.
APP = Runtime(
    "app",
    "site-app",
    DEVICE_EXTRAS,
    requirements=("kivy==2.3.1",),
    debian=("libegl1", "libegl-mesa0", "libgl1-mesa-dri", "libgl1"),
)
INSTALLS = {**RUNTIMES, APP.name: APP}


def _cpuinfo(features: str, variant: str, part: str, revision: str, hardware: str, model: str) -> str:
    """A Raspberry Pi's /proc/cpuinfo (4 cores, the text the Pi's kernel writes) for the given core."""
    core = (
        "processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
        "CPU architecture: 8\nCPU variant\t: {variant}\nCPU part\t: {part}\nCPU revision\t: {revision}\n\n"
    )
    cores = "".join(
        core.format(n=n, features=features, variant=variant, part=part, revision=revision) for n in range(4)
    )
    return cores + f"Hardware\t: {hardware}\nRevision\t: 0\nSerial\t\t: 0000000000000000\nModel\t\t: {model}\n"


@dataclass(frozen=True)
class Target:
    """A device CPU: qemu's model of its core and the /proc/cpuinfo its kernel shows."""

    name: str
    qemu_cpu: str
    cpuinfo: str
    description: str


# The Pi 5's kernel lists these (asimddp: the dot product XNNPACK's int8 kernels use); a Pi 4 has no crypto either.
PI5_FEATURES = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
TARGETS = {
    "pi5": Target(
        "pi5",
        "cortex-a76",
        _cpuinfo(PI5_FEATURES, "0x4", "0xd0b", "1", "BCM2712", "Raspberry Pi 5 Model B Rev 1.0"),
        "Raspberry Pi 5: 4x Cortex-A76 (ARMv8.2, dot product)",
    ),
    "pi4": Target(
        "pi4",
        "cortex-a72",
        _cpuinfo("fp asimd evtstrm crc32 cpuid", "0x0", "0xd08", "3", "BCM2835", "Raspberry Pi 4 Model B Rev 1.4"),
        "Raspberry Pi 4: 4x Cortex-A72 (ARMv8.0, no dot product)",
    ),
}


class EmulationError(RuntimeError):
    """The emulated device cannot be built or run; the message says what is missing or what to install."""


def cache_root() -> Path:
    """The folder holding one emulated device per target: $EDGECAP_DEVICE_CACHE, else ~/.cache/edgecap/device."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edgecap" / "device"


@dataclass
class Device:
    """A built emulated device: run python3.11 in it (run) or any argv (run_argv)."""

    target: Target
    path: Path  # <cache>/<target>
    built: bool  # built by this prepare() (False: reused from the cache)
    runtime: Runtime = RUNTIMES["litert"]

    @property
    def root(self) -> Path:
        return self.path / "root"

    def env(self) -> dict[str, str]:
        """The environment of a guest process: qemu's CPU model and prefix, the device install on the path."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "QEMU_", "LD_"))}
        env.update(
            QEMU_CPU=self.target.qemu_cpu,
            QEMU_LD_PREFIX=str(self.root),
            PYTHONPATH=f"{self.path / 'app'}{os.pathsep}{self.path / self.runtime.site}",
            PYTHONNOUSERSITE="1",
            PYTHONDONTWRITEBYTECODE="1",
        )
        return env

    def run(
        self, args: list[str], timeout: float = 600, env_extra: dict[str, str] | None = None, **kwargs
    ) -> subprocess.CompletedProcess:
        """python3.11 `args` under qemu (text output captured), with `env_extra` added to its environment.
        Raises subprocess.TimeoutExpired."""
        argv = [_qemu(), str(self.root / "usr" / "bin" / "python3.11"), *args]
        env = {**self.env(), **(env_extra or {})}
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, **kwargs)


def prepare(target: str, log=print, runtime: str = "litert") -> Device:
    """The emulated device for `target` ("pi5", "pi4") with the interpreter `runtime` (RUNTIMES), built now or
    reused from the cache; the host edgecap package copied in when it changed. `log(str)` gets one line per
    build step. Raises EmulationError."""
    if target not in TARGETS:
        raise EmulationError(f"unknown target {target!r}: one of {', '.join(TARGETS)}")
    if runtime not in INSTALLS:
        raise EmulationError(f"unknown runtime {runtime!r}: one of {', '.join(RUNTIMES)}")
    t, rt = TARGETS[target], INSTALLS[runtime]
    path = cache_root() / t.name
    _ensure_qemu(log)
    key = _inputs_hash(t)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f"{t.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two checks at once: one builds, the other waits, then reuses it
        marker = path / "ready.json"
        built = not (marker.is_file() and json.loads(marker.read_text()).get("inputs") == key)
        if built:
            log(f"building the emulated {t.description} in {path}")
            _build(t, path, log)
            marker.write_text(json.dumps({"inputs": key, "target": t.name}, indent=1) + "\n")
        if rt.site != RUNTIMES["litert"].site:
            built = _ensure_runtime_site(path, rt, key, log) or built
        _sync_app(path / "app")
    return Device(t, path, built, rt)


def _ensure_runtime_site(path: Path, rt: Runtime, key: str, log) -> bool:
    """`<path>/<rt.site>` holding the device install with runtime `rt`, built unless its marker matches the
    userland's hash and rt; True when built now."""
    marker = path / f"ready-{rt.name}.json"
    rt_key = hashlib.sha256(f"{key}\0{rt}".encode()).hexdigest()
    if marker.is_file() and json.loads(marker.read_text()).get("inputs") == rt_key:
        return False
    if rt.debian:
        _unpack_extra_packages(path / "root", rt.debian, log)
    log(f"installing the device wheels with {rt.name} into {path / rt.site}")
    if (path / rt.site).exists():
        shutil.rmtree(path / rt.site)
    _install_site(path / rt.site, log, rt)
    marker.write_text(json.dumps({"inputs": rt_key, "runtime": rt.name}, indent=1) + "\n")
    return True


def _build(t: Target, path: Path, log=print) -> None:
    """A fresh `path`: the arm64 userland in root/ with the target's cpuinfo, the device install in site/."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    _build_root(path / "root", log)
    (path / "root" / "proc").mkdir(exist_ok=True)
    (path / "root" / "proc" / "cpuinfo").write_text(t.cpuinfo)
    _install_site(path / "site", log)


def device_pip_command(python: str = "pip") -> list[str]:
    """The pip command a Pi runs from a checkout: the device extras, wheels only, the tested versions."""
    return [python, "install", "--only-binary=:all:", "-c", "constraints.txt", f".[{DEVICE_EXTRAS}]"]


def _qemu() -> str:
    found = shutil.which(QEMU)
    if found is None:
        raise EmulationError(
            f"{QEMU} not found: install {QEMU_PACKAGE} (Debian, Ubuntu: apt-get install {QEMU_PACKAGE})"
        )
    return found


def _ensure_qemu(log) -> None:
    """qemu-aarch64-static on PATH, installed with apt when missing and possible."""
    if shutil.which(QEMU):
        return
    _need_root_apt(f"{QEMU} is missing")
    log(f"installing {QEMU_PACKAGE} (apt-get)")
    _apt(["apt-get", "install", "-y", QEMU_PACKAGE])
    _qemu()


def _need_root_apt(why: str) -> None:
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise EmulationError(
            f"{why} and this machine has no apt/dpkg: on a Debian/Ubuntu machine, as root, run "
            f"apt-get install {QEMU_PACKAGE} && dpkg --add-architecture arm64 && apt-get update"
        )
    if os.geteuid() != 0:
        raise EmulationError(
            f"{why}: run as root (or with sudo) once: apt-get install {QEMU_PACKAGE} && "
            f"dpkg --add-architecture arm64 && apt-get update"
        )


def _apt(argv: list[str], cwd: Path | None = None) -> str:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise EmulationError(f"`{' '.join(argv)}` failed (exit {proc.returncode}): {' | '.join(tail)}")
    return proc.stdout


def _ensure_arm64_lists(log) -> None:
    """dpkg knows arm64 and apt has its package lists (once per machine)."""
    foreign = _apt(["dpkg", "--print-foreign-architectures"]).split()
    policy = _apt(["apt-cache", "policy", "python3.11:arm64"]) if "arm64" in foreign else ""
    if "Candidate:" in policy and "Candidate: (none)" not in policy:
        return
    _need_root_apt("apt has no arm64 packages yet")
    log("adding the arm64 architecture to apt (dpkg --add-architecture arm64, apt-get update)")
    _apt(["dpkg", "--add-architecture", "arm64"])
    _apt(["apt-get", "update"])


def debian_closure(wanted: tuple[str, ...] = DEBIAN_PACKAGES) -> list[str]:
    """The arm64 packages `wanted` (default: python3.11 and libstdc++6) with what they need, recursively
    (Depends and PreDepends only), as "name:arm64", sorted; dpkg's own tools (DEBIAN_SKIP) left out."""
    only_depends = [
        f"--no-{kind}" for kind in ("recommends", "suggests", "conflicts", "breaks", "replaces", "enhances")
    ]
    out = _apt(["apt-cache", "depends", "--recurse", *only_depends, *(f"{p}:arm64" for p in wanted)])
    names = {line.strip() for line in out.splitlines() if line.endswith(":arm64") and not line.startswith((" ", "<"))}
    return sorted(n for n in names if n.split(":")[0] not in DEBIAN_SKIP)


def _build_root(root: Path, log) -> None:
    """Download the arm64 packages (apt-get download, no root needed) and unpack them into `root`."""
    _ensure_arm64_lists(log)
    packages = debian_closure()
    log(f"downloading {len(packages)} Debian arm64 packages ({', '.join(DEBIAN_PACKAGES)} and dependencies)")
    root.mkdir(parents=True)
    _download_unpack(packages, root)
    if not (root / "usr" / "bin" / "python3.11").is_file():
        raise EmulationError(f"the arm64 packages unpacked into {root} hold no usr/bin/python3.11")


def _unpack_extra_packages(root: Path, wanted: tuple[str, ...], log) -> None:
    """Add the arm64 packages `wanted` and their dependencies that the base userland lacks to `root`."""
    _ensure_arm64_lists(log)
    packages = sorted(set(debian_closure(wanted)) - set(debian_closure()))
    log(f"downloading {len(packages)} more Debian arm64 packages ({', '.join(wanted)} and dependencies)")
    _download_unpack(packages, root)


def _download_unpack(packages: list[str], root: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="edgecap-debs-") as tmp:
        os.chmod(tmp, 0o755)  # apt's download sandbox user (_apt) writes here when run as root
        _apt(["apt-get", "download", *packages], cwd=Path(tmp))
        for deb in sorted(Path(tmp).glob("*.deb")):
            _apt(["dpkg-deb", "-x", str(deb), str(root)])


def _project_dir() -> Path | None:
    """The checkout edgecap runs from (pyproject.toml + constraints.txt beside src/edgecap), else None."""
    top = Path(edgecap.__file__).resolve().parents[2]
    return top if (top / "pyproject.toml").is_file() and (top / "constraints.txt").is_file() else None


RUNTIME_CONSTRAINTS = "constraints-runtime.txt"  # written beside the project copy for a non-default runtime


def _pip_plan(rt: Runtime = RUNTIMES["litert"]) -> tuple[list[str], Path | None]:
    """(pip install arguments after --target DIR, the folder to run pip in). From a checkout: the Pi's command
    (device_pip_command) for aarch64, for another runtime its extras + requirements with constraints.txt's pins
    replaced (runtime_constraints); from an installed edgecap: its extras' requirements, no pins but rt's."""
    project = _project_dir()
    if project is not None:
        if rt.name == "litert":
            return device_pip_command()[2:], project
        return ["--only-binary=:all:", "-c", RUNTIME_CONSTRAINTS, f".[{rt.extras}]", *rt.requirements], project
    from importlib.metadata import requires

    extras = set(rt.extras.split(","))
    reqs = []
    for r in requires("edgecap") or []:
        spec, _, marker = r.partition(";")
        if not marker or any(f'extra == "{e}"' in marker for e in extras):
            reqs.append(spec.strip())
    return ["--only-binary=:all:", *reqs, *rt.requirements, *rt.pins], None


def runtime_constraints(constraints: str, rt: Runtime) -> str:
    """constraints.txt's text for runtime `rt`: the lines of rt.pins' and rt.unpinned's packages dropped, rt.pins
    added."""
    drop = {p.split("==")[0].lower() for p in rt.pins} | {n.lower() for n in rt.unpinned}
    keep = [line for line in constraints.splitlines() if line.split("==")[0].strip().lower() not in drop]
    return "\n".join([*keep, *rt.pins]) + "\n"


def _install_site(site: Path, log, rt: Runtime = RUNTIMES["litert"]) -> None:
    """pip install --target `site` the device install with runtime `rt`, for aarch64 / CPython 3.11 /
    glibc <= 2.36."""
    args, cwd = _pip_plan(rt)
    argv = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target", str(site)]
    argv += [a for a in PIP_TARGET_ARGS if a != "--only-binary=:all:"] + args
    log("pip install (aarch64 wheels): " + " ".join(args))
    with tempfile.TemporaryDirectory(prefix="edgecap-project-") as tmp:
        # pip builds a local project in its folder (setuptools leaves build/ there): build a copy instead
        project = _copy_project(cwd, Path(tmp)) if cwd is not None else None
        if project is not None and rt.name != "litert":
            text = runtime_constraints((project / "constraints.txt").read_text(), rt)
            (project / RUNTIME_CONSTRAINTS).write_text(text)
        proc = subprocess.run(argv, cwd=project, capture_output=True, text=True)
    if proc.returncode != 0:
        errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")] or proc.stderr.splitlines()
        raise EmulationError(f"pip could not install the device wheels: {' | '.join(errors[-3:])}")


def _copy_project(project: Path, dest: Path) -> Path:
    """What building the edgecap wheel reads (pyproject.toml, README.md, constraints.txt, src/edgecap) copied
    into `dest`; returns dest."""
    for name in ("pyproject.toml", "README.md", "constraints.txt"):
        shutil.copy2(project / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(project / "src" / "edgecap", dest / "src" / "edgecap", ignore=ignore)
    return dest


def _inputs_hash(t: Target) -> str:
    """What a built device depends on: the layout, the target, the Debian packages, the pip command and (from a
    checkout) pyproject.toml's install metadata and constraints.txt. The edgecap package itself is not part of it
    (_sync_app)."""
    h = hashlib.sha256()
    args, cwd = _pip_plan()
    parts = [str(LAYOUT_VERSION), t.name, t.qemu_cpu, t.cpuinfo, *DEBIAN_PACKAGES, *PIP_TARGET_ARGS, *args]
    for p in parts:
        h.update(p.encode() + b"\0")
    if cwd is not None:
        h.update(_install_metadata(cwd / "pyproject.toml"))
        h.update((cwd / "constraints.txt").read_bytes())
    return h.hexdigest()


def _install_metadata(pyproject: Path) -> bytes:
    """What of pyproject.toml decides which wheels the device gets: [project] (dependencies, extras) and
    [build-system]. Not tool settings (a lint or mypy setting) nor package data: the device runs the host's
    edgecap package copied into app/ (_sync_app), not the one pip installs."""
    import tomllib

    data = tomllib.loads(pyproject.read_text())
    wanted = {k: data.get(k) for k in ("project", "build-system")}
    return json.dumps(wanted, sort_keys=True).encode()


def _package_files(top: Path) -> list[Path]:
    return sorted(p for p in top.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


def _sync_app(app: Path) -> None:
    """Copy the host's edgecap package to `app/edgecap` unless the copy there is already the same (by a hash of
    its file names, sizes and modification times)."""
    src = Path(edgecap.__file__).resolve().parent
    files = _package_files(src)
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(src)}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    stamp = app / "edgecap.stamp"
    if stamp.is_file() and stamp.read_text() == h.hexdigest():
        return
    if app.exists():
        shutil.rmtree(app)
    for f in files:
        dest = app / "edgecap" / f.relative_to(src)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dest)
    stamp.write_text(h.hexdigest())
