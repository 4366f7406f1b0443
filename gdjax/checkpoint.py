r"""Checkpoints of a run: save it, restore it, resume it bit for bit.

The contract, before any code:

* **What is saved.** A :class:`~gdjax.FitResult`: its whole ``state`` (params,
  optimizer state, history, counters, status, plateau bookkeeping), one
  ``ckpt-<epoch>.npz`` file per save: an uncompressed zip of ``.npy`` arrays
  (``np.load`` reads it) and ``manifest.json``, which holds each array's path,
  dtype, shape and sha256, the tree structure, the run's *identity* and the
  library versions. Typed PRNG keys are stored as their key data, bfloat16 and
  other ``ml_dtypes`` as their bits. The same result saves to the same bytes.
* **Identity is what the caller passed**, never what a closure holds:
  :func:`fit_resumable` records the plain fields of the run's options
  (:class:`~gdjax.Stopping`, :class:`~gdjax.Recording`, the regime; a callable
  by its qualified name only), ``epochs``, the key data, the shapes and dtypes
  of params, optimizer state and data, a sha256 of the data, the transform's
  injected hyperparameters (:func:`gdjax.get_hyperparams` of its state) and a
  user ``config`` dict. Numbers that a loss or transform closes over (the 0.1
  of ``optax.sgd(0.1)``) are invisible to it: put them in ``config``.
* **Atomic.** A save writes ``.ckpt-<epoch>.npz.tmp-<pid>`` in the same folder,
  fsyncs it, ``os.replace``\ s it onto its name and fsyncs the folder; only
  then are checkpoints beyond the newest ``keep`` removed. A process killed at
  any instant leaves the previous checkpoints whole (and perhaps a temporary
  file, which restores ignore and the next save removes). One writer per
  folder.
* **Checked on restore.** An empty, truncated, bit-flipped or partial file
  raises :class:`CorruptCheckpointError` naming the file and the cause (zip
  CRCs, a sha256 per array, and a sha256 of the whole file in the zip
  comment); :func:`restore_latest` falls back past such files with a
  :class:`CheckpointWarning`. A checkpoint whose tree, shapes, dtypes or
  identity differ from this run's is refused with a one-line difference.
* **Resumable bit for bit.** Epoch ``e`` orders the data from
  ``fold_in(key, e - 1)``, and a run driven in chunks is bitwise the single
  program, so a run restored at an epoch boundary and continued with
  ``fit(..., resume=result)`` equals the uninterrupted run bit for bit (same
  versions and backend). :func:`saver` is the ``fit`` callback that saves;
  :func:`fit_resumable` restores-or-starts, runs and saves: call it again
  after a crash and it continues; call it on a finished run and it returns
  that run; call it with a larger ``epochs`` and it extends the run.
* **orbax.** A :class:`~gdjax.FitResult` is a pytree of arrays, so
  ``orbax.checkpoint`` saves it as it is
  (``CheckpointManager.save(step, args=ocp.args.StandardSave(result))``, and
  ``restore(step, args=ocp.args.StandardRestore(template))``); see
  ``docs/checkpoints.md``.

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

import dataclasses
import functools
import hashlib
import importlib.metadata
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
from gdjax import runs, sharding, spec
from gdjax.errors import CheckpointError, GdjaxWarning
from gdjax.results import FitResult
from gdjax.stopping import Status
from gdjax.transforms import get_hyperparams

__all__ = [
    "CheckpointWarning",
    "CorruptCheckpointError",
    "check_writable",
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
FORMAT_VERSION = 2
_NAME = re.compile(r"^ckpt-(\d{9,})\.npz$")
_MANIFEST = "manifest.json"
_TAG = b"gdjax-sha256:"
_HEX = 64
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: same result, same bytes


class CheckpointWarning(GdjaxWarning):
    """A checkpoint was skipped (corrupt) or was saved under other versions."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint file is unreadable: empty, truncated, bit-flipped, partial."""


@functools.cache
def _versions() -> dict[str, str]:
    from gdjax import __version__

    out = {"gdjax": __version__}
    for name in ("jax", "jaxlib", "optax", "numpy"):
        out[name] = importlib.metadata.version(name)
    return out


