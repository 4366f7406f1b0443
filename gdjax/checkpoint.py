r"""Checkpoints of a run: save it, restore it, resume it bit for bit.

The contract, before any code:

* **What is saved.** The whole loop state, a :class:`~gdjax.loop.FitResult`
  (params, optimizer state, history so far, epoch and step counters, status),
  the run's PRNG key, and fingerprints: every leaf's key path, dtype and shape,
  the tree structure, a hash of the data (shapes, dtypes and a sha256 of the
  bytes), a config fingerprint (whatever the caller passes in ``config``;
  :func:`fit_resumable` adds the loss and transform, with the numbers they close
  over, the injected hyperparameters and the stopping criteria), and
  :func:`fingerprint` (jax, jaxlib, optax, numpy and gdjax versions, backend,
  x64). Typed PRNG keys, in the state or the run's key, are stored as their
  ``jax.random.key_data`` and rebuilt with ``jax.random.wrap_key_data``.
* **Format.** One ``ckpt-<epoch>.npz`` file per save: an uncompressed zip of
  ``.npy`` arrays (``np.load`` reads it) plus ``manifest.json``, which holds the
  fingerprints and a sha256 of every array; the zip comment ends with a sha256
  of the rest of the file. NumPy and the standard library are all it needs:
  the state of a gdjax run is a small pytree of host-copyable arrays saved
  from one process, so orbax's machinery (async writes, sharded arrays across
  hosts, tensorstore) would add a dependency and buy nothing here. Files are
  byte-for-byte deterministic: the same state saves to the same bytes.
* **Atomic.** A save writes a temporary file in the same folder, flushes and
  fsyncs it, ``os.replace``\ s it onto its name and fsyncs the folder; only
  then are checkpoints beyond the last ``keep`` removed. A process killed at any
  instant leaves the previous checkpoints whole (and perhaps a stale temporary
  file, which restore ignores and the next save removes). One writer per
  folder.
* **Checked on restore.** A truncated, empty, bit-flipped or partly missing file
  raises :class:`~gdjax.errors.CheckpointError` naming the file and the cause.
  :func:`restore_latest` skips such files, newest first, with a
  :class:`CheckpointWarning` saying which and why. A checkpoint of another tree,
  dtype, shape, data, key or config is refused with the differences listed,
  unless ``allow_mismatch=True``.
* **Resumable bit for bit.** The order of the data in epoch ``e`` is
  ``fold_in(key, e)``, and a chunked run is bitwise the single program, so a run
  restored at an epoch boundary and continued with ``fit(..., resume=state)``
  equals the uninterrupted run bit for bit (same versions and backend, on CPU).
  :func:`saver` is the callback that saves after every chunk;
  :func:`fit_resumable` does restore-or-start, then runs with it.

Examples:
  >>> import tempfile, jax, jax.numpy as jnp, gdjax as gd
  >>> from gdjax import checkpoint
  >>> x = jnp.array([[1.0], [2.0], [3.0]]); y = 2.0 * x[:, 0]
  >>> loss = gd.make_loss(gd.models.linear, gd.losses.squared_error)
  >>> params = {"w": jnp.zeros((1, 1)), "b": jnp.zeros(1)}
  >>> folder = tempfile.mkdtemp()
  >>> r = checkpoint.fit_resumable(loss, params, (x, y), gd.sgd(0.1),
  ...                              directory=folder, every=5,
  ...                              key=jax.random.key(0), epochs=20)
  >>> [p.name for p in checkpoint.checkpoints(folder)]
  ['ckpt-000000010.npz', 'ckpt-000000015.npz', 'ckpt-000000020.npz']
  >>> again = checkpoint.restore(folder, r)
  >>> bool((again.params["w"] == r.params["w"]).all()), int(again.epoch)
  (True, 20)
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import inspect
import io
import json
import math
import os
import re
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gdjax import _validate as V
from gdjax.errors import CheckpointError, GdjaxWarning, NonFiniteError

__all__ = [
    "CheckpointWarning",
    "CorruptCheckpointError",
    "checkpoints",
    "fingerprint",
    "fit_resumable",
    "read_manifest",
    "restore",
    "restore_latest",
    "save",
    "saver",
]

FORMAT = "gdjax-checkpoint"
FORMAT_VERSION = 1
_NAME = re.compile(r"^ckpt-(\d{9,})\.npz$")
_TEMP = re.compile(r"^\.ckpt-\d+\.npz\.tmp-(\d+)$")
_MANIFEST = "manifest.json"
_TAG = b"gdjax-sha256:"
_HEX = 64
_EPOCH_ZIP = (1980, 1, 1, 0, 0, 0)  # fixed zip timestamps: same state, same bytes


class CheckpointWarning(GdjaxWarning):
    """A checkpoint was skipped (corrupt) or loaded despite differences."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint file is unreadable: empty, truncated, bit-flipped, partial."""


