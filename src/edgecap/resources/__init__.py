"""Package data: the real IU X-Ray sample (see iu_xray_sample/ATTRIBUTION.md) and the projection table."""

import os
from importlib import resources
from pathlib import Path


def sample_dir() -> Path:
    """The bundled real IU X-Ray sample, an Open-i layout folder (reports archive + 11 PNGs)."""
    return Path(str(resources.files("edgecap.resources").joinpath("iu_xray_sample")))


def sample_image() -> Path:
    """A real frontal chest X-ray from the sample (uid 25, CC BY-NC-ND 4.0, Indiana University / Open-i)."""
    return sample_dir() / "images" / "CXR25_IM-1024-2001.png"


PACKAGE_PREFIX = "package:"  # a path inside edgecap/resources, written as package:<relative path>


def resources_dir() -> Path:
    return Path(str(resources.files("edgecap.resources")))


def portable_path(path: str | Path, relative_to: str | Path | None = None) -> str:
    """How a shipped or committed file names another path without naming the machine it was made on.

    Inside the package resources -> "package:<path below edgecap/resources>"; otherwise, when `relative_to`
    is given, the path relative to that folder (POSIX separators); else the path as given. Read back with
    resolve_portable_path.
    """
    p = Path(path).resolve()
    try:
        return PACKAGE_PREFIX + p.relative_to(resources_dir().resolve()).as_posix()
    except ValueError:
        pass
    if relative_to is not None:
        return Path(os.path.relpath(p, Path(relative_to).resolve())).as_posix()
    return str(path)


def resolve_portable_path(value: str, relative_to: str | Path) -> Path:
    """The inverse of portable_path: "package:..." -> inside the installed package; a relative path -> below
    `relative_to`; an absolute path (written by an older edgecap) -> itself."""
    if value.startswith(PACKAGE_PREFIX):
        return resources_dir().joinpath(*value[len(PACKAGE_PREFIX) :].split("/"))
    p = Path(value)
    return p if p.is_absolute() else Path(relative_to) / p


def portable_text(text: str) -> str:
    """`text` with this machine's folders named portably: the package resources as "package:", the working
    folder as a relative path, the home folder as "~/". For results that get committed or shared (bench JSON,
    logged commands), so they never carry the machine's absolute paths."""
    prefixes = [
        (str(resources_dir().resolve()) + os.sep, PACKAGE_PREFIX),
        (str(Path.cwd().resolve()) + os.sep, ""),
        (str(Path.home().resolve()) + os.sep, "~" + os.sep),
    ]
    for prefix, new in sorted(prefixes, key=lambda p: -len(p[0])):
        if len(prefix) > 1:  # never the root folder
            text = text.replace(prefix, new)
    return text


def portable_paths(obj):
    """portable_text applied to every string of a JSON-like object (dicts, lists, strings); a new object."""
    if isinstance(obj, str):
        return portable_text(obj)
    if isinstance(obj, dict):
        return {k: portable_paths(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [portable_paths(v) for v in obj]
    return obj
