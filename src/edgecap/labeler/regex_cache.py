"""The labeler's regexes, compiled ahead of time: once per machine and Python, not once per process.

Building the default labeler compiles ~55 large trie regexes (labeler.phrases), all of it in `re`'s pure-Python
parser and code generator: about 100 ms, a fifth of a cold `edgecap caption`. What that work produces is a list of
SRE opcodes that `re` hands to `_sre.compile`, the C constructor of a Pattern. This module keeps those opcode
lists in a cache file and builds a Pattern straight from them on the next start:

    compile(pattern, flags)   re.compile's Pattern; from the cache when it holds this (pattern, flags)
    source(key, build)        build() -> a pattern's text, kept under `key` (the trie regex of a phrase list
                              costs as much Python as compiling it)
    save()                    write what was compiled this process (a no-op when nothing is new)

Sound by construction: the cache file is keyed by the exact Python build and SRE engine (sys.version,
_sre.MAGIC, _sre.CODESIZE); an entry is stored only after the Pattern built from it compared equal to
re.compile's own (Pattern equality compares the pattern, the flags and the opcodes); anything unexpected (an
unreadable or foreign file, another Python whose internals differ, a read-only cache folder) falls back to
re.compile silently. The cache is a JSON file (data, never code) in $EDGECAP_CACHE or ~/.cache/edgecap, folder regex/.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import threading
from pathlib import Path
from typing import Any, Callable

from edgecap.runtime.files import write_atomically

try:  # CPython's regex engine and compiler: present on every CPython, private, hence the guard
    import _sre
    from re import _compiler, _parser  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - another Python implementation
    _sre = None

# (pattern, flags) -> (flags after parsing, opcodes, groups, groupindex, indexgroup): _sre.compile's arguments
Entry = tuple[int, list[int], int, dict[str, int], tuple[Any, ...]]

_lock = threading.Lock()
_entries: dict[tuple[str, int], Entry] | None = None
_sources: dict[str, str] = {}
_new = False
_enabled = _sre is not None


def cache_file() -> Path:
    key = f"{sys.version}|{getattr(_sre, 'MAGIC', '')}|{getattr(_sre, 'CODESIZE', '')}"
    root = Path(os.environ.get("EDGECAP_CACHE") or Path.home() / ".cache" / "edgecap")
    return root / "regex" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def compile(pattern: str, flags: int = 0) -> re.Pattern:
    """re.compile(pattern, flags), from the cached opcodes when present (module docstring)."""
    global _new, _enabled
    if not _enabled:
        return re.compile(pattern, flags)
    entries = _load()
    hit = entries.get((pattern, flags))
    if hit is not None:
        return _sre.compile(pattern, hit[0], hit[1], hit[2], hit[3], hit[4])
    want = re.compile(pattern, flags)
    try:
        entry = _parts(pattern, flags)
        built = _sre.compile(pattern, *entry)
    except Exception:  # noqa: BLE001 - internals of another Python version: no cache, re.compile as usual
        _enabled = False
        return want
    if built != want:  # the rebuild must be re.compile's Pattern, opcode for opcode, or the cache stays off
        _enabled = False
        return want
    with _lock:
        entries[(pattern, flags)] = entry
        _new = True
    return built


def source(key: str, build: Callable[[], str]) -> str:
    """build(), or the text it returned for `key` in an earlier process (kept with the compiled entries)."""
    global _new
    if not _enabled:
        return build()
    _load()
    text = _sources.get(key)
    if text is None:
        text = build()
        with _lock:
            _sources[key] = text
            _new = True
    return text


def save() -> None:
    """Write the cache when this process compiled something new; silently nothing where it cannot write."""
    global _new
    if not (_enabled and _new and _entries is not None):
        return
    with _lock:
        rows = [[pattern, flags, *entry] for (pattern, flags), entry in _entries.items()]
        data = json.dumps({"python": sys.version, "entries": rows, "sources": _sources}, separators=(",", ":"))
        _new = False
    try:
        path = cache_file()  # RuntimeError where no home directory can be found (some device sandboxes)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, data)  # a concurrent reader sees the old file or the new one
    except (OSError, RuntimeError):
        return


def _parts(pattern: str, flags: int) -> Entry:
    """What re._compiler.compile computes before it calls _sre.compile (CPython 3.11-3.13)."""
    p = _parser.parse(pattern, flags)
    code = _compiler._code(p, flags)
    groupindex = dict(p.state.groupdict)
    indexgroup: list[Any] = [None] * p.state.groups
    for k, i in groupindex.items():
        indexgroup[i] = k
    return flags | p.state.flags, code, p.state.groups - 1, groupindex, tuple(indexgroup)


def _load() -> dict[tuple[str, int], Entry]:
    global _entries
    if _entries is None:
        with _lock:
            if _entries is None:
                try:
                    saved = json.loads(cache_file().read_bytes())
                    entries = {(p, f): (g, code, n, gi, tuple(ig)) for p, f, g, code, n, gi, ig in saved["entries"]}
                    _sources.update({str(k): str(v) for k, v in saved["sources"].items()})
                    _entries = entries
                except Exception:  # noqa: BLE001 - no file, a truncated or foreign one: start empty
                    _sources.clear()
                    _entries = {}
    return _entries
