"""buildozer.spec packs the device-safe app and nothing else. buildozer cannot run here (it downloads the
Android SDK / NDK), so this test reads the spec with configparser and replays buildozer's file selection
(buildozer 1.6.0, Buildozer._copy_application_sources: exclude_dirs, exclude_patterns, include_patterns
that win over both patterns, then include_exts) on the real source tree.
"""

from __future__ import annotations

import ast
import configparser
import json
import os
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "buildozer.spec"
TF_ONLY = ("training", "convert", "benchmarks", "data", "evaluation")  # need TensorFlow or dev-only data tools
# python-for-android recipe / pip name -> import name
IMPORT_NAMES = {
    "kivy": "kivy",
    "numpy": "numpy",
    "opencv": "cv2",
    "tflite-runtime": "tflite_runtime",
    "pydicom": "pydicom",
    "plyer": "plyer",
    "android": "android",
    "filetype": "filetype",
    "pydantic-core": "pydantic_core",
    "pydantic": "pydantic",
    "annotated-types": "annotated_types",
    "typing-extensions": "typing_extensions",
    "typing-inspection": "typing_inspection",
    "cryptography": "cryptography",
}
# imports an app module may make inside a function without a recipe: the interpreter fallback chain
# (runtime/interpreter.py tries ai-edge-litert, then tflite-runtime, then TensorFlow, each under ImportError)
OPTIONAL_LAZY = {"edgecap/runtime/interpreter.py": {"ai_edge_litert", "tensorflow"}}
DESKTOP_ONLY = {"edgecap.labeler.validate"}  # imported lazily by labeler.validate(); never by the app
P4A_TFLITE_RUNTIME = (2, 8, 0)


def read_spec() -> configparser.ConfigParser:
    c = configparser.ConfigParser(allow_no_value=True)  # what buildozer's SpecParser is built on
    c.optionxform = str  # keys are case-sensitive in buildozer
    c.read(SPEC)
    return c


def getlist(c: configparser.ConfigParser, key: str) -> list[str]:
    """buildozer SpecParser.getlist for [app] keys: comma-separated, stripped."""
    raw = c.get("app", key, fallback="")
    return [x.strip() for x in raw.split(",") if x.strip()]


def packed_files(c: configparser.ConfigParser) -> list[str]:
    """Paths (relative to source.dir, '/'-separated) that buildozer 1.6.0 would copy into the APK."""
    source = (ROOT / c.get("app", "source.dir", fallback=".")).resolve()
    inc_exts = [e.lower() for e in getlist(c, "source.include_exts")]
    exc_exts = [e.lower() for e in getlist(c, "source.exclude_exts")]
    exc_dirs = [d.lower() for d in getlist(c, "source.exclude_dirs")]
    exc_pat = [p.lower() for p in getlist(c, "source.exclude_patterns")]
    inc_pat = [p.lower() for p in getlist(c, "source.include_patterns")]
    out = []
    for root, _dirs, files in os.walk(source, followlinks=True):
        rel = root[len(str(source)) :].lstrip(os.sep)
        if rel and any(x.startswith(".") for x in rel.split(os.sep)):
            continue
        froot = rel.replace(os.sep, "/").lower()
        if froot:
            froot += "/"
            excluded = any(froot.startswith(d if d.endswith("/") else d + "/") for d in exc_dirs)
            if not excluded:
                excluded = any(fnmatch(froot, p) for p in exc_pat)
            if any(fnmatch(froot, p) for p in inc_pat):
                excluded = False
            if excluded:
                continue
        for fn in files:
            if fn.startswith("."):
                continue
            dfn = froot + fn if froot else fn.lower()
            excluded = any(fnmatch(dfn, p) for p in exc_pat)
            if any(fnmatch(dfn, p) for p in inc_pat):
                excluded = False
            if excluded:
                continue
            ext = os.path.splitext(fn)[1][1:].lower()
            if ext and ((inc_exts and ext not in inc_exts) or (exc_exts and ext in exc_exts)):
                continue
            out.append((Path(rel) / fn).as_posix())
    return sorted(out)


@pytest.fixture(scope="module")
def spec():
    return read_spec()


@pytest.fixture(scope="module")
def packed(spec):
    return packed_files(spec)


def test_android_target(spec):
    assert getlist(spec, "android.archs") == ["arm64-v8a"]
    assert spec.get("app", "source.dir") == "src"
    assert {"py", "kv", "json", "tflite"} <= set(getlist(spec, "source.include_exts"))
    perms = " ".join(getlist(spec, "android.permissions"))
    assert "INTERNET" not in perms  # offline by construction
    orient = getlist(spec, "orientation")
    assert "portrait" in orient and "landscape" in orient


def test_requirements_are_recipes_without_tensorflow(spec):
    reqs = [r.split("==")[0].lower() for r in getlist(spec, "requirements")]
    assert {"python3", "kivy", "numpy", "opencv", "tflite-runtime", "pydicom", "plyer"} <= set(reqs)
    for banned in ("tensorflow", "tensorflow-cpu", "keras", "tf-keras", "ai-edge-litert", "torch"):
        assert banned not in reqs
    assert set(reqs) - {"python3"} <= set(IMPORT_NAMES)  # every requirement is understood by this test