def _pause(stage: str) -> None:
    """Called mid-write (``"write"``) and before the rename (``"rename"``).

    Does nothing; tests replace it with a sleep so that a kill lands mid-save.
    """
    del stage


# ----------------------------------------------------------------------- fingerprint


@functools.cache
def _versions() -> dict[str, str]:
    out = {}
    for name in ("jax", "jaxlib", "optax", "numpy", "gdjax"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover
            out[name] = "unknown"
    from gdjax import __version__

    out["gdjax"] = __version__
    return out


def fingerprint() -> dict[str, Any]:
    """Where a result was computed: library versions, backend and x64 mode.

    Bitwise reproducibility (same key, same bits) holds between runs with the
    same fingerprint; a checkpoint records it so a resumed run can be compared.

    Returns:
      ``{"jax", "jaxlib", "optax", "numpy", "gdjax": version strings,
      "backend": jax.default_backend(), "x64": bool}``.

    Examples:
      >>> from gdjax.checkpoint import fingerprint
      >>> sorted(fingerprint())
      ['backend', 'gdjax', 'jax', 'jaxlib', 'numpy', 'optax', 'x64']
    """
    return {
        **_versions(),
        "backend": jax.default_backend(),
        "x64": bool(jax.config.jax_enable_x64),
    }


def _is_key(leaf: Any) -> bool:
    dtype = getattr(leaf, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)


def _host(leaf: Any, where: str) -> tuple[np.ndarray, str, str | None]:
    """(host array to store, dtype name, key impl or None) of one leaf."""
    if _is_key(leaf):
        impl = str(jax.random.key_impl(leaf))
        return np.asarray(jax.random.key_data(leaf)), str(leaf.dtype), impl
    if not hasattr(leaf, "dtype") and not isinstance(leaf, (int, float, bool)):
        raise TypeError(f"{where} must be an array, got {V.describe(leaf)}.")
    arr = np.asarray(leaf)
    if arr.dtype == object or arr.dtype.kind in "USM":
        raise TypeError(f"{where} must be a numeric array, got dtype {arr.dtype}.")
    return arr, str(arr.dtype), None


def _data_fingerprint(data: Any) -> dict[str, Any]:
    """Shapes, dtypes and a sha256 of each leaf's bytes (and of them all)."""
    leaves = []
    whole = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(data):
        where = f"data{jax.tree_util.keystr(path)}"
        arr, dtype, _ = _host(leaf, where)
        digest = hashlib.sha256(arr.tobytes()).hexdigest()
        leaves.append(
            {"path": where, "shape": list(arr.shape), "dtype": dtype, "sha256": digest}
        )
        whole.update(f"{where}|{arr.shape}|{dtype}|{digest};".encode())
    return {"leaves": leaves, "sha256": whole.hexdigest()}


def _name_of(fn: Any) -> str:
    module = getattr(fn, "__module__", None) or type(fn).__module__
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{name}"


_SKIP = object()


def _describe(value: Any, depth: int, seen: set[int]) -> Any:
    """The numbers and names that define a callable, as JSON-able data.

    A function's name and the Python numbers, strings and 0-d arrays it closes
    over, recursively through the functions, tuples and dicts it closes over
    (``depth`` levels): that is where ``optax.sgd(0.1)`` keeps its 0.1 and
    ``gd.sgd(..., nesterov=True)`` its flag. Anything else (a closed-over data
    array, an object) is left out.
    """
    if value is None or isinstance(value, (bool, int, float, str, np.generic)):
        return _plain(value)
    if isinstance(value, (np.ndarray, jax.Array)):
        if np.ndim(value) == 0 and not _is_key(value):
            return _plain(value)
        return _SKIP
    if depth < 0 or id(value) in seen:
        return _name_of(value) if callable(value) else _SKIP
    seen.add(id(value))
    if isinstance(value, functools.partial):
        return {
            "partial": _describe(value.func, depth - 1, seen),
            "args": _describe(list(value.args), depth - 1, seen),
            "keywords": _describe(dict(value.keywords), depth - 1, seen),
        }
    if isinstance(value, (tuple, list)):
        items = [_describe(v, depth - 1, seen) for v in value]
        return [v for v in items if v is not _SKIP]
    if isinstance(value, Mapping):
        items = {str(k): _describe(v, depth - 1, seen) for k, v in value.items()}
        return {k: v for k, v in sorted(items.items()) if v is not _SKIP}
    if not callable(value):
        return _SKIP
    out: dict[str, Any] = {"name": _name_of(value)}
    code, cells = getattr(value, "__code__", None), getattr(value, "__closure__", None)
    free = {}
    for name, cell in zip(code.co_freevars if code else (), cells or (), strict=False):
        try:
            described = _describe(cell.cell_contents, depth - 1, seen)
        except ValueError:  # an empty cell
            continue
        if described is not _SKIP:
            free[name] = described
    if free:
        out["closure"] = free
    return out


def _describe_callable(fn: Any) -> Any:
    return _describe(fn, 6, set())


def _plain(value: Any) -> Any:
    """``value`` as JSON-able data, for a config fingerprint."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Mapping):
        return {
            str(k): _plain(v)
            for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))
        }
    if hasattr(value, "_asdict"):
        return {"__type__": type(value).__name__, **_plain(value._asdict())}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.ndarray, np.generic, jax.Array)) and not _is_key(value):
        return _plain(np.asarray(value).tolist())
    if callable(value):
        return _describe_callable(value)
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))


def _flat_config(value: Any, prefix: str = "config") -> dict[str, Any]:
    """``{"config['a'][0]": leaf}`` for every leaf of a JSON-able config."""
    if isinstance(value, (dict, list)) and value:
        items = value.items() if isinstance(value, dict) else enumerate(value)
        out = {}
        for k, v in items:
            out.update(_flat_config(v, f"{prefix}[{k!r}]"))
        return out
    return {prefix: value}


# ----------------------------------------------------------------------- save


def _check_directory(directory: Any, name: str = "directory") -> Path:
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(
            f"{name} must be a path (str or os.PathLike), got {V.describe(directory)}."
        )
    return Path(directory)


def _check_keep(keep: Any) -> int | None:
    if keep is None:
        return None
    return V.check_int(keep, "keep", minimum=1)


def _check_state(state: Any, name: str = "state") -> None:
    from gdjax.results import FitResult

    if not isinstance(state, FitResult):
        raise TypeError(
            f"{name} must be a gdjax FitResult (what fit returns, or "
            f"gdjax.loop.prepare(...).state), got {V.describe(state)}."
        )


def _epoch_of(state: Any) -> int:
    return int(np.max(np.asarray(state.epoch)))


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _storable(arr: np.ndarray) -> np.ndarray:
    # ml_dtypes (bfloat16, float8, int4) have no .npy descr: store their bits.
    arr = np.asarray(arr, order="C")
    if arr.dtype.kind == "V":
        return arr.view(np.dtype(f"u{arr.dtype.itemsize}"))
    return arr


def _serialize(
    state: Any,
    key: Any,
    config: dict | None,
    data_fp: dict | None,
) -> bytes:
    """The bytes of one checkpoint file (zip + manifest + trailing sha256)."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(state)
    records, members = [], []
    entries = [(f"state{jax.tree_util.keystr(p)}", leaf) for p, leaf in leaves]
    if key is not None:
        entries.append(("key", V.check_key(key)))
    for i, (where, leaf) in enumerate(entries):
        arr, dtype, impl = _host(leaf, where)
        stored = _storable(arr)
        member = "key.npy" if where == "key" else f"leaf{i}.npy"
        records.append(
            {
                "path": where,
                "member": member,
                "dtype": dtype,
                "shape": list(np.shape(leaf)),
                "key_impl": impl,
                "sha256": hashlib.sha256(stored.tobytes()).hexdigest(),
            }
        )
        members.append((member, _npy(stored)))
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "epoch": _epoch_of(state),
        "steps": int(np.max(np.asarray(state.steps))),
        "treedef": str(treedef),
        "leaves": [r for r in records if r["path"] != "key"],
        "key": next((r for r in records if r["path"] == "key"), None),
        "data": data_fp,
        "config": config,
        "fingerprint": fingerprint(),
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for member, payload in members:
            zf.writestr(zipfile.ZipInfo(member, _EPOCH_ZIP), payload)
        text = json.dumps(manifest, sort_keys=True, indent=1).encode()
        zf.writestr(zipfile.ZipInfo(_MANIFEST, _EPOCH_ZIP), text)
        zf.comment = _TAG + b"0" * _HEX
    blob = bytearray(buf.getvalue())
    blob[-_HEX:] = hashlib.sha256(blob[:-_HEX]).hexdigest().encode()
    return bytes(blob)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _remove_stale_temps(directory: Path) -> None:
    """Temporary files of saves whose process is gone (killed mid-save)."""
    for tmp in directory.iterdir():
        match = _TEMP.match(tmp.name)
        if match is None:
            continue
        pid = int(match.group(1))
        if pid != os.getpid():
            try:
                os.kill(pid, 0)
                continue  # its writer is alive
            except ProcessLookupError:
                pass
            except PermissionError:  # pragma: no cover - alive, another user
                continue
        tmp.unlink(missing_ok=True)


def checkpoints(directory: str | os.PathLike) -> list[Path]:
    """The checkpoint files in ``directory``, oldest (lowest epoch) first.

    Temporary files of unfinished saves are not listed. A missing folder has
    none.
    """
    directory = _check_directory(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def _write(
    directory: Path,
    state: Any,
    *,
    key: Any,
    config: dict | None,
    data_fp: dict | None,
    keep: int | None,
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    blob = _serialize(state, key, config, data_fp)
    target = directory / f"ckpt-{_epoch_of(state):09d}.npz"
    tmp = directory / f".{target.name}.tmp-{os.getpid()}"
    _remove_stale_temps(directory)
    try:
        with open(tmp, "wb") as f:
            half = len(blob) // 2
            f.write(blob[:half])
            f.flush()  # a kill from here on leaves a partial file on disk
            _pause("write")
            f.write(blob[half:])
            f.flush()
            os.fsync(f.fileno())
        _pause("rename")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(directory)
    if keep is not None:
        older = [p for p in checkpoints(directory) if p != target]
        for old in older[: max(len(older) + 1 - keep, 0)]:
            old.unlink(missing_ok=True)
    return target


def save(
    directory: str | os.PathLike,
    state: Any,
    *,
    key: Any = None,
    config: Mapping[str, Any] | None = None,
    data: Any = None,
    keep: int | None = 3,
) -> Path:
    """Save a run's state as ``directory/ckpt-<epoch>.npz``, atomically.

    Args:
      directory: the checkpoint folder (created if missing); one writer at a
        time.
      state: a :class:`~gdjax.loop.FitResult` (single run or vmapped sweep).
      key: the run's PRNG key, stored and checked by :func:`restore`.
      config: names and numbers that define the run (loss, transform and
        hyperparameters...), JSON-able or turned into text; checked on restore.
      data: the training data, fingerprinted (shapes, dtypes, sha256 of bytes).
      keep: how many checkpoints to keep (the newest; ``None`` keeps all). Old
        ones are removed only after the new one is complete.

    Returns:
      The path written.

    Raises:
      TypeError / ValueError: a bad argument, before anything is written.
    """
    directory = _check_directory(directory)
    _check_state(state)
    keep = _check_keep(keep)
    if key is not None:
        V.check_key(key)
    if config is not None and not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict, got {V.describe(config)}.")
    return _write(
        directory,
        state,
        key=key,
        config=None if config is None else _plain(dict(config)),
        data_fp=None if data is None else _data_fingerprint(data),
        keep=keep,
    )


# ----------------------------------------------------------------------- restore


def _corrupt(path: Path, cause: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(f"checkpoint {path} is unreadable: {cause}.")


def _read(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """The manifest and arrays of one file, every checksum verified (no device)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist.") from None
    except OSError as e:
        raise _corrupt(path, f"it cannot be read ({e})") from e
    if not raw:
        raise _corrupt(path, "the file is empty (0 bytes)")
    try:
        zf = zipfile.ZipFile(io.BytesIO(raw))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise _corrupt(
            path, f"it is truncated or not a zip archive ({len(raw)} bytes; {e})"
        ) from e
    with zf:
        try:
            manifest = json.loads(zf.read(_MANIFEST))
        except KeyError:
            raise _corrupt(path, f"{_MANIFEST} is missing") from None
        except Exception as e:  # noqa: BLE001 - zip CRC, zlib, JSON: all corruption
            raise _corrupt(path, f"{_MANIFEST} is corrupt ({e})") from e
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise _corrupt(path, f"it is not a {FORMAT} file")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise _corrupt(
                path,
                f"format version {manifest.get('format_version')} is not "
                f"{FORMAT_VERSION}",
            )
        arrays = {}
        records = list(manifest["leaves"])
        if manifest.get("key") is not None:
            records.append(manifest["key"])
        for rec in records:
            where, member = rec["path"], rec["member"]
            try:
                payload = zf.read(member)
            except KeyError:
                raise _corrupt(path, f"array {where} ({member}) is missing") from None
            except Exception as e:  # noqa: BLE001 - zip CRC or header damage
                raise _corrupt(
                    path, f"array {where} ({member}) is corrupt ({e})"
                ) from e
            try:
                arr = np.lib.format.read_array(io.BytesIO(payload), allow_pickle=False)
            except Exception as e:  # noqa: BLE001
                raise _corrupt(
                    path, f"array {where} ({member}) is corrupt ({e})"
                ) from e
            if hashlib.sha256(arr.tobytes()).hexdigest() != rec["sha256"]:
                raise _corrupt(
                    path, f"array {where} ({member}) fails its sha256 checksum"
                )
            arrays[where] = arr
    if raw[-_HEX - len(_TAG) : -_HEX] != _TAG:
        raise _corrupt(path, "its trailing sha256 is missing (truncated?)")
    if hashlib.sha256(raw[:-_HEX]).hexdigest().encode() != raw[-_HEX:]:
        raise _corrupt(
            path, "the file's sha256 does not match (bit flip or partial write)"
        )
    return manifest, arrays


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a checkpoint file (epoch, steps, fingerprints), verified."""
    return _read(_check_directory(path, "path"))[0]


def _value(rec: dict, arr: np.ndarray, dtype: str) -> Any:
    """The stored array as a device array of ``dtype`` (a typed key if it was)."""
    if rec["key_impl"] is not None:
        return jax.random.wrap_key_data(jax.device_put(arr), impl=rec["key_impl"])
    stored = jnp.dtype(rec["dtype"])
    if arr.dtype != stored:  # ml_dtypes stored as their bits
        arr = arr.view(stored)
    return jax.device_put(arr.astype(jnp.dtype(dtype), copy=False))


def _spec(leaf: Any) -> tuple[tuple[int, ...], str]:
    dtype = getattr(leaf, "dtype", None)
    if dtype is None:
        dtype = np.asarray(leaf).dtype
    return tuple(np.shape(leaf)), str(dtype)


def _differences(
    manifest: dict,
    arrays: dict[str, np.ndarray],
    like: Any,
    key: Any,
    data_fp: dict | None,
    config: dict | None,
) -> list[str]:
    diffs = []
    stored = {rec["path"]: rec for rec in manifest["leaves"]}
    here = {
        f"state{jax.tree_util.keystr(p)}": leaf
        for p, leaf in jax.tree_util.tree_leaves_with_path(like)
    }
    for where, leaf in here.items():
        rec = stored.get(where)
        if rec is None:
            diffs.append(f"{where}: not in the checkpoint")
            continue
        shape, dtype = _spec(leaf)
        if tuple(rec["shape"]) != shape:
            diffs.append(
                f"{where}: shape {tuple(rec['shape'])} in the checkpoint, {shape} here"
            )
        if rec["dtype"] != dtype:
            diffs.append(
                f"{where}: dtype {rec['dtype']} in the checkpoint, {dtype} here"
            )
    diffs += [
        f"{w}: in the checkpoint, not in this run" for w in stored if w not in here
    ]
    if not diffs and manifest["treedef"] != str(jax.tree_util.tree_structure(like)):
        diffs.append(
            f"tree structure: {manifest['treedef']} in the checkpoint, "
            f"{jax.tree_util.tree_structure(like)} here"
        )
    if key is not None and manifest.get("key") is not None:
        key = V.check_key(key)
        ours = np.asarray(jax.random.key_data(key)).tolist()
        rec = manifest["key"]
        theirs = arrays["key"].tolist()
        impl = str(jax.random.key_impl(key))
        if rec["key_impl"] != impl or theirs != ours:
            diffs.append(
                f"key: {rec['key_impl']} {theirs} in the checkpoint, {impl} {ours} here"
            )
    if data_fp is not None and manifest.get("data") is not None:
        diffs += _data_differences(manifest["data"], data_fp)
    if config is not None and manifest.get("config") is not None:
        theirs, ours = _flat_config(manifest["config"]), _flat_config(config)
        for name in sorted(set(theirs) | set(ours)):
            if name not in ours:
                diffs.append(f"{name}: {theirs[name]!r} in the checkpoint, absent here")
            elif name not in theirs:
                diffs.append(f"{name}: absent in the checkpoint, {ours[name]!r} here")
            elif theirs[name] != ours[name]:
                diffs.append(
                    f"{name}: {theirs[name]!r} in the checkpoint, {ours[name]!r} here"
                )
    return diffs


def _data_differences(theirs: dict, ours: dict) -> list[str]:
    if theirs["sha256"] == ours["sha256"]:
        return []
    t = {leaf["path"]: leaf for leaf in theirs["leaves"]}
    o = {leaf["path"]: leaf for leaf in ours["leaves"]}
    diffs = []
    for where in sorted(set(t) | set(o)):
        a, b = t.get(where), o.get(where)
        if a is None or b is None:
            side = "here" if a is None else "in the checkpoint"
            diffs.append(f"{where}: only {side}")
        elif (a["shape"], a["dtype"]) != (b["shape"], b["dtype"]):
            diffs.append(
                f"{where}: {a['dtype']}{tuple(a['shape'])} in the checkpoint, "
                f"{b['dtype']}{tuple(b['shape'])} here"
            )
        elif a["sha256"] != b["sha256"]:
            diffs.append(
                f"{where}: same shape and dtype but different values (sha256 "
                f"{a['sha256'][:12]}... in the checkpoint, {b['sha256'][:12]}... here)"
            )
    return diffs or ["data: different fingerprint"]


def _restore_from(
    path: Path,
    manifest: dict,
    arrays: dict[str, np.ndarray],
    like: Any,
    *,
    key: Any,
    data_fp: dict | None,
    config: dict | None,
    allow_mismatch: bool,
) -> Any:
    diffs = _differences(manifest, arrays, like, key, data_fp, config)
    if diffs and not allow_mismatch:
        raise CheckpointError(
            f"checkpoint {path} does not match this run:\n  - "
            + "\n  - ".join(diffs)
            + "\nPass allow_mismatch=True to load what fits."
        )
    if diffs:
        warnings.warn(
            CheckpointWarning(
                f"checkpoint {path} loaded despite differences (allow_mismatch=True); "
                "leaves that do not fit keep the values of `like`:\n  - "
                + "\n  - ".join(diffs)
            ),
            stacklevel=3,
        )
    stored = {rec["path"]: rec for rec in manifest["leaves"]}
    leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
    out = []
    for p, leaf in leaves:
        where = f"state{jax.tree_util.keystr(p)}"
        rec = stored.get(where)
        shape, dtype = _spec(leaf)
        fits = rec is not None and tuple(rec["shape"]) == shape
        if fits and (rec["dtype"] == dtype or not (rec["key_impl"] or _is_key(leaf))):
            out.append(_value(rec, arrays[where], dtype))
            continue
        if isinstance(leaf, jax.ShapeDtypeStruct):
            raise CheckpointError(
                f"checkpoint {path} has no value of shape {shape} and dtype {dtype} "
                f"for {where}, and `like` gives none either (a ShapeDtypeStruct)."
            )
        out.append(leaf)
    return jax.tree_util.tree_unflatten(treedef, out)


def _resolve(source: Any) -> Path:
    path = _check_directory(source, "source")
    if path.is_dir():
        found = checkpoints(path)
        if not found:
            raise CheckpointError(f"no checkpoint (ckpt-*.npz) in {path}.")
        return found[-1]
    return path


def _check_restore_args(like: Any, config: Any, allow_mismatch: Any) -> None:
    if not jax.tree_util.tree_leaves(like):
        raise ValueError(
            "like must be the state to restore into (a FitResult, e.g. "
            f"gdjax.loop.prepare(...).state), got {V.describe(like)} with no leaves."
        )
    if config is not None and not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict, got {V.describe(config)}.")
    if not isinstance(allow_mismatch, (bool, np.bool_)):
        raise TypeError(
            f"allow_mismatch must be True or False, got {allow_mismatch!r}."
        )


def restore(
    source: str | os.PathLike,
    like: Any,
    *,
    key: Any = None,
    data: Any = None,
    config: Mapping[str, Any] | None = None,
    allow_mismatch: bool = False,
) -> Any:
    """Load a checkpoint into the structure of ``like``, checking it fits.

    Args:
      source: a checkpoint file, or a folder (its newest checkpoint is read).
      like: the state to fill, a :class:`~gdjax.loop.FitResult` with the run's
        structure, dtypes and shapes (``gdjax.loop.prepare(...).state``, or a
        result); leaves may be ``jax.ShapeDtypeStruct``.
      key, data, config: this run's key, data and config; each is compared with
        the checkpoint's when both sides have one.
      allow_mismatch: load despite differences (with a
        :class:`CheckpointWarning` listing them): each leaf of ``like`` takes the
        checkpoint's value if it has one of the same shape (cast to ``like``'s
        dtype), else keeps ``like``'s.

    Returns:
      A state like ``like`` holding the checkpoint's values (``jax.Array`` s).

    Raises:
      CheckpointError: no checkpoint, a corrupt file
        (:class:`CorruptCheckpointError`, naming the file and cause), or a
        checkpoint of another run (listing the differences).
    """
    _check_restore_args(like, config, allow_mismatch)
    path = _resolve(source)
    manifest, arrays = _read(path)
    return _restore_from(
        path,
        manifest,
        arrays,
        like,
        key=key,
        data_fp=None if data is None else _data_fingerprint(data),
        config=None if config is None else _plain(dict(config)),
        allow_mismatch=bool(allow_mismatch),
    )


def restore_latest(
    directory: str | os.PathLike,
    like: Any,
    *,
    key: Any = None,
    data: Any = None,
    config: Mapping[str, Any] | None = None,
    allow_mismatch: bool = False,
) -> Any:
    """Like :func:`restore` on a folder, falling back past corrupt checkpoints.

    The newest checkpoint that reads back whole is restored; each newer one
    that does not is skipped with a :class:`CheckpointWarning` naming the file
    and the cause. A checkpoint that reads whole but belongs to another run is
    not skipped: it raises, as in :func:`restore`.

    Raises:
      CheckpointError: no checkpoint, every one corrupt, or a mismatch.
    """
    _check_restore_args(like, config, allow_mismatch)
    return _restore_latest(
        _check_directory(directory),
        like,
        key=key,
        data_fp=None if data is None else _data_fingerprint(data),
        config=None if config is None else _plain(dict(config)),
        allow_mismatch=bool(allow_mismatch),
    )


def _restore_latest(
    folder: Path,
    like: Any,
    *,
    key: Any,
    data_fp: dict | None,
    config: dict | None,
    allow_mismatch: bool,
) -> Any:
    found = checkpoints(folder)
    if not found:
        raise CheckpointError(f"no checkpoint (ckpt-*.npz) in {folder}.")
    skipped = []
    for path in reversed(found):
        try:
            manifest, arrays = _read(path)
        except CorruptCheckpointError as e:
            skipped.append(str(e))
            continue
        if skipped:
            warnings.warn(
                CheckpointWarning(
                    f"restored {path.name}, skipping {len(skipped)} newer corrupt "
                    "checkpoint(s):\n  - " + "\n  - ".join(skipped)
                ),
                stacklevel=3,
            )
        return _restore_from(
            path,
            manifest,
            arrays,
            like,
            key=key,
            data_fp=data_fp,
            config=config,
            allow_mismatch=allow_mismatch,
        )
    raise CorruptCheckpointError(
        f"every checkpoint in {folder} is corrupt:\n  - " + "\n  - ".join(skipped)
    )


# ----------------------------------------------------------------------- resume


class _Saver:
    """The callback :func:`saver` returns (a class only to carry its settings)."""

    def __init__(self, directory, every, keep, key, config, data_fp):
        self.directory, self.every, self.keep = directory, every, keep
        self.key, self.config, self.data_fp = key, config, data_fp
        self.last: int | None = None
        self.saved: list[Path] = []

    def save(self, state: Any) -> Path:
        path = _write(
            self.directory,
            state,
            key=self.key,
            config=self.config,
            data_fp=self.data_fp,
            keep=self.keep,
        )
        self.last = _epoch_of(state)
        self.saved.append(path)
        return path

    def __call__(self, state: Any) -> bool:
        epoch = _epoch_of(state)
        if self.last is None or epoch >= self.last + self.every:
            self.save(state)
        return False


def saver(
    directory: str | os.PathLike,
    *,
    every: int = 1,
    keep: int | None = 3,
    key: Any = None,
    config: Mapping[str, Any] | None = None,
    data: Any = None,
) -> Callable[[Any], bool]:
    """A ``fit`` callback that saves the state every ``every`` epochs.

    Use it with ``fit(..., chunk_epochs=every, callback=saver(...))``: the run is
    compiled once and called chunk by chunk (bitwise the single program), and
    the state is saved after each chunk. ``fit(..., resume=restore(...))``
    continues the run bit for bit. The final state of a run that stops is not
    passed to callbacks: save it with :func:`save` (:func:`fit_resumable` does).

    Args:
      directory: the checkpoint folder.
      every: save when at least this many epochs have passed since the last
        save (the first call always saves).
      keep: checkpoints kept (newest), or ``None`` for all.
      key, config, data: stored as in :func:`save` (the data is hashed once).

    Returns:
      ``callback(state) -> False`` (never stops the run), with ``.every``,
      ``.directory`` and ``.saved`` (the paths written).
    """
    directory = _check_directory(directory)
    every = V.check_int(every, "every", minimum=1)
    keep = _check_keep(keep)
    if key is not None:
        key = V.check_key(key)
    if config is not None and not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict, got {V.describe(config)}.")
    return _Saver(
        directory,
        every,
        keep,
        key,
        None if config is None else _plain(dict(config)),
        None if data is None else _data_fingerprint(data),
    )


# fit's arguments that change how it is driven, not the numbers it computes.
_NOT_CONFIG = {
    "key",
    "callback",
    "progress",
    "chunk_epochs",
    "donate",
    "val_data",
    "raise_on_nonfinite",
}


def _run_config(loss, transform, state, fit_kwargs, config) -> dict:
    from gdjax.transforms import get_hyperparams

    try:
        hyper = _plain(get_hyperparams(state.opt_state))
    except (ValueError, TypeError):
        hyper = None
    run = {
        "loss": _describe_callable(loss),
        "transform": _describe_callable(transform),
        "transform_hyperparams": hyper,
    }
    for name, value in sorted(fit_kwargs.items()):
        if name not in _NOT_CONFIG:
            run[name] = _plain(value)
    if fit_kwargs.get("val_data") is not None:
        run["val_data"] = _data_fingerprint(fit_kwargs["val_data"])["sha256"]
    run.update(_plain(dict(config or {})))
    return run


def fit_resumable(
    loss: Callable,
    params: Any,
    data: Any,
    transform: Any,
    *,
    directory: str | os.PathLike,
    every: int = 1,
    keep: int | None = 3,
    config: Mapping[str, Any] | None = None,
    **fit_kwargs: Any,
) -> Any:
    """:func:`gdjax.fit` that saves as it goes and resumes where it stopped.

    Validates every argument first (``gdjax.loop.prepare``; nothing compiles),
    then restores the newest readable checkpoint in ``directory``
    (:func:`restore_latest`) if there is one, refusing one of another run
    (tree, dtypes, shapes, data, key, or config: the loss, the transform's
    hyperparameters, the stopping criteria and ``config``), and runs
    ``fit(..., resume=state, chunk_epochs=every, callback=saver(...))``. The
    final state is saved too, so calling it again on a finished run returns
    that run. A run killed at any point and called again gives bitwise the
    uninterrupted ``fit``.

    Args:
      loss, params, data, transform: as for :func:`gdjax.fit`.
      directory: the checkpoint folder.
      every: epochs between checkpoints (the chunk size).
      keep: checkpoints kept.
      config: more names and numbers to fingerprint. The Python numbers,
        strings and 0-d arrays that the loss and the transform close over are
        fingerprinted already (``optax.sgd(0.1)``'s 0.1, ``nesterov=True``);
        pass here what lives elsewhere (a model width, an array closed over).
      **fit_kwargs: :func:`gdjax.fit`'s keywords (``key`` and ``epochs``
        required); ``callback`` is called after each save.

    Returns:
      The :class:`~gdjax.loop.FitResult` of the whole run.
    """
    from gdjax import loop

    for name in ("resume", "chunk_epochs"):
        if name in fit_kwargs:
            raise TypeError(
                f"fit_resumable sets {name} itself (from the checkpoints and "
                "`every`); do not pass it."
            )
    directory = _check_directory(directory)
    every = V.check_int(every, "every", minimum=1)
    keep = _check_keep(keep)
    if config is not None and not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict, got {V.describe(config)}.")
    accepted = inspect.signature(loop.prepare).parameters
    prepared = loop.prepare(
        loss,
        params,
        data,
        transform,
        **{k: v for k, v in fit_kwargs.items() if k in accepted},
    )
    run_config = _run_config(loss, transform, prepared.state, fit_kwargs, config)
    data_fp = _data_fingerprint(data)
    state = None
    if checkpoints(directory):
        state = _restore_latest(
            directory,
            prepared.state,
            key=prepared.key,
            data_fp=data_fp,
            config=run_config,
            allow_mismatch=False,
        )
    callback = _Saver(directory, every, keep, prepared.key, run_config, data_fp)
    user_callback = fit_kwargs.pop("callback", None)

    def on_chunk(s: Any) -> bool:
        callback(s)
        return bool(user_callback(s)) if user_callback is not None else False

    try:
        result = loop.fit(
            loss,
            params,
            data,
            transform,
            resume=state,
            chunk_epochs=every,
            callback=on_chunk,
            **fit_kwargs,
        )
    except NonFiniteError as e:
        callback.save(e.result)
        raise
    callback.save(result)
    return result
