"""gdjax.checkpoint: bitwise round trips and resumes, corruption, identity, kills."""

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
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


def _run(epochs=12, **kw):
    data, *_ = least_squares_problem(n=30)
    args = (ls_loss, zeros_params(4), data, gd.sgd(0.05, momentum=0.9))
    kwargs = dict(
        key=KEY, epochs=epochs, regime=gd.minibatch(6), tol=1e-4, patience=100, **kw
    )
    return args, kwargs


def _with_opt_state(result, opt_state):
    return gd.FitResult(result.state._replace(opt_state=opt_state))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A folder with checkpoints at epochs 4, 8, 12 of a run, and its results."""
    args, kwargs = _run()
    folder = tmp_path_factory.mktemp("saved")
    results = {}
    save = checkpoint.saver(folder, every=4, keep=None)

    def on_chunk(r):
        results[int(r.epoch)] = r
        return save(r)

    gd.fit(*args, chunk_epochs=4, callback=on_chunk, **kwargs)
    assert [p.name for p in save.saved] == [f"ckpt-{e:09d}.npz" for e in (4, 8, 12)]
    return folder, results, args, kwargs


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
    result = _with_opt_state(r, (r.opt_state, odd))
    path = checkpoint.save(tmp_path, result, identity={"name": "odd"})
    assert path.name == "ckpt-000000003.npz"
    back = checkpoint.restore(path, result, identity={"name": "odd"})
    assert isinstance(back, gd.FitResult)
    _leaves_equal(back, result)
    # Same result, same bytes; np.load reads the file.
    again = checkpoint.save(tmp_path / "b", result, identity={"name": "odd"})
    assert again.read_bytes() == path.read_bytes()
    with np.load(path) as z:
        assert "manifest.json" in z.files
    manifest = checkpoint.read_manifest(path)
    assert manifest["epoch"] == 3 and manifest["steps"] == int(r.steps)
    assert manifest["identity"] == {"name": "odd"}
    assert manifest["versions"] == checkpoint.fingerprint()
    assert manifest["versions"]["x64"] is True


def test_restore_into_abstract_like(saved):
    folder, results, *_ = saved
    abstract = jax.eval_shape(lambda r: r, results[12])
    assert isinstance(jax.tree.leaves(abstract)[0], jax.ShapeDtypeStruct)
    _leaves_equal(checkpoint.restore(folder, abstract), results[12])


def test_resume_equals_uninterrupted_run_bitwise(tmp_path):
    args, kwargs = _run(epochs=14)
    reference = gd.fit(*args, **kwargs)
    save = checkpoint.saver(tmp_path, every=3)

    class Crash(Exception):
        pass

    def crash_after_9(result):
        save(result)
        if int(result.epoch) >= 9:
            raise Crash

    with pytest.raises(Crash):
        gd.fit(*args, chunk_epochs=3, callback=crash_after_9, **kwargs)
    back = checkpoint.restore(tmp_path, reference)
    assert int(back.epoch) == 9 and back.stopped_by == gd.Status.RUNNING
    _leaves_equal(gd.fit(*args, resume=back, **kwargs), reference)


def test_fit_resumable_continues_a_killed_run_and_returns_a_finished_one(
    tmp_path, compiles
):
    args, kwargs = _run(epochs=14)
    reference = gd.fit(*args, **kwargs)

    class Crash(Exception):
        pass

    def crash(result):
        if int(result.epoch) >= 6:
            raise Crash

    with pytest.raises(Crash):
        checkpoint.fit_resumable(
            *args, directory=tmp_path, every=3, callback=crash, **kwargs
        )
    assert [p.name for p in checkpoint.checkpoints(tmp_path)] == [
        "ckpt-000000003.npz",
        "ckpt-000000006.npz",
    ]
    r = checkpoint.fit_resumable(*args, directory=tmp_path, every=3, **kwargs)
    _leaves_equal(r, reference)
    assert checkpoint.read_manifest(checkpoint.checkpoints(tmp_path)[-1])["epoch"] == 14
    # Called again, a finished run comes back as saved, running nothing.
    before = [p.stat().st_mtime_ns for p in checkpoint.checkpoints(tmp_path)]
    with compiles() as c:
        again = checkpoint.fit_resumable(*args, directory=tmp_path, every=3, **kwargs)
    _leaves_equal(again, reference)
    assert c.count == 0
    assert [p.stat().st_mtime_ns for p in checkpoint.checkpoints(tmp_path)] == before


def test_fit_resumable_extends_the_budget_bitwise(tmp_path):
    args, kwargs = _run(epochs=10)
    reference = gd.fit(*args, **kwargs)
    short = checkpoint.fit_resumable(
        *args, directory=tmp_path, every=2, **{**kwargs, "epochs": 6}
    )
    assert int(short.epoch) == 6 and short.stopped_by == gd.Status.MAX_EPOCHS
    longer = checkpoint.fit_resumable(*args, directory=tmp_path, every=2, **kwargs)
    _leaves_equal(longer, reference)
    assert len(longer.history.loss) == 10
    # A budget below what the checkpoint has run is refused.
    with pytest.raises(CheckpointError, match=r"has run 10 epochs, more than epochs=8"):
        checkpoint.fit_resumable(
            *args, directory=tmp_path, every=2, **{**kwargs, "epochs": 8}
        )


def test_fit_resumable_keeps_a_criterion_stop_and_resumes_a_callback_stop(tmp_path):
    (x, y), *_ = least_squares_problem(n=30, noise=0.0)
    args = (ls_loss, zeros_params(4), (x, y), gd.sgd(0.1))
    kwargs = dict(key=KEY, epochs=200, target_loss=1e-3)
    reference = gd.fit(*args, **kwargs)
    assert reference.stopped_by == gd.Status.TARGET_LOSS
    stop_at = int(reference.epoch) // 2
    r = checkpoint.fit_resumable(
        *args,
        directory=tmp_path / "a",
        every=4,
        callback=lambda r: int(r.epoch) >= stop_at,
        **kwargs,
    )
    assert r.stopped_by == gd.Status.CALLBACK and int(r.epoch) < int(reference.epoch)
    # The callback's stop is saved; the next call goes on to the criterion.
    assert checkpoint.read_manifest(checkpoint.checkpoints(tmp_path / "a")[-1])[
        "epoch"
    ] == int(r.epoch)
    done = checkpoint.fit_resumable(*args, directory=tmp_path / "a", every=4, **kwargs)
    _leaves_equal(done, reference)
    # A run its criterion stopped is finished, whatever the budget now.
    again = checkpoint.fit_resumable(
        *args, directory=tmp_path / "a", every=4, **{**kwargs, "epochs": 400}
    )
    _leaves_equal(again, reference)


def test_fit_resumable_saves_a_run_that_fails(tmp_path):
    data, *_ = least_squares_problem(n=30)
    x, y = data
    x = x.at[17, 0].set(jnp.nan)
    args = (ls_loss, zeros_params(4), (x, y), gd.sgd(0.05))
    kw = dict(
        key=KEY,
        epochs=6,
        regime=gd.minibatch(6, shuffle=False),
        check_finite=False,
        raise_on_nonfinite=True,
    )
    with pytest.raises(gd.NonFiniteError) as info:
        checkpoint.fit_resumable(*args, directory=tmp_path, every=2, **kw)
    assert info.value.result.failed
    _leaves_equal(checkpoint.restore(tmp_path, info.value.result), info.value.result)
    # Called again: the same failure, from the checkpoint.
    with pytest.raises(gd.NonFiniteError) as again:
        checkpoint.fit_resumable(*args, directory=tmp_path, every=2, **kw)
    assert str(again.value) == str(info.value)
    _leaves_equal(again.value.result, info.value.result)


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
    folder, results, *_ = saved
    work = _copy(folder, tmp_path)
    newest = checkpoint.checkpoints(work)[-1]
    cause = _corrupt(kind, newest)
    with pytest.raises(CorruptCheckpointError, match=cause) as info:
        checkpoint.restore(work, results[12])
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
    folder, results, *_ = saved
    like = results[12]
    work = _copy(folder, tmp_path)
    found = checkpoint.checkpoints(work)
    assert [p.name for p in found][-2:] == ["ckpt-000000008.npz", "ckpt-000000012.npz"]
    _corrupt("truncated-half", found[-1])
    with pytest.raises(CorruptCheckpointError):
        checkpoint.restore(work, like)
    with pytest.warns(
        CheckpointWarning,
        match=r"restored ckpt-000000008\.npz, skipping 1 newer.*"
        r"ckpt-000000012\.npz.*truncated",
    ):
        back = checkpoint.restore_latest(work, like)
    _leaves_equal(back, results[8])
    for p in found:
        _corrupt("empty", p)
    with pytest.raises(CorruptCheckpointError, match="every checkpoint"):
        checkpoint.restore_latest(work, like)


def test_stale_temp_files_are_ignored_then_removed(saved, tmp_path):
    folder, results, *_ = saved
    work = _copy(folder, tmp_path)
    stale = work / ".ckpt-000000016.npz.tmp-999999"
    stale.write_bytes(b"partial")
    assert checkpoint.checkpoints(work)[-1].name == "ckpt-000000012.npz"
    _leaves_equal(checkpoint.restore(work, results[12]), results[12])
    checkpoint.save(work, results[12], keep=None)
    assert not stale.exists()


def test_versions_differing_warn(saved, monkeypatch):
    folder, results, *_ = saved
    here = checkpoint.fingerprint()
    monkeypatch.setattr(checkpoint, "fingerprint", lambda: {**here, "jax": "0.0.1"})
    with pytest.warns(CheckpointWarning, match=r"other versions \(jax '0\.10"):
        checkpoint.restore(folder, results[12])


# ------------------------------------------------------------------ mismatches


def _one_line_refusal(match, fn, *args, **kwargs):
    with pytest.raises(CheckpointError, match=match) as info:
        fn(*args, **kwargs)
    text = str(info.value)
    assert "\n" not in text and "is of another run" in text
    return text


@pytest.mark.parametrize(
    "name, change, listed",
    [
        (
            "extra leaf",
            lambda p: {**p, "extra": jnp.zeros(2)},
            r"state\.params\['extra'\] absent -> 'float32\[2\]'",
        ),
        (
            "dtype",
            lambda p: {"w": p["w"].astype(jnp.float16)},
            r"state\.params\['w'\] 'float32\[4\]' -> 'float16\[4\]'",
        ),
        (
            "shape",
            lambda p: {"w": jnp.zeros(5)},
            r"state\.params\['w'\] 'float32\[4\]' -> 'float32\[5\]'",
        ),
    ],
)
def test_restore_refuses_another_structure(name, change, listed, saved):
    folder, results, *_ = saved
    r = results[12]
    other = gd.FitResult(r.state._replace(params=change(r.params)))
    _one_line_refusal(listed, checkpoint.restore, folder, other)


def test_fit_resumable_refuses_another_run_in_one_line(tmp_path):
    args, kwargs = _run(epochs=4)
    loss, params, (x, y), tx = args
    folder = tmp_path / "run"
    checkpoint.fit_resumable(
        *args, directory=folder, every=2, config={"width": 4}, **kwargs
    )

    def again(*a, config={"width": 4}, **changes):  # noqa: B006 - read only
        return checkpoint.fit_resumable(
            *(a or args),
            directory=folder,
            every=2,
            config=config,
            **{**kwargs, **changes},
        )

    cases = [
        (
            r"hyperparams\.learning_rate 0\.05 -> 0\.1",
            (loss, params, (x, y), gd.sgd(0.1, momentum=0.9)),
            {},
        ),
        (r"hyperparams\.momentum 0\.9 -> 0\.5", (), {"hyperparams": {"momentum": 0.5}}),
        (r"stopping\.tol 0\.0001 -> 0\.001", (), {"tol": 1e-3}),
        (r"stopping\.max_steps None -> 50", (), {"max_steps": 50}),
        (r"regime\.batch_size 6 -> 5", (), {"regime": gd.minibatch(5)}),
        (r"data\.sha256 '[0-9a-f]{12}.*' -> '", (loss, params, (x, y + 1), tx), {}),
        (
            r"data\[0\] 'float32\[30,4\]' -> 'float32\[24,4\]'",
            (loss, params, (x[:-6], y[:-6]), tx),
            {},
        ),
        (
            r"key 'threefry2x32:\[0 0\]' -> 'threefry2x32:\[0 1\]'",
            (),
            {"key": jax.random.key(1)},
        ),
        (r"config\.width 4 -> 8", (), {"config": {"width": 8}}),
        (r"config\.depth absent -> 2", (), {"config": {"width": 4, "depth": 2}}),
        (
            r"loss 'helpers\.ls_loss' -> 'test_checkpoint\..*\.<lambda>'",
            (lambda p, b: ls_loss(p, b), params, (x, y), tx),
            {},
        ),
    ]
    for listed, a, changes in cases:
        _one_line_refusal(listed, again, *a, **changes)
    # Callables in the options count by their qualified name only.
    _one_line_refusal(
        r"stopping\.until None -> '.*_stop_never'",
        again,
        until=_stop_never,
    )
    # Several differences, one line.
    text = _one_line_refusal(
        r"stopping\.tol .*; stopping\.max_steps|stopping\.max_steps .*; stopping\.tol",
        again,
        tol=1e-3,
        max_steps=50,
    )
    assert text.count(";") == 1
    # Numbers a transform closes over are not seen (no closure walking):
    # optax.sgd's learning rate is a constant of its update; config says it.
    plain = (loss, params, (x, y), optax.sgd(0.05, momentum=0.9))
    other = (loss, params, (x, y), optax.sgd(0.1, momentum=0.9))
    folder = tmp_path / "optax"
    checkpoint.fit_resumable(
        *plain, directory=folder, every=2, config={"lr": 0.05}, **kwargs
    )
    _one_line_refusal(
        r"config\.lr 0\.05 -> 0\.1",
        checkpoint.fit_resumable,
        *other,
        directory=folder,
        every=2,
        config={"lr": 0.1},
        **kwargs,
    )


def _stop_never(history, epoch):
    del history, epoch
    return False


# ------------------------------------------------------------------ keep-last-K


def test_keep_last_k_and_never_before_the_new_one_is_whole(tmp_path, monkeypatch):
    args, kwargs = _run(epochs=12)
    seen = []
    replace = os.replace

    def spy(src, dst):  # the new file is complete but not yet in place
        names = [p.name for p in checkpoint.checkpoints(tmp_path)]
        temps = [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]
        seen.append((names, temps, Path(src).stat().st_size))
        return replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    save = checkpoint.saver(tmp_path, every=2, keep=2)
    gd.fit(*args, chunk_epochs=2, callback=save, **kwargs)
    monkeypatch.undo()
    assert [p.name for p in save.saved] == [
        f"ckpt-{e:09d}.npz" for e in (2, 4, 6, 8, 10, 12)
    ]
    assert [p.name for p in checkpoint.checkpoints(tmp_path)] == [
        "ckpt-000000010.npz",
        "ckpt-000000012.npz",
    ]
    # At each rename the previous K are all still there, beside one whole temp.
    assert [len(names) for names, _, _ in seen] == [0, 1, 2, 2, 2, 2]
    assert all(len(temps) == 1 for _, temps, _ in seen)
    assert seen[-1][0] == ["ckpt-000000008.npz", "ckpt-000000010.npz"]
    sizes = {p.stat().st_size for p in checkpoint.checkpoints(tmp_path)}
    assert {size for *_, size in seen[-2:]} == sizes


def test_saver_every_counts_epochs_and_saves_the_end(tmp_path):
    args, kwargs = _run(epochs=12)
    save = checkpoint.saver(tmp_path, every=4, keep=None)
    gd.fit(*args, chunk_epochs=2, callback=save, **kwargs)
    assert [p.name for p in save.saved] == [f"ckpt-{e:09d}.npz" for e in (2, 6, 10, 12)]


# ------------------------------------------------------------------ orbax


def test_orbax_checkpoint_manager_saves_and_resumes_a_fit_result(tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    args, kwargs = _run(epochs=12)
    reference = gd.fit(*args, **kwargs)
    with ocp.CheckpointManager(
        tmp_path / "orbax", options=ocp.CheckpointManagerOptions(max_to_keep=2)
    ) as manager:

        def on_chunk(result):
            manager.save(int(result.epoch), args=ocp.args.StandardSave(result))
            return int(result.epoch) >= 8  # "killed" after epoch 8

        stopped = gd.fit(*args, chunk_epochs=4, callback=on_chunk, **kwargs)
        assert stopped.stopped_by == gd.Status.CALLBACK
        manager.wait_until_finished()
        assert manager.latest_step() == 8
        template = jax.eval_shape(lambda r: r, reference)
        back = manager.restore(8, args=ocp.args.StandardRestore(template))
    assert isinstance(back, gd.FitResult) and int(back.epoch) == 8
    _leaves_equal(gd.fit(*args, resume=back, **kwargs), reference)


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
    reference = script.reference()
    env = _env(tmp_path / "jax-cache")
    folder = tmp_path / "run"
    rng = np.random.default_rng(2024)
    epochs, mid_save = [], 0
    for _ in range(8):
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
            epochs.append(int(checkpoint.restore(folder, reference).epoch))
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
    assert done.stdout.split()[-1] == script.result_hash(reference), (epochs, mid_save)


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
    # The folder restores in this process too, bit for bit.
    newest = checkpoint.checkpoints(folder)[-1]
    epoch = int(newest.name[5:-4])
    _leaves_equal(
        checkpoint.restore(folder, script.host_state(0)),
        jax.tree.map(jnp.asarray, script.host_state(epoch)),
    )


def test_fit_resumable_is_fit_with_checkpoints():
    """Its keywords are gd.fit's, plus the checkpoint ones (none drift)."""
    import inspect

    fit = inspect.signature(gd.fit).parameters
    resumable = inspect.signature(checkpoint.fit_resumable).parameters
    assert set(resumable) - set(fit) == {"directory", "every", "keep", "config"}
    assert set(fit) - set(resumable) == {"resume"}