def fingerprint() -> dict[str, Any]:
    """Where a result is computed: library versions, backend and x64 mode.

    Bitwise resume holds between the same fingerprints; a checkpoint records
    it and a restore under another one warns.

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


# ---------------------------------------------------------------------- identity


def _name(fn: Any) -> str:
    """``module.qualname`` of a function, or of a callable object's type."""
    if not hasattr(fn, "__qualname__"):
        fn = type(fn)
    return f"{getattr(fn, '__module__', '?')}.{fn.__qualname__}"


def _plain(value: Any) -> Any:
    """``value`` as JSON data: numbers, strings, lists, dicts; callables by name."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, (np.ndarray, np.generic, jax.Array)):
        arr = np.asarray(jax.random.key_data(value) if _is_key(value) else value)
        if arr.ndim == 0:  # floats by their shortest repr: 0.1, not 0.100000001
            x = arr[()]
            return _plain(float(str(x)) if isinstance(x, np.floating) else x.item())
        if arr.size > 16:
            return {"array": _spec_text(arr), "sha256": _digest(arr)}
        return {"array": _spec_text(arr), "values": [_plain(x) for x in arr.ravel()]}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return {"type": _name(value), **_plain(fields)}
    if hasattr(value, "_asdict"):
        return _plain(value._asdict())
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if callable(value):
        return _name(value)
    return type(value).__name__


def _spec_text(leaf: Any) -> str:
    return f"{leaf.dtype}{list(np.shape(leaf))}".replace(" ", "")


def _shapes(tree: Any) -> dict[str, str]:
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return {jax.tree_util.keystr(p): _spec_text(leaf) for p, leaf in leaves}


def _digest(tree: Any) -> str:
    """sha256 of every leaf's path, dtype, shape and bytes."""
    h = hashlib.sha256()
    for p, leaf in jax.tree_util.tree_leaves_with_path(tree):
        arr = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{jax.tree_util.keystr(p)}|{_spec_text(arr)};".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _data_identity(data: Any) -> dict[str, str] | None:
    if data is None:
        return None
    spread = any(
        isinstance(a, jax.Array) and not a.is_fully_addressable
        for a in jax.tree.leaves(data)
    )
    # Data spread over processes: no process holds it all to hash it.
    digest = "spread over processes" if spread else _digest(data)
    return {**_shapes(data), "sha256": digest}


def _prepare(loss, params, data, transform, config, specs, options, prepare, **kwargs):
    """``(run, identity, specs)`` of ``fit``'s arguments, validated as fit does."""
    specs = spec.from_options(*specs, **options)
    stopping, recording, driving = specs
    run = prepare(
        loss,
        params,
        data,
        transform,
        stopping=stopping,
        recording=recording,
        driving=driving,
        **kwargs,
    )
    try:
        hyperparams = get_hyperparams(run.state.opt_state)
    except ValueError:  # a transform without injected hyperparameters
        hyperparams = None
    key = run.inputs.key
    identity = {
        "loss": loss,
        "transform": _name(transform.update),
        "hyperparams": hyperparams,
        "regime": run.program.regime,
        "stopping": stopping,
        "recording": recording,
        "epochs": run.program.epochs,
        "key": f"{jax.random.key_impl(key)}:{np.asarray(jax.random.key_data(key))}",
        "params": _shapes(run.state.params),
        "opt_state": _shapes(run.state.opt_state),
        "data": _data_identity(data),
        "val_data": _data_identity(kwargs.get("val_data")),
        "config": _check_config(config),
    }
    return run, json.loads(json.dumps(_plain(identity))), specs


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"stopping.tol": 0.001, "params['w']": "float32[4]", ...}``."""
    if not isinstance(tree, dict) or not tree:
        return {prefix: tree}
    out = {}
    for k, v in tree.items():
        name = k if k[:1] in "[." or not prefix else f".{k}"
        out.update(_flat(v, f"{prefix}{name}"))
    return out


def _show(name: str, value: Any) -> str:
    if name.endswith("sha256") and isinstance(value, str):
        value = value[:12] + "..."
    return repr(value)


def _differences(theirs: Any, ours: Any, skip: tuple[str, ...] = ()) -> str:
    """One line: ``name: in the checkpoint -> here; ...`` ('' when equal)."""
    a, b = _flat(theirs), _flat(ours)
    diffs = []
    for name in sorted(set(a) | set(b)):
        if name in skip or a.get(name, "absent") == b.get(name, "absent"):
            continue
        old = _show(name, a[name]) if name in a else "absent"
        new = _show(name, b[name]) if name in b else "absent"
        diffs.append(f"{name} {old} -> {new}")
    return "; ".join(diffs)


# -------------------------------------------------------------------------- save


def _check_directory(directory: Any, name: str = "directory") -> Path:
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(
            f"{name} must be a path (str or os.PathLike), got {V.describe(directory)}."
        )
    return Path(directory)


def check_writable(directory: Path) -> None:
    """The checkpoint folder exists (or can be made) and takes a file, checked
    before a run, so that a bad path fails before anything compiles."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".gdjax-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise CheckpointError(
            f"directory must be a folder gdjax can create and write checkpoints "
            f"into, got {str(directory)!r}: {e.strerror or e}."
        ) from e


