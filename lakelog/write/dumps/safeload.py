"""Load a ``torch.save`` checkpoint without trusting it: sizes checked first, then ``weights_only``.

A checkpoint is a zip (or, from old torch, a pickle stream) whose pickle *declares* every tensor: a
storage of N elements, then views into it. Before torch reads anything, ``scan`` walks that pickle
with an unpickler whose every global is an inert stand-in (nothing the file names is imported or
called) and checks what it declares against what the file holds:

- a zip entry that expands more than ``max_expansion`` times (torch.save writes entries stored, not
  compressed, so a deflated 1 MB entry that becomes 1 GiB is a decompression bomb);
- more than ``max_bytes`` in memory once loaded (``DEFAULT_MAX_BYTES``, 16 GiB);
- a storage that declares more bytes than its record holds (a 4 TiB tensor in a 1 KB file), and a
  view that reaches past the end of its storage.

Then ``torch.load(weights_only=True)`` loads it, with the numpy scalars, dtypes and arrays that
training scripts put next to the weights (``loss = np.float64(…)``) on an allow-list
(``torch.serialization.safe_globals``). Nothing is ever unpickled with code execution.
"""

from __future__ import annotations

import io
import math
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lakelog.errors import DumpError
from lakelog.lake.dump_layout import IMPORT_MAX_BYTES, IMPORT_MAX_EXPANSION

DEFAULT_MAX_BYTES = IMPORT_MAX_BYTES
"""Most bytes a checkpoint may take once loaded (``max_bytes``; ``--max-size`` on the command line)."""

DEFAULT_MAX_EXPANSION = IMPORT_MAX_EXPANSION
"""Most a zip entry may grow when inflated (torch.save's own entries do not grow at all)."""

_ELEMENT_BYTES = {
    "Double": 8, "Float": 4, "Half": 2, "BFloat16": 2, "Long": 8, "Int": 4, "Short": 2, "Char": 1,
    "Byte": 1, "Bool": 1, "ComplexDouble": 16, "ComplexFloat": 8, "QInt8": 1, "QUInt8": 1, "QInt32": 4,
    "Untyped": 1,
}  # fmt: skip
_UNSAFE = re.compile(r"Unsupported global: [^\n]*?(?= was not|\.\s|$)", re.MULTILINE)
_REASON = re.compile(r"WeightsUnpickler error: ([^\n]*)")


def numpy_safe_globals() -> list[Any]:
    """The numpy names a checkpoint's plain values need: scalars, dtypes and arrays (no object code)."""
    core = getattr(np, "_core", None) or np.core
    dtypes = {type(np.dtype(code)) for code in np.typecodes["All"] if code != "O"}
    return [core.multiarray.scalar, core.multiarray._reconstruct, np.ndarray, np.dtype, *dtypes]


