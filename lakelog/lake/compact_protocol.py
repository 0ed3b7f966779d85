"""The on-disk protocol of compaction: staging, the manifest (its commit point), clean-up and recovery.

The protocol keeps every row visible exactly once to lakelog's readers at any moment, and after a
``kill -9`` of ``compact`` at any point:

1. the merged data is written under ``<run>/_compact/<id>/<table>/epoch=<e>/rank=<r>/`` (outside the
   table folders, which is all readers list), as a whole file (atomic rename; one PUT on S3);
2. the **commit**: ``<run>/_compact/<id>.json`` names the parts it replaces and the merged files;
3. the merged files move into the partition, the parts they replace are deleted, then the manifest
   and the staging folder. On local disk on Linux the staged folder holds the whole partition as it
   is to be (the merged file and hard links of every part it does not replace), and one
   ``renameat2(RENAME_EXCHANGE)`` swaps it with the partition: every engine sees the old folder or
   the new one, never a mix. Elsewhere (S3: copy then delete; other systems: a rename) the files
   move one by one and only lakelog's readers are exact during the move.

A reader that finds a manifest (``visible_files``) leaves its parts out and reads the merged file
from wherever it is now; without a manifest, staged data is ignored. The next ``compact`` finishes
every committed manifest (step 3) and deletes staged data nobody committed. Engines that know
nothing of manifests (plain DuckDB, polars or pyarrow over the folders) see every row exactly once
at any moment and after any kill on local Linux disks; elsewhere, whenever no compaction is half
done (after ``compact`` returns, or after the next one recovered).

Readers need only ``visible_files``; ``compact`` uses the rest. ``claim`` keeps two compactions of
one run apart.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import sys
from collections.abc import Iterator
from typing import Any

import pyarrow.fs as pafs

from lakelog.errors import LakelogError
from lakelog.lake.layout import TEMP_SUFFIX, Lake, join_path
from lakelog.lake.lifecycle import describe_holder, holder_alive, hostname, process_start, read_json

STAGING_DIR = "_compact"
"""``<run>/_compact/``: staged merged files, manifests and the lock; readers never list it as data."""


def _manifests(lake: Lake, run_dir: str) -> list[tuple[str, dict[str, Any]]]:
    folder = join_path(lake.local, run_dir, STAGING_DIR)
    out = []
    try:
        infos = lake.fs.get_file_info(pafs.FileSelector(folder))
    except OSError:
        return out
    for info in sorted(infos, key=lambda i: i.path):
        if info.type != pafs.FileType.File or not info.base_name.endswith(".json"):
            continue
        manifest = _read_manifest(lake, info.path)
        if manifest is not None:
            out.append((info.path, manifest))
    return out


def pending(lake: Lake, run_dir: str) -> list[tuple[str, dict[str, Any]]]:
    """The committed compactions of a run whose clean-up has not finished: (manifest path, manifest)."""
    return _manifests(lake, run_dir)


def _read_manifest(lake: Lake, path: str) -> dict[str, Any] | None:
    try:
        data = json.loads(lake.read_text(path))
    except (OSError, ValueError):
        return None
    keys = {"id": str, "table": str, "partition": str, "merged": list, "replaces": list}
    if not isinstance(data, dict) or any(not isinstance(data.get(k), t) for k, t in keys.items()):
        return None
    return data


def visible_files(lake: Lake, run_dir: str, files: dict[str, list[str]]) -> dict[str, list[str]]:
    """Apply the run's committed manifests to a listing: replaced parts out, merged files in (once)."""
    out = {table: list(paths) for table, paths in files.items()}
    for _, manifest in _manifests(lake, run_dir):
        table, partition = manifest["table"], manifest["partition"]
        replaced = {join_path(lake.local, run_dir, partition, name) for name in manifest["replaces"]}
        paths = [p for p in out.get(table, []) if p not in replaced]
        for name in manifest["merged"]:
            final = join_path(lake.local, run_dir, partition, name)
            staged = join_path(lake.local, run_dir, STAGING_DIR, manifest["id"], partition, name)
            if final in paths:
                continue
            if lake.exists(final):
                paths.append(final)
            elif lake.exists(staged):
                paths.append(staged)
        out[table] = paths
    return out