def _check_keep(keep: Any) -> int | None:
    return None if keep is None else V.check_int(keep, "keep", minimum=1)


def _check_config(config: Any, name: str = "config") -> dict | None:
    if config is None:
        return None
    if not isinstance(config, Mapping):
        raise TypeError(f"{name} must be a dict, got {V.describe(config)}.")
    return json.loads(json.dumps(_plain(dict(config))))


def _check_result(result: Any, name: str) -> None:
    if not isinstance(result, FitResult):
        into = " to restore into" if name == "like" else ""
        raise TypeError(
            f"{name} must be a gd.FitResult{into} (what gd.fit returns, or "
            f"jax.eval_shape of one), got {V.describe(result)}."
        )


def _is_key(leaf: Any) -> bool:
    return jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _epoch_of(result: FitResult) -> int:
    return int(np.max(np.asarray(result.state.epoch)))


def _serialize(result: FitResult, identity: dict | None) -> bytes:
    """The bytes of one checkpoint file (zip, manifest, trailing sha256)."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(result.state)
    records, buf = [], io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for i, (p, leaf) in enumerate(leaves):
            impl = str(jax.random.key_impl(leaf)) if _is_key(leaf) else None
            arr = np.asarray(jax.random.key_data(leaf) if impl else leaf, order="C")
            if arr.dtype.kind == "V":  # ml_dtypes have no .npy descr: store bits
                arr = arr.view(np.dtype(f"u{arr.dtype.itemsize}"))
            npy = io.BytesIO()
            np.lib.format.write_array(npy, arr, allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"leaf{i}.npy", _ZIP_TIME), npy.getvalue())
            records.append(
                {
                    "path": f"state{jax.tree_util.keystr(p)}",
                    "member": f"leaf{i}.npy",
                    "dtype": str(leaf.dtype),
                    "shape": list(np.shape(leaf)),
                    "key_impl": impl,
                    "sha256": hashlib.sha256(arr.tobytes()).hexdigest(),
                }
            )
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "epoch": _epoch_of(result),
            "steps": int(np.max(np.asarray(result.state.steps))),
            "treedef": str(treedef),
            "leaves": records,
            "identity": identity,
            "versions": fingerprint(),
        }
        text = json.dumps(manifest, sort_keys=True, indent=1).encode()
        zf.writestr(zipfile.ZipInfo(_MANIFEST, _ZIP_TIME), text)
        zf.comment = _TAG + b"0" * _HEX
    blob = bytearray(buf.getvalue())
    blob[-_HEX:] = hashlib.sha256(blob[:-_HEX]).hexdigest().encode()
    return bytes(blob)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(directory: Path, result: FitResult, identity, keep) -> Path:
    target = directory / f"ckpt-{_epoch_of(result):09d}.npz"
    if jax.process_index() != 0:  # one writer in a multi-process run
        return target
    directory.mkdir(parents=True, exist_ok=True)
    blob = _serialize(result, identity)
    tmp = directory / f".{target.name}.tmp-{os.getpid()}"
    for stale in directory.glob(".ckpt-*.tmp-*"):  # one writer: a dead save's
        stale.unlink(missing_ok=True)
    try:
        with open(tmp, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
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
    result: FitResult,
    *,
    identity: Mapping[str, Any] | None = None,
    keep: int | None = 3,
) -> Path:
    """Save ``result`` as ``directory/ckpt-<epoch>.npz``, atomically.

    Args:
      directory: the checkpoint folder (created if missing); one writer at a
        time.
      result: a :class:`~gdjax.FitResult` (a single run or a sweep's stacked
        ``result``).
      identity: a JSON-able dict that identifies the run (names, numbers),
        checked by :func:`restore`; :func:`fit_resumable` builds its own.
      keep: how many checkpoints to keep (the newest; ``None`` keeps all). Old
        ones are removed only once the new one is in place.

    Returns:
      The path written.
    """
    directory = _check_directory(directory)
    _check_result(result, "result")
    keep = _check_keep(keep)
    return _write(directory, result, _check_config(identity, "identity"), keep)


# ----------------------------------------------------------------------- restore


def _corrupt(path: Path, cause: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(f"checkpoint {path} is unreadable: {cause}.")


def _read(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """The manifest and arrays of one file, every checksum verified (host only)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist.") from None
    if not raw:
        raise _corrupt(path, "the file is empty (0 bytes)")
    try:
        zf = zipfile.ZipFile(io.BytesIO(raw))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise _corrupt(path, f"it is truncated or not a zip ({len(raw)} bytes)") from e
    arrays = {}
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
                path, f"format version {manifest.get('format_version')} is not 2"
            )
        for rec in manifest["leaves"]:
            what = f"array {rec['path']} ({rec['member']})"
            try:
                payload = zf.read(rec["member"])
            except KeyError:
                raise _corrupt(path, f"{what} is missing") from None
            except Exception as e:  # noqa: BLE001 - zip CRC or header damage
                raise _corrupt(path, f"{what} is corrupt ({e})") from e
            try:
                arr = np.lib.format.read_array(io.BytesIO(payload), allow_pickle=False)
            except Exception as e:  # noqa: BLE001
                raise _corrupt(path, f"{what} is corrupt ({e})") from e
            if hashlib.sha256(arr.tobytes()).hexdigest() != rec["sha256"]:
                raise _corrupt(path, f"{what} is corrupt (sha256 mismatch)")
            arrays[rec["path"]] = arr
    if raw[-_HEX - len(_TAG) : -_HEX] != _TAG:
        raise _corrupt(path, "its trailing sha256 is missing (truncated?)")
    if hashlib.sha256(raw[:-_HEX]).hexdigest().encode() != raw[-_HEX:]:
        raise _corrupt(path, "the file's sha256 does not match (bit flip?)")
    return manifest, arrays


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a checkpoint file (epoch, steps, identity), verified."""
    return _read(_check_directory(path, "path"))[0]


def checkpoints(directory: str | os.PathLike) -> list[Path]:
    """The checkpoint files in ``directory``, oldest (lowest epoch) first.

    Temporary files of unfinished saves are not listed; a missing folder has
    none.
    """
    directory = _check_directory(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def _unpack(path: Path, manifest: dict, arrays: dict, like: FitResult, identity):
    """The stored result in the structure of ``like``, refusing any difference."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(like.state)
    here = {f"state{jax.tree_util.keystr(p)}": _spec_text(leaf) for p, leaf in leaves}
    stored = {
        r["path"]: f"{r['dtype']}{r['shape']}".replace(" ", "")
        for r in manifest["leaves"]
    }
    diff = _differences(stored, here)
    if not diff and manifest["treedef"] != str(treedef):
        diff = f"tree structure {manifest['treedef']} -> {treedef}"
    if identity is not None and manifest.get("identity") is not None:
        diff = "; ".join(
            d
            for d in (diff, _differences(manifest["identity"], identity, ("epochs",)))
            if d
        )
    if diff:
        raise CheckpointError(
            f"checkpoint {path} is of another run (in the checkpoint -> here): {diff}."
        )
    versions = _differences(manifest["versions"], fingerprint())
    if versions:
        warnings.warn(
            CheckpointWarning(
                f"checkpoint {path} was saved under other versions ({versions}): "
                "a resumed run need not equal the uninterrupted one bit for bit."
            ),
            stacklevel=3,
        )
    out = []
    for rec in manifest["leaves"]:
        arr = arrays[rec["path"]]
        if rec["key_impl"] is not None:
            out.append(jax.random.wrap_key_data(arr, impl=rec["key_impl"]))
            continue
        dtype = jnp.dtype(rec["dtype"])
        if arr.dtype != dtype:  # ml_dtypes are stored as their bits
            arr = arr.view(dtype)
        out.append(jax.device_put(arr))
    return FitResult(jax.tree_util.tree_unflatten(treedef, out))