def test_packs_only_device_safe_files(packed):
    assert "main.py" in packed and "edgecap/edge_app/app.py" in packed
    kv = {f"edgecap/edge_app/kv/{p.name}" for p in (ROOT / "src" / "edgecap" / "edge_app" / "kv").glob("*.kv")}
    assert "edgecap/edge_app/kv/window.kv" in kv and kv <= set(packed)  # every layout file of the app
    assert "edgecap/labeler/rules" in " ".join(packed)
    for path in packed:
        parts = path.split("/")
        assert parts[0] in ("main.py", "edgecap"), path
        assert not (len(parts) > 2 and parts[1] in TF_ONLY), f"{path}: TensorFlow-side code in the APK"
        assert "tests" not in parts and "tensorflow" not in path.lower() and "__pycache__" not in parts, path
        assert not path.endswith(("cli.py", ".csv", ".tgz", ".png")), f"{path}: not needed on the device"
    # the tree really has what is being left out (so the exclusions are exercised, not vacuous)
    for name in ("training", "convert"):
        assert (ROOT / "src" / "edgecap" / name).is_dir()


def _module_file(src: Path, name: str) -> Path | None:
    base = src.joinpath(*name.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _imports(path: Path, module: str):
    """-> [(imported module, at module level?)] from the AST, relative imports resolved."""
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        level0 = id(node) in top
        if isinstance(node, ast.Import):
            found += [(a.name, level0) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod == "__future__":
                continue
            found.append((mod, level0))
            found += [(f"{mod}.{a.name}", level0) for a in node.names]  # submodules; filtered by existence below
    return found


def test_every_import_of_the_app_is_packed(spec, packed):
    """The import closure of the packed code stays inside the APK: edgecap modules are packed, third-party
    modules are stdlib or requirements (TensorFlow only as runtime/interpreter.py's guarded last fallback)."""
    src = ROOT / "src"
    packed_set = set(packed)
    recipes = {
        IMPORT_NAMES[r.split("==")[0].lower()]
        for r in getlist(spec, "requirements")
        if r.split("==")[0].lower() in IMPORT_NAMES
    }
    stdlib = set(sys.stdlib_module_names)
    problems = []
    for rel in (p for p in packed if p.endswith(".py")):
        path = src / rel
        module = rel[:-3].replace("/", ".").removesuffix(".__init__")
        for name, at_top in _imports(path, module):
            root = name.split(".")[0]
            if root == "edgecap":
                f = _module_file(src, name)
                if f is None:  # `from pkg import name` where name is not a module
                    continue
                if f.relative_to(src).as_posix() not in packed_set and name not in DESKTOP_ONLY:
                    problems.append(f"{rel} imports {name}, which is not packed")
            elif root in stdlib or root in recipes or not root:
                continue
            elif not at_top and root in OPTIONAL_LAZY.get(rel, set()):
                continue
            else:
                problems.append(
                    f"{rel} imports {name} ({'module level' if at_top else 'in a function'}): "
                    f"no python-for-android requirement provides it"
                )
    assert not problems, "\n".join(sorted(set(problems)))


def _min_runtime_version(tflite: Path) -> str | None:
    """The 'min_runtime_version' metadata the TFLite converter writes from its op-version table."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(bytearray(tflite.read_bytes()), 0)
    for i in range(model.MetadataLength()):
        md = model.Metadata(i)
        if md.Name() == b"min_runtime_version":
            buf = model.Buffers(md.Buffer())
            return bytes(buf.DataAsNumpy()).rstrip(b"\0").decode() if buf.DataLength() else None
    return None


def test_one_bundle_loadable_by_tflite_runtime_28(packed):
    """Exactly one bundle is packed, and it is a mode tflite-runtime 2.8 (python-for-android's recipe) loads."""
    bundles = {p.split("/")[3] for p in packed if p.startswith("edgecap/resources/bundles/") and p.count("/") >= 4}
    assert bundles <= {"default"}, f"only the default bundle may be packed, found {sorted(bundles)}"
    folder = ROOT / "src" / "edgecap" / "resources" / "bundles" / "default"
    if not (folder / "manifest.json").is_file():
        pytest.skip(f"no bundle installed at {folder}: the APK would have no model")
    names = {p.split("/")[-1] for p in packed if p.startswith("edgecap/resources/bundles/default/")}
    manifest = json.loads((folder / "manifest.json").read_text())
    needed = {"manifest.json", manifest["vocab"]["path"]} | {f["path"] for f in manifest["files"].values()}
    assert needed <= names, f"bundle files not packed: {sorted(needed - names)}"
    from edgecap.convert.modes import by_name  # the one table of modes (stdlib only)

    assert by_name(manifest["mode"]).tflite_runtime_214, f"mode {manifest['mode']} does not load in old runtimes"
    assert manifest["runtime"]["tflite_runtime_2_14"] is True
    pytest.importorskip("ai_edge_litert")
    from edgecap.convert.flatbuffer import op_problems

    for part, f in manifest["files"].items():
        assert f["min_runtime"].get("tflite-runtime"), part
        assert not op_problems(f["op_versions"]), part
        version = _min_runtime_version(folder / f["path"])
        assert version is not None, f"{part}: no min_runtime_version in the file"
        assert tuple(int(x) for x in version.split(".")) <= P4A_TFLITE_RUNTIME, f"{part} needs TFLite {version}"


def test_replay_matches_buildozer_rules(tmp_path):
    """The replay itself: a directory excluded by exclude_dirs stays out even if a pattern names its files,
    an include pattern rescues a file from exclude_patterns, include_exts filters last."""
    c = configparser.ConfigParser()
    c.optionxform = str
    c.read_dict(
        {
            "app": {
                "source.dir": str(tmp_path),
                "source.include_exts": "py,kv",
                "source.exclude_dirs": "skip",
                "source.exclude_patterns": "*",
                "source.include_patterns": "keep/, keep/*.py, keep/*.txt, skip/*.py, main.py",
            }
        }
    )
    for rel in ("main.py", "other.py", "keep/a.py", "keep/b.txt", "keep/c.kv", "skip/d.py", "drop/e.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    assert packed_files(c) == ["keep/a.py", "main.py"]  # source.dir is absolute: ROOT / it is it