def human(n: float) -> str:
    """Bytes for people: 1.0 MiB, 4.0 TiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


class _Inert:
    """What the scanning unpickler builds for every global the file names: accepts anything, does nothing."""

    module = ""
    name = ""
    scan: _Scan | None = None

    def __new__(cls, *args: Any, **kwargs: Any) -> _Inert:
        obj = super().__new__(cls)
        if cls.scan is not None and cls.name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            cls.scan.view(args)
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass


class _Storage:
    def __init__(self, key: str, numel: int, element: int) -> None:
        self.key, self.numel, self.element = key, numel, element


class _Scan(pickle.Unpickler):
    """Unpickles the declarations only: globals become ``_Inert`` subclasses, storages are recorded."""

    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file)
        self.path = path
        self.storages: dict[str, _Storage] = {}
        self.classes: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> type:
        key = (module, name)
        if key not in self.classes:
            self.classes[key] = type(name, (_Inert,), {"module": module, "name": name, "scan": self})
        return self.classes[key]

    def persistent_load(self, pid: Any) -> _Storage:
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
            raise DumpError(f"{self.path}: refused: an unexpected persistent id {pid!r:.80} in its pickle")
        kind, key, numel = pid[1], str(pid[2]), pid[4]
        if isinstance(numel, bool) or not isinstance(numel, int) or numel < 0:
            raise DumpError(f"{self.path}: refused: storage {key} declares {numel!r:.40} elements")
        name = getattr(kind, "name", "") or ""
        element = _ELEMENT_BYTES.get(name.removesuffix("Storage"), 1)
        storage = self.storages.setdefault(key, _Storage(key, numel, element))
        return storage

    def view(self, args: tuple) -> None:
        """A tensor over a storage: its last element must lie inside the storage."""
        if len(args) < 4 or not isinstance(args[0], _Storage):
            return
        storage, offset, size, stride = args[:4]
        if not (isinstance(offset, int) and isinstance(size, tuple) and isinstance(stride, tuple)):
            raise DumpError(f"{self.path}: refused: a tensor with a malformed shape {size!r:.60}")
        if any(not isinstance(s, int) or s < 0 for s in size) or len(size) != len(stride):
            raise DumpError(f"{self.path}: refused: a tensor with an impossible shape {size!r:.60}")
        if math.prod(size) == 0:
            return
        last = offset + sum((s - 1) * abs(st) for s, st in zip(size, stride, strict=True))
        if offset < 0 or last >= storage.numel:
            raise DumpError(
                f"{self.path}: refused: a tensor of shape {list(size)} reaches element {last} of storage "
                f"{storage.key}, which holds {storage.numel}; the file is damaged or crafted"
            )


def _check_entries(archive: zipfile.ZipFile, path: Path, max_bytes: int, max_expansion: float) -> None:
    total = 0
    for info in archive.infolist():
        total += info.file_size
        if info.compress_type != zipfile.ZIP_STORED and info.file_size > max_expansion * max(
            info.compress_size, 1
        ):
            raise DumpError(
                f"{path}: refused: entry {info.filename!r} expands from {human(info.compress_size)} to "
                f"{human(info.file_size)} ({info.file_size / max(info.compress_size, 1):.0f}x), over the "
                f"limit of {max_expansion:g}x (max_expansion; torch.save does not compress, so this looks "
                "like a decompression bomb); raise --max-expansion if you trust the file"
            )
    if total > max_bytes:
        raise DumpError(
            f"{path}: refused: it expands to {human(total)}, over the limit of {human(max_bytes)} "
            "(max_bytes, --max-size); raise it if the checkpoint really is that large"
        )


def scan(
    path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, max_expansion: float = DEFAULT_MAX_EXPANSION
) -> int:
    """Check what ``path`` declares against what it holds and the limits; returns the declared bytes.

    Raises DumpError naming the file, the entry or storage, and the limit it broke.
    """
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                _check_entries(archive, path, max_bytes, max_expansion)
                pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
                if not pickles:
                    raise DumpError(f"{path}: not a torch.save checkpoint (a zip without data.pkl)")
                prefix = pickles[0][: -len("data.pkl")]
                scanner = _Scan(io.BytesIO(archive.read(pickles[0])), path)
                scanner.load()
                sizes = {n: archive.getinfo(n).file_size for n in archive.namelist()}
                declared = 0
                for storage in scanner.storages.values():
                    need = storage.numel * storage.element
                    held = sizes.get(f"{prefix}data/{storage.key}")
                    if held is None or need > held:
                        raise DumpError(
                            f"{path}: refused: storage {storage.key} declares {human(need)} "
                            f"({storage.numel} elements) but the file holds {human(held or 0)} for it; "
                            "the file is damaged or crafted"
                        )
                    declared += need
                return declared
        with path.open("rb") as f:  # the legacy format: a few pickles, then the raw storages
            size = path.stat().st_size
            scanner = _Scan(f, path)
            for _ in range(4):
                scanner.load()
                if scanner.storages:
                    break
            declared = sum(s.numel * s.element for s in scanner.storages.values())
            if declared > size or declared > max_bytes:
                raise DumpError(
                    f"{path}: refused: it declares {human(declared)} of tensors but holds {human(size)}"
                    + (f" (limit {human(max_bytes)}, --max-size)" if declared > max_bytes else "")
                )
            return declared
    except DumpError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, OverflowError, MemoryError, RecursionError, zipfile.BadZipFile, OSError) as exc:  # fmt: skip
        raise DumpError(
            f"{path}: not a readable torch.save checkpoint ({type(exc).__name__}: {exc})"
        ) from None


def load_checkpoint(
    path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, max_expansion: float = DEFAULT_MAX_EXPANSION
) -> Mapping[str, Any]:
    """``scan``, then ``torch.load(weights_only=True)`` with numpy's plain values allowed; never pickle."""
    scan(path, max_bytes=max_bytes, max_expansion=max_expansion)
    try:
        with torch.serialization.safe_globals(numpy_safe_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        unsafe = _UNSAFE.search(str(exc))
        if unsafe is None:  # garbage, or a pickle stream weights_only cannot parse: either way, not loaded
            reason = _REASON.search(str(exc))
            raise DumpError(
                f"{path}: not a readable torch.save checkpoint, or one only pickle could load "
                f"({reason.group(1) if reason else str(exc).splitlines()[0]}); lakelog never unpickles"
            ) from None
        raise DumpError(
            f"{path}: refused: loading it needs pickle to run code ({unsafe.group(0).strip()}); lakelog loads "
            "checkpoints with torch.load(weights_only=True) only (numpy scalars and arrays allowed) and never "
            "executes them. If you trust the file, re-save it holding only tensors, numbers, strings, lists "
            "and dicts"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DumpError(f"{path}: not a readable torch.save checkpoint ({str(exc).splitlines()[0]})") from exc
    if not isinstance(obj, Mapping):
        raise DumpError(f"{path}: expected a dict checkpoint (model_state_dict, …), got {type(obj).__name__}")
    return obj
