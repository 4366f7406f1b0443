"""Subprocess helper for test_checkpoint.py and test_determinism.py (no tests).

``python tests/_train_script.py MODE ...``:

* ``hash``: run :func:`reference` (a tiny fit) and print ``devices <count>``
  and ``hash <sha256>`` of every byte of the result.
* ``train DIR PAUSE``: ``fit_resumable`` the same run into ``DIR`` (a save
  after every epoch), printing ``saving`` when its first save starts and
  ``hash <sha256>`` at the end. ``os.fsync`` and ``os.replace`` are slowed by
  ``PAUSE`` seconds *in this process* (:func:`slow_saves`), so that a kill
  lands mid-save often; gdjax itself has no test hook.
* ``saves DIR PAUSE SEED TARGET``: fork a child that saves checkpoints in a
  loop, SIGKILL it at a random time (seeded), check that the newest checkpoint
  reads back whole, and repeat until ``TARGET`` kills have landed mid-save
  (a temporary file was left). Prints one JSON line per kill. The parent never
  starts a JAX backend (only the children do), so forking it is safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sys
import time

EPOCHS = 24


def problem():
    """(loss, params, data, transform, fit kwargs) of the run under test."""
    import jax
    import numpy as np

    import gdjax as gd

    rng = np.random.default_rng(0)
    x = rng.normal(size=(26, 3)).astype(np.float32)
    w = np.array([[1.0], [-2.0], [0.5]], np.float32)
    y = (x @ w)[:, 0] + 0.1 * rng.normal(size=26).astype(np.float32)
    loss = gd.make_loss(gd.models.linear, gd.losses.squared_error)
    params = {"w": np.zeros((3, 1), np.float32), "b": np.zeros(1, np.float32)}
    kwargs = dict(
        key=jax.random.key(5),
        epochs=EPOCHS,
        regime=gd.minibatch(4),  # 7 steps an epoch, the last one masked
        tol=1e-3,
        patience=50,
    )
    return loss, params, (x, y), gd.sgd(0.02, momentum=0.9), kwargs


def result_hash(result) -> str:
    """sha256 of every leaf's path, dtype, shape and bytes."""
    import jax
    import numpy as np

    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(result):
        arr = np.asarray(leaf)
        h.update(f"{jax.tree_util.keystr(path)}|{arr.dtype}|{arr.shape}|".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def reference():
    """The uninterrupted run: one ``gd.fit`` call."""
    import gdjax as gd

    loss, params, data, tx, kwargs = problem()
    return gd.fit(loss, params, data, tx, **kwargs)


def host_state(epoch: int):
    """A FitResult of NumPy arrays whose values encode ``epoch`` (no device)."""
    import numpy as np

    import gdjax as gd
    from gdjax.loop import History, RunState

    f32, i32 = np.float32, np.int32
    hist = np.full((8,), epoch, f32)
    return gd.FitResult(
        RunState(
            params={"w": np.full((3, 2), epoch, f32), "b": np.arange(2, dtype=f32)},
            opt_state=(np.full((3, 2), -epoch, f32), np.asarray(epoch, i32)),
            history=History(hist.astype(i32), hist, hist + 1, hist + 2, hist + 3, {}),
            epoch=np.asarray(epoch, i32),
            steps=np.asarray(7 * epoch, i32),
            status=np.asarray(0, i32),
            bad_leaf=np.asarray(-1, i32),
            best_loss=np.asarray(1.0 / (1 + epoch), f32),
            bad_epochs=np.asarray(0, i32),
        )
    )


def slow_saves(pause: float, on_first=None) -> None:
    """Slow this process's ``os.fsync`` and ``os.replace`` by ``pause`` seconds.

    A save calls fsync on the temporary file, replace, then fsync on the
    folder: kills land with a whole temporary file not yet renamed, or just
    after the rename. ``on_first()`` runs at the first call.
    """
    fsync, replace = os.fsync, os.replace
    started = []

    def wait() -> None:
        if not started:
            started.append(True)
            if on_first is not None:
                on_first()
        time.sleep(pause)

    def slow_fsync(fd):
        wait()
        return fsync(fd)

    def slow_replace(src, dst):
        wait()
        return replace(src, dst)

    os.fsync, os.replace = slow_fsync, slow_replace


def _train(directory: str, pause: float) -> None:
    from gdjax import checkpoint

    slow_saves(pause, on_first=lambda: print("saving", flush=True))
    loss, params, data, tx, kwargs = problem()
    r = checkpoint.fit_resumable(
        loss, params, data, tx, directory=directory, every=1, keep=2, **kwargs
    )
    print("hash", result_hash(r), flush=True)


def _saving_child(directory: str, pause: float, ready: int) -> None:
    from gdjax import checkpoint

    checkpoint.fingerprint()  # start the backend before signalling readiness
    found = checkpoint.checkpoints(directory)
    epoch = int(found[-1].name[5:-4]) + 1 if found else 0
    if not found:  # the first child leaves one whole checkpoint before any kill
        checkpoint.save(directory, host_state(epoch), keep=2)
        epoch += 1
    slow_saves(pause)
    os.write(ready, b"x")
    while True:
        checkpoint.save(directory, host_state(epoch), keep=2)
        epoch += 1


def _check_newest(directory: str) -> dict:
    """Verify the newest checkpoint (checksums, values) with NumPy alone."""
    import numpy as np

    from gdjax import checkpoint

    newest = checkpoint.checkpoints(directory)[-1]
    manifest = checkpoint.read_manifest(newest)  # verifies every checksum
    members = {r["path"]: r["member"][:-4] for r in manifest["leaves"]}
    with np.load(newest) as z:
        epoch = int(z[members["state.epoch"]])
        w = z[members["state.params['w']"]]
    ok = manifest["epoch"] == epoch and np.array_equal(
        w, np.full((3, 2), epoch, np.float32)
    )
    return {"latest": newest.name, "ok": bool(ok)}


def _saves(directory: str, pause: float, seed: int, target: int) -> None:
    rng = random.Random(seed)
    mid_save = rounds = 0
    while mid_save < target and rounds < 4 * target:
        rounds += 1
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child is killed
            os.close(r)
            try:
                _saving_child(directory, pause, w)
            finally:
                os._exit(1)
        os.close(w)
        os.read(r, 1)
        os.close(r)
        time.sleep(rng.uniform(0.2, 3.0) * pause)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        temps = [p for p in os.listdir(directory) if ".tmp-" in p]
        report = {"round": rounds, "mid_save": bool(temps), "temps": temps}
        try:
            report.update(_check_newest(directory))
        except Exception as e:  # noqa: BLE001 - reported to the test
            report.update(latest=None, ok=False, error=f"{type(e).__name__}: {e}")
        mid_save += report["mid_save"]
        print(json.dumps(report), flush=True)
    from jax._src import xla_bridge

    print(json.dumps({"parent_backend": xla_bridge.backends_are_initialized()}))


def main(argv: list[str]) -> None:
    mode = argv[0]
    if mode == "hash":
        import jax

        print("devices", jax.device_count(), flush=True)
        print("hash", result_hash(reference()), flush=True)
    elif mode == "train":
        _train(argv[1], float(argv[2]))
    elif mode == "saves":
        _saves(argv[1], float(argv[2]), int(argv[3]), int(argv[4]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