def _newest(directory: Path) -> tuple[Path, dict, dict]:
    """The newest checkpoint that reads back whole, warning for those skipped."""
    found = checkpoints(directory)
    if not found:
        raise CheckpointError(f"no checkpoint (ckpt-*.npz) in {directory}.")
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
                    "checkpoint(s): " + " ".join(skipped)
                ),
                stacklevel=3,
            )
        return path, manifest, arrays
    raise CorruptCheckpointError(
        f"every checkpoint in {directory} is corrupt: " + " ".join(skipped)
    )


def restore(
    source: str | os.PathLike,
    like: FitResult,
    *,
    identity: Mapping[str, Any] | None = None,
) -> FitResult:
    """Load a checkpoint, refusing one of another structure or run.

    Args:
      source: a checkpoint file, or a folder (its newest checkpoint is read).
      like: a :class:`~gdjax.FitResult` of the same structure, shapes and
        dtypes (a result of the run, or ``jax.eval_shape`` of one).
      identity: this run's identity (see :func:`save`); compared with the
        stored one (but for ``epochs``, which may grow) when both exist.

    Returns:
      The stored :class:`~gdjax.FitResult`, on the default device; continue it
      with ``gd.fit(..., resume=result)``.

    Raises:
      CheckpointError: no checkpoint, a corrupt file
        (:class:`CorruptCheckpointError`, naming the file and the cause), or a
        checkpoint of another run (the differences on one line).
    """
    _check_result(like, "like")
    identity = _check_config(identity, "identity")
    path = _check_directory(source, "source")
    if path.is_dir():
        found = checkpoints(path)
        if not found:
            raise CheckpointError(f"no checkpoint (ckpt-*.npz) in {path}.")
        path = found[-1]
    return _unpack(path, *_read(path), like, identity)


