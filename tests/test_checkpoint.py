"""gdjax.checkpoint: bitwise round trips and resumes, corruption, mismatches, kills."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import _train_script as script
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import least_squares_problem, ls_loss, zeros_params

import gdjax as gd
from gdjax import checkpoint
from gdjax.checkpoint import CheckpointWarning, CorruptCheckpointError
from gdjax.errors import CheckpointError

KEY = jax.random.key(0)
SCRIPT = Path(script.__file__)


def _leaves_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(la, lb, strict=True):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


def _run(epochs=12, **kw):
    data, *_ = least_squares_problem(n=30)
    args = (ls_loss, zeros_params(4), data, gd.sgd(0.05, momentum=0.9))
    kwargs = dict(
        key=KEY, epochs=epochs, regime=gd.minibatch(8), tol=1e-4, patience=100, **kw
    )
    return args, kwargs


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A folder with checkpoints at epochs 4, 8, 12 of a run, and its states."""
    args, kwargs = _run()
    folder = tmp_path_factory.mktemp("saved")
    states = {}

    def keep_state(s):
        states[int(s.epoch)] = s

    save = checkpoint.saver(folder, every=4, keep=None, key=KEY, data=args[2])
    r = gd.fit(
        *args, chunk_epochs=4, callback=lambda s: save(s) or keep_state(s), **kwargs
    )
    checkpoint.save(folder, r, key=KEY, data=args[2], keep=None)
    states[int(r.epoch)] = r
    like = gd.loop.prepare(*args, **kwargs).state
    return folder, states, like, args, kwargs


def _copy(folder, tmp_path):
    out = tmp_path / "copy"
    out.mkdir()
    for p in checkpoint.checkpoints(folder):
        (out / p.name).write_bytes(p.read_bytes())
    return out


# ------------------------------------------------------------------ round trips


def test_round_trip_is_bitwise_for_every_leaf_kind(tmp_path, x64):
    args, kwargs = _run(epochs=3)
    r = gd.fit(*args, **kwargs)
    # Typed keys, bfloat16, float64 and bool leaves in the optimizer state.
    odd = (
        jax.random.split(jax.random.key(4), 3),
        jnp.arange(3, dtype=jnp.bfloat16),
        jnp.linspace(0, 1, 5, dtype=jnp.float64),
        jnp.array([True, False]),
    )
    state = r._replace(opt_state=(r.opt_state, odd))
    path = checkpoint.save(tmp_path, state, key=jax.random.key(9))
    assert path.name == "ckpt-000000003.npz"
    back = checkpoint.restore(path, state, key=jax.random.key(9))
    _leaves_equal(back, state)
    # Same state, same bytes; np.load reads the file.
    again = checkpoint.save(tmp_path / "b", state, key=jax.random.key(9))
    assert again.read_bytes() == path.read_bytes()
    with np.load(path) as z:
        assert "manifest.json" in z.files
    manifest = checkpoint.read_manifest(path)
    assert manifest["epoch"] == 3 and manifest["steps"] == int(r.steps)
    assert manifest["fingerprint"] == checkpoint.fingerprint()
    assert manifest["fingerprint"]["x64"] is True


def test_restore_into_abstract_like(saved):
    folder, states, like, *_ = saved
    abstract = jax.eval_shape(lambda s: s, like)
    _leaves_equal(checkpoint.restore(folder, abstract), states[12])


def test_resume_equals_uninterrupted_run_bitwise(tmp_path):
    args, kwargs = _run(epochs=14)
    reference = gd.fit(*args, **kwargs)
    save = checkpoint.saver(tmp_path, every=3, key=KEY)

    class Crash(Exception):
        pass

    def crash_after_9(state):
        save(state)
        if int(state.epoch) >= 9:
            raise Crash

    with pytest.raises(Crash):
        gd.fit(*args, chunk_epochs=3, callback=crash_after_9, **kwargs)
    like = gd.loop.prepare(*args, **kwargs).state
    state = checkpoint.restore(tmp_path, like, key=KEY)
    assert int(state.epoch) == 9
    _leaves_equal(gd.fit(*args, resume=state, **kwargs), reference)
    # fit_resumable picks it up from the same folder and finishes the run.
    _leaves_equal(
        checkpoint.fit_resumable(*args, directory=tmp_path, every=3, **kwargs),
        reference,
    )
    assert (
        int(checkpoint.read_manifest(checkpoint.checkpoints(tmp_path)[-1])["epoch"])
        == 14
    )
    # Called again, a finished run comes back as it was.
    _leaves_equal(
        checkpoint.fit_resumable(*args, directory=tmp_path, every=3, **kwargs),
        reference,
    )