def _delete(lake: Lake, path: str) -> None:
    try:
        lake.fs.delete_file(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if lake.exists(path):
            raise OSError(f"cannot delete {path}: {exc}") from exc


def _delete_dir(lake: Lake, path: str) -> None:
    try:
        lake.fs.delete_dir(path)
    except FileNotFoundError:
        pass
    except OSError:
        if lake.exists(path):
            raise


def _exchange(a: str, b: str) -> bool:
    """Swap two folders in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), a)


def _load_renameat2() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_RENAMEAT2 = _load_renameat2()
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def carry(partition_dir: str, staged_dir: str, replaces: set[str]) -> None:
    """Hard-link every file of the partition the merge does not replace into the staged folder.

    The staged folder then holds the partition as it is to be, so one exchange of the two folders
    replaces the parts by the merged file for every reader at once (plain engines included).
    """
    try:
        entries = list(os.scandir(partition_dir))
    except FileNotFoundError:
        return
    for entry in entries:
        name = entry.name
        if name in replaces or name.startswith(".") or not entry.is_file(follow_symlinks=False):
            continue
        target = os.path.join(staged_dir, name)
        if os.path.lexists(target):
            continue
        try:
            os.link(entry.path, target)
        except FileNotFoundError:
            continue
        except OSError:
            shutil.copy2(entry.path, target)


def _finish_exchange(run_dir: str, manifest_path: str, manifest: dict[str, Any]) -> bool:
    """The local commit: exchange the staged folder with the partition, then put back late arrivals.

    Returns False when the file system cannot exchange folders (the caller publishes instead).
    """
    partition = os.path.join(run_dir, manifest["partition"])
    staged = os.path.join(run_dir, STAGING_DIR, manifest["id"], manifest["partition"])
    replaces = set(manifest["replaces"])
    if not all(os.path.exists(os.path.join(partition, m)) for m in manifest["merged"]):
        if not all(os.path.exists(os.path.join(staged, m)) for m in manifest["merged"]):
            return False  # nothing to exchange: the publish steps below find what there is
        carry(partition, staged, replaces)  # parts written since the staging was made
        if not _exchange(staged, partition):
            return False
    # the staged path now holds the partition's old folder: a part written into it late goes back
    for entry in list(os.scandir(staged)) if os.path.isdir(staged) else []:
        back = os.path.join(partition, entry.name)
        if entry.name not in replaces and not entry.name.startswith(".") and not os.path.lexists(back):
            os.replace(entry.path, back)
    for name in replaces:  # none after an exchange; left by a publish a kill interrupted
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(partition, name))
    shutil.rmtree(os.path.join(run_dir, STAGING_DIR, manifest["id"]), ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(manifest_path)
    return True


def finish(lake: Lake, run_dir: str, manifest_path: str, manifest: dict[str, Any]) -> None:
    """Step 3 of the protocol, idempotent: publish the merged files, delete the parts, then the manifest.

    On local disk where folders can be exchanged atomically (Linux), the staged folder holds the whole
    partition as it is to be (``carry``) and one exchange publishes it: plain engines that know nothing
    of manifests never see a part and its merged copy together, nor neither.
    """
    if (
        lake.local
        and manifest.get("mode") == "exchange"
        and _finish_exchange(run_dir, manifest_path, manifest)
    ):
        return
    partition = manifest["partition"]
    for name in manifest["merged"]:
        final = join_path(lake.local, run_dir, partition, name)
        staged = join_path(lake.local, run_dir, STAGING_DIR, manifest["id"], partition, name)
        if lake.exists(final):
            continue
        if lake.local:
            os.replace(staged, final)
        else:
            lake.fs.copy_file(staged, final)
    for name in manifest["replaces"]:
        _delete(lake, join_path(lake.local, run_dir, partition, name))
    _delete(lake, manifest_path)
    _delete_dir(lake, join_path(lake.local, run_dir, STAGING_DIR, manifest["id"]))


def recover(lake: Lake, run_dir: str) -> int:
    """Finish every committed compaction of a run and delete staged data nobody committed; the count finished."""
    folder = join_path(lake.local, run_dir, STAGING_DIR)
    if not lake.exists(folder):
        return 0
    manifests = _manifests(lake, run_dir)
    for path, manifest in manifests:
        finish(lake, run_dir, path, manifest)
    committed = {m["id"] for _, m in manifests}
    for info in lake.fs.get_file_info(pafs.FileSelector(folder)):
        if info.type == pafs.FileType.Directory and info.base_name not in committed:
            _delete_dir(lake, info.path)
        elif info.type == pafs.FileType.File and info.base_name.endswith(TEMP_SUFFIX):
            _delete(lake, info.path)
    return len(manifests)


@contextlib.contextmanager
def claim(lake: Lake, run_dir: str) -> Iterator[None]:
    """Hold ``<run>/_compact/lock`` while compacting a run, so two compactions never merge the same parts.

    A lock left by a killed ``compact`` (its process gone) is taken over. Object stores have no
    exclusive create: there, run one ``compact`` per run at a time. The staging folder is removed
    when empty, so the run folder's mtime tells readers that its files changed.
    """
    folder = join_path(lake.local, run_dir, STAGING_DIR)
    lock = join_path(lake.local, folder, "lock")
    if lake.local:
        os.makedirs(folder, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = read_json(lock)
                if holder is not None and holder_alive(holder):
                    raise LakelogError(
                        f"{run_dir} is being compacted by {describe_holder(holder)}; wait for it to finish"
                    ) from None
                os.unlink(lock)  # a killed compact's lock
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(
                    {"pid": os.getpid(), "host": hostname(), "pid_start": process_start(os.getpid())}, f
                )
            break
    try:
        yield
    finally:
        if lake.local:
            with contextlib.suppress(OSError):
                os.unlink(lock)
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        else:
            with contextlib.suppress(OSError):
                if not lake.fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True)):
                    lake.fs.delete_dir(folder)