def restore_latest(
    directory: str | os.PathLike,
    like: FitResult,
    *,
    identity: Mapping[str, Any] | None = None,
) -> FitResult:
    """:func:`restore` of the newest checkpoint that reads back whole.

    Each newer corrupt checkpoint is skipped with a :class:`CheckpointWarning`
    naming it and the cause; one of another run is refused, not skipped.
    """
    _check_result(like, "like")
    identity = _check_config(identity, "identity")
    return _unpack(*_newest(_check_directory(directory)), like, identity)


# ------------------------------------------------------------------------ resume


def _mark(result: FitResult) -> tuple:
    return _epoch_of(result), np.asarray(result.state.status).tobytes()


class _Saver:
    """The callback :func:`saver` returns (a class only to carry its settings)."""

    def __init__(self, directory: Path, every: int, keep, identity) -> None:
        self.directory, self.every, self.keep = directory, every, keep
        self.identity = identity
        self.last: tuple | None = None
        self.saved: list[Path] = []

    def save(self, result: FitResult) -> None:
        if _mark(result) != self.last:
            self.saved.append(_write(self.directory, result, self.identity, self.keep))
            self.last = _mark(result)

    def __call__(self, result: FitResult) -> bool:
        stopped = not (np.asarray(result.state.status) == Status.RUNNING).any()
        due = self.last is None or _epoch_of(result) >= self.last[0] + self.every
        if stopped or due:
            self.save(result)
        return False