def test_fit_resumable_saves_a_run_that_fails(tmp_path):
    data, *_ = least_squares_problem(n=30)
    x, y = data
    x = x.at[17, 0].set(jnp.nan)
    args = (ls_loss, zeros_params(4), (x, y), gd.sgd(0.05))
    kw = dict(
        key=KEY,
        epochs=6,
        regime=gd.minibatch(8, shuffle=False),
        check_finite=False,
        raise_on_nonfinite=True,
    )
    with pytest.raises(gd.NonFiniteError) as info:
        checkpoint.fit_resumable(*args, directory=tmp_path, every=2, **kw)
    like = gd.loop.prepare(
        *args, **{k: v for k, v in kw.items() if k != "raise_on_nonfinite"}
    ).state
    _leaves_equal(checkpoint.restore(tmp_path, like), info.value.result)


# ------------------------------------------------------------------ corruption


def _member_data_offset(path: Path, member: str) -> int:
    """Offset in the file of the first data byte of a member's array."""
    raw = path.read_bytes()
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    start = info.header_offset
    name_len = int.from_bytes(raw[start + 26 : start + 28], "little")
    extra_len = int.from_bytes(raw[start + 28 : start + 30], "little")
    payload = start + 30 + name_len + extra_len
    if member.endswith(".npy"):
        header_len = int.from_bytes(raw[payload + 8 : payload + 10], "little")
        return payload + 10 + header_len
    return payload


def _flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x10
    path.write_bytes(bytes(raw))


def _member_of(path: Path, leaf: str) -> str:
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    return next(r["member"] for r in manifest["leaves"] if r["path"] == leaf)


def _corrupt(kind: str, path: Path) -> str:
    """Damage ``path``; returns a regex for the cause the error must name."""
    raw = path.read_bytes()
    if kind == "empty":
        path.write_bytes(b"")
        return r"empty \(0 bytes\)"
    if kind.startswith("truncated"):
        cut = {
            "truncated-half": len(raw) // 2,
            "truncated-last-byte": len(raw) - 1,
            "truncated-trailer": len(raw) - 40,
            "truncated-10": 10,
        }[kind]
        path.write_bytes(raw[:cut])
        return r"truncated"
    if kind == "bitflip-array":
        member = _member_of(path, "state.params['w']")
        _flip(path, _member_data_offset(path, member) + 1)
        return rf"array state\.params\['w'\] \({member}\) is corrupt"
    if kind == "bitflip-manifest":
        _flip(path, _member_data_offset(path, "manifest.json") + 20)
        return r"manifest\.json is corrupt"
    if kind == "bitflip-checksum":
        _flip(path, len(raw) - 1)
        return r"sha256 does not match"
    if kind == "missing-array":
        member = _member_of(path, "state.opt_state.count")
        with zipfile.ZipFile(path) as zf:
            kept = [(i, zf.read(i)) for i in zf.infolist() if i.filename != member]
        with zipfile.ZipFile(path, "w") as zf:
            for info, payload in kept:
                zf.writestr(info, payload)
        return rf"array state\.opt_state\.count \({member}\) is missing"
    raise AssertionError(kind)