def saver(
    directory: str | os.PathLike,
    *,
    every: int = 1,
    keep: int | None = 3,
    identity: Mapping[str, Any] | None = None,
) -> Callable[[FitResult], bool]:
    """A ``fit`` callback that saves the run every ``every`` epochs and at its end.

    ``gd.fit(..., chunk_epochs=k, callback=saver(folder))``: the run is called
    chunk by chunk (bitwise the single program) and saved after a chunk when
    ``every`` epochs have passed since the last save, and after the last chunk.

    Args:
      directory: the checkpoint folder.
      every: epochs between saves (the first call always saves).
      keep: checkpoints kept (newest), or ``None`` for all.
      identity: stored with each save (see :func:`save`).

    Returns:
      ``callback(result) -> False`` (it never stops the run); ``.saved`` lists
      the paths written.
    """
    return _Saver(
        _check_directory(directory),
        V.check_int(every, "every", minimum=1),
        _check_keep(keep),
        _check_config(identity, "identity"),
    )


def _resumable(result: FitResult, epochs: int) -> bool:
    """Whether a restored run goes on under a budget of ``epochs``."""
    status = result.stopped_by
    if status == Status.MAX_EPOCHS:
        return epochs > _epoch_of(result)
    return status in (Status.RUNNING, Status.CALLBACK)


def _split_over(data: Any) -> tuple[jax.sharding.Mesh, str] | None:
    """``(mesh, axis)`` when ``data``'s example axis is split over a mesh."""
    for leaf in jax.tree.leaves(data):
        where = getattr(leaf, "sharding", None)
        if (
            isinstance(where, jax.sharding.NamedSharding)
            and len(where.device_set) > 1
            and len(where.spec) > 0
            and isinstance(where.spec[0], str)
        ):
            return where.mesh, where.spec[0]
    return None


def _agreed_newest(directory: Path) -> tuple[Path, dict, dict] | None:
    """:func:`_newest` (``None`` when there is no checkpoint), the same on every
    process of a multi-process run, or a :class:`CheckpointError` on all."""
    try:
        found, error = (_newest(directory) if checkpoints(directory) else None), None
    except CheckpointError as e:  # raised after the others know
        found, error = None, e
    if jax.process_count() > 1:
        _check_processes_agree(directory, found, error)
    if error is not None:
        raise error
    return found


def _check_processes_agree(directory: Path, found, error) -> None:
    """Every process found the same checkpoint (a collective, bounded by the
    distributed runtime's timeouts)."""
    from jax.experimental import multihost_utils

    if found is not None:
        epoch = int(found[1]["epoch"])
        text = json.dumps(found[1], sort_keys=True).encode()
    else:
        epoch, text = (-2 if error is not None else -1), b""
    mine = np.concatenate(
        [
            np.asarray([epoch], np.int64).view(np.uint8),
            np.frombuffer(hashlib.sha256(text).digest(), np.uint8),
        ]
    )
    every = np.asarray(multihost_utils.process_allgather(mine))
    if (every == every[0]).all():
        return
    seen = []
    for i, row in enumerate(every):
        e = int(row[:8].view(np.int64)[0])
        what = {-1: "no checkpoint", -2: "no readable checkpoint"}.get(
            e, f"the checkpoint of epoch {e} (sha256 {row[8:16].tobytes().hex()}...)"
        )
        seen.append(f"process {i}: {what}")
    raise CheckpointError(
        f"the processes of this run found different checkpoints in {directory} ("
        + "; ".join(seen)
        + "). A multi-process run writes from process 0 and resumes on every "
        "process, so the folder must be one that every process sees (a shared "
        "file system)."
    )


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
    key: Any,
    epochs: int,
    regime: Any = None,
    val_data: Any = None,
    hyperparams: Mapping[str, Any] | None = None,
    stopping: spec.Stopping | None = None,
    recording: spec.Recording | None = None,
    driving: spec.Driving | None = None,
    **options: Any,
) -> FitResult:
    """:func:`gdjax.fit` that saves as it goes and resumes where it stopped.

    Validates the arguments, then reads the newest whole checkpoint in
    ``directory`` (if any). One of another run (its identity, see the module
    docstring, differs in anything but ``epochs``) is refused with the
    differences on one line. Otherwise:

    * no checkpoint, or one of a run still going (killed, or stopped by a
      ``callback``): run, or continue, to ``epochs``;
    * a run that used up its budget and a larger ``epochs``: extend it;
    * a finished run (its budget, a criterion, NaN/inf): return it as saved.

    It runs in chunks of ``every`` epochs and saves after each (and the final
    state, a failed one included), keeping the newest ``keep``. The result is
    bitwise the uninterrupted :func:`gdjax.fit` however often the process was
    killed.

    With ``data`` split over a mesh (:func:`gdjax.sharding.shard_data`) the
    run is :func:`gdjax.fit_data_parallel`'s over that mesh, as ``jit``
    follows its inputs' placement, and it may span processes
    (``jax.distributed``): every process calls this with the same arguments,
    only process 0 writes, and every process reads the checkpoint it resumes
    from, so ``directory`` must be a folder every process sees (a shared file
    system). The processes check that they found
    the same checkpoint and raise :class:`~gdjax.errors.CheckpointError`
    naming what each one saw if not (rather than run on from different
    states).

    Args:
      loss: as for :func:`gdjax.fit`; so are ``params``, ``data``,
        ``transform``, ``key``, ``epochs``, ``regime``, ``val_data``,
        ``hyperparams``, ``stopping``, ``recording``, ``driving`` and the flat
        run options (``resume`` and ``chunk_epochs`` are set here; a
        ``callback`` is called after each save).
      directory: the checkpoint folder.
      every: epochs per chunk, and between checkpoints.
      keep: checkpoints kept.
      config: a dict of your own that identifies the run too (the numbers a
        loss or transform closes over, a model width...).

    Returns:
      The :class:`~gdjax.FitResult` of the whole run.
    """
    chunked = driving is not None and driving.chunk_epochs is not None
    for name in ("resume", "chunk_epochs"):
        if name in options or (name == "chunk_epochs" and chunked):
            raise TypeError(
                f"fit_resumable sets {name} itself (from the checkpoints and "
                "`every`); do not pass it."
            )
    directory = _check_directory(directory)
    every = V.check_int(every, "every", minimum=1)
    keep = _check_keep(keep)
    check_writable(directory)
    args = (loss, params, data, transform)
    kwargs = dict(
        key=key,
        epochs=epochs,
        regime=regime,
        val_data=val_data,
        hyperparams=hyperparams,
    )
    specs = (stopping, recording, driving)
    split = _split_over(data)
    if split is None:
        prepare = runs.prepare
    else:
        mesh, axis = split
        prepare = functools.partial(
            sharding.prepare_data_parallel, mesh=mesh, axis=axis
        )
    run, identity, specs = _prepare(*args, config, specs, options, prepare, **kwargs)
    stopping, recording, driving = specs
    epochs = run.program.epochs
    save = _Saver(directory, every, keep, identity)
    found = _agreed_newest(directory)
    if found is not None:
        path, manifest, arrays = found
        # The stored history has the rows of the stored budget.
        stored = manifest.get("identity") or {}
        n_rows = runs.rows(int(stored.get("epochs", epochs)), recording)
        state = run.state._replace(
            history=jax.tree.map(
                lambda a: jax.ShapeDtypeStruct((n_rows,), a.dtype), run.state.history
            )
        )
        result = _unpack(path, manifest, arrays, FitResult(state), identity)
        if _epoch_of(result) > epochs:
            raise CheckpointError(
                f"checkpoint {path} has run {_epoch_of(result)} epochs, more than "
                f"epochs={epochs}; pass epochs >= {_epoch_of(result)}."
            )
        if not _resumable(result, epochs):
            return runs.finish(result.state, driving)
        save.last = _mark(result)
        run = prepare(
            *args,
            **kwargs,
            stopping=stopping,
            recording=recording,
            driving=driving,
            resume=result,
        )
    user_callback = driving.callback

    def on_chunk(result: FitResult) -> bool:
        save(result)
        return bool(user_callback(result)) if user_callback is not None else False

    driving = dataclasses.replace(driving, chunk_epochs=every, callback=on_chunk)
    state = runs.drive(
        run, advance=runs.advance_for(driving), driving=driving, donates=driving.donate
    )
    save.save(FitResult(state))  # a stop asked by the callback comes after it
    return runs.finish(state, driving)