CORRUPTIONS = [
    "empty",
    "truncated-half",
    "truncated-last-byte",
    "truncated-trailer",
    "truncated-10",
    "bitflip-array",
    "bitflip-manifest",
    "bitflip-checksum",
    "missing-array",
]


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corrupt_file_raises_naming_file_and_cause(kind, saved, tmp_path):
    folder, _, like, *_ = saved
    work = _copy(folder, tmp_path)
    newest = checkpoint.checkpoints(work)[-1]
    cause = _corrupt(kind, newest)
    with pytest.raises(CorruptCheckpointError, match=cause) as info:
        checkpoint.restore(work, like)
    assert str(newest) in str(info.value)
    assert isinstance(info.value, CheckpointError)


def test_any_flipped_byte_is_caught(saved, tmp_path):
    folder, *_ = saved
    source = checkpoint.checkpoints(folder)[-1]
    raw = source.read_bytes()
    rng = np.random.default_rng(0)
    target = tmp_path / source.name
    for offset in rng.choice(len(raw), size=60, replace=False):
        damaged = bytearray(raw)
        damaged[offset] ^= 1 << int(rng.integers(8))
        target.write_bytes(bytes(damaged))
        with pytest.raises(CheckpointError, match=str(target)):
            checkpoint.read_manifest(target)


def test_restore_latest_falls_back_with_a_warning(saved, tmp_path):
    folder, states, like, *_ = saved
    work = _copy(folder, tmp_path)
    found = checkpoint.checkpoints(work)
    assert [p.name for p in found][-2:] == ["ckpt-000000008.npz", "ckpt-000000012.npz"]
    _corrupt("truncated-half", found[-1])
    with pytest.raises(CorruptCheckpointError):
        checkpoint.restore(work, like)
    with pytest.warns(
        CheckpointWarning,
        match=r"(?s)restored ckpt-000000008\.npz, skipping 1 newer.*"
        r"ckpt-000000012\.npz.*truncated",
    ):
        back = checkpoint.restore_latest(work, like)
    _leaves_equal(back, states[8])
    for p in found:
        _corrupt("empty", p)
    with pytest.raises(CorruptCheckpointError, match="every checkpoint"):
        checkpoint.restore_latest(work, like)


def test_stale_temp_files_are_ignored_then_removed(saved, tmp_path):
    folder, states, like, *_ = saved
    work = _copy(folder, tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = work / f".ckpt-000000016.npz.tmp-{dead.pid}"
    stale.write_bytes(b"partial")
    _leaves_equal(checkpoint.restore(work, like), states[12])
    checkpoint.save(work, states[12], keep=None)
    assert not stale.exists()


# ------------------------------------------------------------------ mismatches


def _mismatches(states, like, args):
    """(name, like, restore kwargs, regex of the listed difference)."""
    params = like.params
    return [
        (
            "tree",
            like._replace(params={**params, "extra": jnp.zeros(2)}),
            {},
            r"state\.params\['extra'\]: not in the checkpoint",
        ),
        (
            "dtype",
            like._replace(params={"w": params["w"].astype(jnp.float16)}),
            {},
            r"state\.params\['w'\]: dtype float32 in the checkpoint, float16 here",
        ),
        (
            "shape",
            like._replace(params={"w": jnp.zeros(5)}),
            {},
            r"state\.params\['w'\]: shape \(4,\) in the checkpoint, \(5,\) here",
        ),
        (
            "data values",
            like,
            dict(data=(args[2][0] + 1, args[2][1])),
            r"data\[0\]: same shape and dtype but different values",
        ),
        (
            "data shape",
            like,
            dict(data=(args[2][0][:-1], args[2][1])),
            r"data\[0\]: float32\(30, 4\) in the checkpoint, float32\(29, 4\) here",
        ),
        (
            "key",
            like,
            dict(key=jax.random.key(1)),
            r"key: threefry2x32 \[0, 0\] in the checkpoint, threefry2x32 \[0, 1\] here",
        ),
    ]


@pytest.mark.parametrize(
    "case", range(6), ids=["tree", "dtype", "shape", "data values", "data shape", "key"]
)
def test_mismatch_is_refused_listing_it_unless_allowed(case, saved):
    folder, states, like, args, _ = saved
    name, other, kwargs, listed = _mismatches(states, like, args)[case]
    with pytest.raises(CheckpointError, match=listed) as info:
        checkpoint.restore(folder, other, **kwargs)
    assert "does not match this run" in str(info.value)
    assert "allow_mismatch=True" in str(info.value)
    with pytest.warns(CheckpointWarning, match=listed):
        back = checkpoint.restore(folder, other, allow_mismatch=True, **kwargs)
    if name == "dtype":  # cast to the dtype asked for
        assert back.params["w"].dtype == jnp.float16
        np.testing.assert_array_equal(
            back.params["w"], np.asarray(states[12].params["w"]).astype(np.float16)
        )
    elif name == "tree":  # what fits is loaded, the rest keeps like's value
        np.testing.assert_array_equal(back.params["w"], states[12].params["w"])
        np.testing.assert_array_equal(back.params["extra"], np.zeros(2))
    elif name == "shape":
        np.testing.assert_array_equal(back.params["w"], np.zeros(5))
        np.testing.assert_array_equal(back.history.loss, states[12].history.loss)
    else:
        _leaves_equal(back, states[12])


def test_config_mismatch_is_listed(tmp_path):
    args, kwargs = _run(epochs=4)
    r = gd.fit(*args, **kwargs)
    checkpoint.save(tmp_path, r, config={"lr": 0.05, "model": "ls", "depth": 2})
    with pytest.raises(CheckpointError) as info:
        checkpoint.restore(tmp_path, r, config={"lr": 0.1, "model": "ls", "width": 3})
    text = str(info.value)
    assert "config['lr']: 0.05 in the checkpoint, 0.1 here" in text
    assert "config['depth']: 2 in the checkpoint, absent here" in text
    assert "config['width']: absent in the checkpoint, 3 here" in text
    assert "model" not in text


def test_fit_resumable_refuses_another_run(tmp_path):
    args, kwargs = _run(epochs=4)
    checkpoint.fit_resumable(*args, directory=tmp_path, every=2, **kwargs)
    other_lr = (args[0], args[1], args[2], gd.sgd(0.1, momentum=0.9))
    with pytest.raises(
        CheckpointError, match=r"transform_hyperparams'\]\['learning_rate'\]: 0\.05"
    ):
        checkpoint.fit_resumable(*other_lr, directory=tmp_path, every=2, **kwargs)
    with pytest.raises(CheckpointError, match=r"config\['tol'\]: 0\.0001 in the"):
        checkpoint.fit_resumable(
            *args, directory=tmp_path, every=2, **{**kwargs, "tol": 1e-3}
        )
    x, y = args[2]
    with pytest.raises(CheckpointError, match=r"data\[1\]: same shape"):
        checkpoint.fit_resumable(
            args[0], args[1], (x, y + 1), args[3], directory=tmp_path, every=2, **kwargs
        )
    with pytest.raises(CheckpointError, match=r"key: "):
        checkpoint.fit_resumable(
            *args, directory=tmp_path, every=2, **{**kwargs, "key": jax.random.key(1)}
        )
    # Numbers a transform closes over count too: a flag of gd.sgd, optax's lr.
    nesterov = (*args[:3], gd.sgd(0.05, momentum=0.9, nesterov=True))
    with pytest.raises(CheckpointError, match=r"config\['transform'\].*True"):
        checkpoint.fit_resumable(*nesterov, directory=tmp_path, every=2, **kwargs)
    plain = (*args[:3], optax.sgd(0.05, momentum=0.9))
    checkpoint.fit_resumable(*plain, directory=tmp_path / "optax", every=2, **kwargs)
    with pytest.raises(
        CheckpointError,
        match=r"step_size'\]: -0\.05 in the "
        r"checkpoint, -0\.1 here",
    ):
        checkpoint.fit_resumable(
            *args[:3],
            optax.sgd(0.1, momentum=0.9),
            directory=tmp_path / "optax",
            every=2,
            **kwargs,
        )


# ------------------------------------------------------------------ keep-last-K


def test_keep_last_k_and_never_before_the_new_one_is_whole(tmp_path, monkeypatch):
    args, kwargs = _run(epochs=12)
    seen = []

    def check(stage):
        if stage == "rename":  # the new file is complete but not yet in place
            names = [p.name for p in checkpoint.checkpoints(tmp_path)]
            temps = [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]
            seen.append((names, temps))

    monkeypatch.setattr(checkpoint, "_pause", check)
    save = checkpoint.saver(tmp_path, every=2, keep=2)
    gd.fit(*args, chunk_epochs=2, callback=save, **kwargs)
    assert [p.name for p in save.saved] == [
        f"ckpt-{e:09d}.npz" for e in (2, 4, 6, 8, 10)
    ]
    assert [p.name for p in checkpoint.checkpoints(tmp_path)] == [
        "ckpt-000000008.npz",
        "ckpt-000000010.npz",
    ]
    # At each rename the previous K are all still there.
    assert [len(names) for names, _ in seen] == [0, 1, 2, 2, 2]
    assert all(len(temps) == 1 for _, temps in seen)
    assert seen[-1][0] == ["ckpt-000000006.npz", "ckpt-000000008.npz"]


def test_saver_every_counts_epochs(tmp_path):
    args, kwargs = _run(epochs=12)
    save = checkpoint.saver(tmp_path, every=4, keep=None)
    gd.fit(*args, chunk_epochs=2, callback=save, **kwargs)
    assert [p.name for p in save.saved] == [
        "ckpt-000000002.npz",
        "ckpt-000000006.npz",
        "ckpt-000000010.npz",
    ]


# ------------------------------------------------------------------ kills


def _env(cache: Path) -> dict:
    env = dict(os.environ)
    root = str(Path(gd.__file__).parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    env["JAX_COMPILATION_CACHE_DIR"] = str(cache)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    return env


@pytest.mark.slow
def test_killed_training_resumes_bitwise(tmp_path):
    """SIGKILL a training run at seeded random times, resume, compare bits."""
    reference = script.result_hash(script.reference())
    loss, params, data, tx, kwargs = script.problem()
    like = gd.loop.prepare(loss, params, data, tx, **kwargs).state
    env = _env(tmp_path / "jax-cache")
    folder = tmp_path / "run"
    rng = np.random.default_rng(2024)
    epochs, mid_save = [], 0
    for _ in range(6):
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), "train", str(folder), "0.03"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            text=True,
        )
        if proc.stdout.readline().strip() == "saving":  # else it has finished
            time.sleep(rng.uniform(0.05, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        if proc.returncode == 0:  # finished before the kill
            break
        if checkpoint.checkpoints(folder):
            mid_save += any(".tmp-" in p.name for p in folder.iterdir())
            # The newest checkpoint is whole after every kill.
            epochs.append(
                int(checkpoint.restore(folder, like, key=kwargs["key"]).epoch)
            )
        if len(epochs) >= 3:
            break
    assert len(epochs) >= 2 and epochs == sorted(epochs) and epochs[-1] < script.EPOCHS
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "train", str(folder), "0"],
        capture_output=True,
        env=env,
        text=True,
        check=True,
    )
    assert done.stdout.split()[-1] == reference, (epochs, mid_save)


@pytest.mark.slow
def test_twenty_kills_during_saves_leave_a_loadable_checkpoint(tmp_path):
    folder = tmp_path / "saves"
    folder.mkdir()
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "saves", str(folder), "0.02", "7", "20"],
        capture_output=True,
        env=_env(tmp_path / "jax-cache"),
        text=True,
        check=True,
        timeout=120,
    )
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    *rounds, last = lines
    assert last == {"parent_backend": False}
    assert sum(r["mid_save"] for r in rounds) >= 20
    bad = [r for r in rounds if not r["ok"]]
    assert not bad, bad
    # The folder restores strictly in this process too.
    newest = checkpoint.checkpoints(folder)[-1]
    epoch = int(newest.name[5:-4])
    like = script.host_state(0)
    _leaves_equal(
        checkpoint.restore(folder, like),
        jax.tree.map(jnp.asarray, script.host_state(epoch)),
    )
