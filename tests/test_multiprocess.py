"""Multi-process runs on JAX's distributed runtime, on this machine.

Each test starts real processes (``jax.distributed.initialize`` with one
coordinator on a free loopback port, gloo CPU collectives, 1 or 2 simulated
CPU devices per process) running ``examples/multiprocess_launch.py`` as the
docs tell a user to run it on each host (rank and count from the
environment), and compares what they computed with single-process runs made
here, in the test process (one device):

* the sweep's members (spread over every device of every process, gathered
  to every process) equal the single-process sweep **bit for bit** on this
  problem (each device runs the same member program on its share of the
  members; nothing is summed across devices);
* data-parallel descent (each process loads only its rows) equals ``gd.fit``
  to a few float32 ulps (``rtol=1e-6``): each batch's gradient and loss are
  sums over devices, taken in gloo's all-reduce order instead of one device's;
* checkpoints: process 0 writes, every process resumes, and the resumed run
  equals the uninterrupted one bit for bit, after a truncation of the
  checkpoints and after a process is killed with SIGKILL; the survivors
  report the lost process at once (a bounded wait, never a hang).

Every launch runs under a deadline (its processes are killed past it), and
every address is 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import gdjax as gd

ROOT = pathlib.Path(__file__).resolve().parent.parent
LAUNCHER = ROOT / "examples" / "multiprocess_launch.py"
WORKER = ROOT / "tests" / "_multiprocess_worker.py"
DEADLINE = 240.0  # seconds for a whole launch (start-up, compiles, run)
PEER_TIMEOUT = 20  # GDJAX_TIMEOUT: start-up wait and heartbeat timeout
EPOCHS = 8


def _load_launcher():
    spec = importlib.util.spec_from_file_location("multiprocess_launch", LAUNCHER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


launcher = _load_launcher()
pytestmark = pytest.mark.slow  # every test here launches processes


_CACHE: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    """One persistent compilation cache for this module's launches: a launch
    after the first compiles little (each program's compile is seconds on 2
    shared cores, its run milliseconds)."""
    _CACHE.update(
        JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("jax-cache")),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    )
    yield
    _CACHE.clear()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class Launch:
    codes: list[int | None]  # None: killed at the deadline
    logs: list[str]
    seconds: float
    out: pathlib.Path
    ended: list[float]  # time.time() at which each process was seen to end

    def results(self) -> dict[str, np.ndarray]:
        with np.load(self.out / "results.npz") as f:
            return dict(f)

    def report(self) -> str:
        return "\n".join(
            f"--- process {i} (exit {c}):\n{log[-3000:]}"
            for i, (c, log) in enumerate(zip(self.codes, self.logs, strict=True))
        )


def launch(
    script: pathlib.Path,
    processes: int,
    out: pathlib.Path,
    *,
    devices: int,
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    wait_for: tuple[int, ...] | None = None,
) -> Launch:
    """Start ``processes`` copies of ``script`` as a launcher would, and wait
    for them, or for the ranks ``wait_for`` (killing any still running then,
    or at the deadline)."""
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = {
        k: v
        for k, v in os.environ.items()
        # Loopback only: no proxy for gRPC, no inherited device flags.
        if "proxy" not in k.lower() and k != "XLA_FLAGS" and not k.startswith("SLURM")
    }
    base.update(
        JAX_PLATFORMS="cpu",
        JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
        JAX_COORDINATOR_BIND_ADDRESS=f"127.0.0.1:{port}",
        JAX_NUM_PROCESSES=str(processes),
        GDJAX_CPU_DEVICES=str(devices),
        GDJAX_TIMEOUT=str(PEER_TIMEOUT),
        **_CACHE,
        PYTHONPATH=os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    )
    base.update(env or {})
    start = time.monotonic()
    procs, logs = [], []
    for rank in range(processes):
        log = open(out / f"process{rank}.log", "w+")  # closed below
        logs.append(log)
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), "--out", str(out), *args],
                env={**base, "JAX_PROCESS_ID": str(rank)},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=out,
            )
        )
    ended = [0.0] * processes
    while time.monotonic() < start + DEADLINE:
        for i, p in enumerate(procs):
            if not ended[i] and p.poll() is not None:
                ended[i] = time.time()
        if all(ended[i] for i in (range(processes) if wait_for is None else wait_for)):
            break
        time.sleep(0.02)
    codes = []
    for p in procs:
        if p.poll() is None:  # our own child, by its handle
            p.kill()
            p.wait()
            codes.append(None)
        else:
            codes.append(p.returncode)
    seconds = time.monotonic() - start
    texts = []
    for log in logs:
        log.seek(0)
        texts.append(log.read())
        log.close()
    return Launch(codes, texts, seconds, out, ended)


@pytest.fixture(scope="module")
def reference():
    """The same runs in this process, on one device."""
    (x, y), loss = launcher.problem()
    kw = dict(epochs=EPOCHS, regime=gd.minibatch(launcher.FIT["batch_size"]))
    sweep = gd.sweep(loss, launcher.init, (x, y), gd.sgd(0.1), **launcher.SWEEP, **kw)
    fit = gd.fit(
        loss,
        launcher.init(jax.random.key(launcher.FIT["params_seed"])),
        (x, y),
        gd.sgd(launcher.FIT["learning_rate"]),
        key=jax.random.key(launcher.FIT["key"]),
        **kw,
    )
    return dict(
        sweep_w=sweep.result.params["w"],
        sweep_b=sweep.result.params["b"],
        sweep_epoch=sweep.result.epoch,
        sweep_loss=sweep.final_loss,
        fit_w=np.asarray(fit.params["w"]),
        fit_b=np.asarray(fit.params["b"]),
        fit_loss=np.asarray(fit.history.loss),
        fit_epoch=int(fit.epoch),
    )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The README recipe verbatim: 2 processes x 2 CPU devices, to the end."""
    run = launch(
        LAUNCHER,
        2,
        tmp_path_factory.mktemp("mp2"),
        devices=2,
        args=("--epochs", str(EPOCHS)),
    )
    assert run.codes == [0, 0], run.report()
    return run


def same_results_everywhere(run: Launch) -> None:
    """Every process printed the same digest of its results (all members of
    the sweep, the fit's params and history)."""
    digests = {log.split("results sha256 ")[1].split()[0] for log in run.logs}
    assert len(digests) == 1, run.report()


def check_against_reference(got: dict, ref: dict, *, sweep: bool = True) -> None:
    if sweep:
        for name in ("sweep_w", "sweep_b", "sweep_loss", "sweep_epoch"):
            assert got[name].shape == ref[name].shape, name
            np.testing.assert_array_equal(got[name], ref[name], err_msg=name)
    assert int(got["fit_epoch"]) == ref["fit_epoch"] == EPOCHS
    for name in ("fit_w", "fit_b", "fit_loss"):
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-6, err_msg=name)


def test_two_processes_sweep_fit_checkpoint_resume(uninterrupted, reference):
    run = uninterrupted
    got = run.results()
    assert int(got["processes"]) == 2 and int(got["devices"]) == 4
    assert int(got["resumed_from"]) == 0
    same_results_everywhere(run)
    check_against_reference(got, reference)
    assert "2 process(es), 4 devices in the mesh" in run.logs[0]
    # Process 0 wrote every checkpoint (every 2 epochs), whole.
    folder = run.out / "ckpt"
    names = [p.name for p in gd.checkpoint.checkpoints(folder)]
    assert names == [f"ckpt-{e:09d}.npz" for e in (2, 4, 6, 8)]
    assert not list(folder.glob(".ckpt-*"))

    # Every process resumes from process 0's checkpoint of epoch 4 (as if the
    # run had stopped there) and finishes the run bit for bit.
    resumed = run.out.parent / "mp2-resumed"
    shutil.copytree(folder, resumed / "ckpt")
    for later in ("ckpt-000000006.npz", "ckpt-000000008.npz"):
        (resumed / "ckpt" / later).unlink()
    again = launch(
        LAUNCHER,
        2,
        resumed,
        devices=2,
        args=("--epochs", str(EPOCHS), "--no-sweep"),
    )
    assert again.codes == [0, 0], again.report()
    back = again.results()
    assert int(back["resumed_from"]) == 4
    assert "resuming from epoch 4" in again.logs[0]
    for name in ("fit_w", "fit_b", "fit_loss", "fit_epoch"):
        np.testing.assert_array_equal(back[name], got[name], err_msg=name)
    print(
        f"\n2 processes: first launch {run.seconds:.1f} s "
        f"(sweep {float(got['sweep_s']):.2f} s, fit {float(got['fit_s']):.2f} s), "
        f"resumed launch {again.seconds:.1f} s; data-parallel vs gd.fit: max |diff| "
        f"params {np.max(np.abs(got['fit_w'] - reference['fit_w'])):.2g}, loss "
        f"history {np.max(np.abs(got['fit_loss'] - reference['fit_loss'])):.2g}"
    )


def test_killed_process_is_reported_and_the_run_resumes_bitwise(
    uninterrupted, tmp_path
):
    # Process 1 vanishes (SIGKILL) once epoch 4 is checkpointed.
    killed = launch(
        WORKER,
        2,
        tmp_path,
        devices=2,
        args=("--epochs", str(EPOCHS), "--no-sweep"),
        env={"GDJAX_KILL_RANK": "1", "GDJAX_KILL_EPOCH": "4"},
    )
    assert killed.codes[1] == -9, killed.report()
    # The survivor says what happened and exits at once (well within the
    # heartbeat timeout), not at the deadline.
    assert killed.codes[0] == 1, killed.report()
    assert "the run stopped because another process is gone" in killed.logs[0]
    kill_time = float(killed.logs[1].split("SIGKILL at ")[1].split()[0])
    latency = killed.ended[0] - kill_time
    assert latency < PEER_TIMEOUT, killed.report()
    saved = [p.name for p in gd.checkpoint.checkpoints(tmp_path / "ckpt")]
    assert saved[0] == "ckpt-000000002.npz" and len(saved) in (1, 2), saved

    # Started again, every process resumes from the newest checkpoint and the
    # run ends bit for bit as the uninterrupted one.
    again = launch(
        LAUNCHER,
        2,
        tmp_path,
        devices=2,
        args=("--epochs", str(EPOCHS), "--no-sweep"),
    )
    assert again.codes == [0, 0], again.report()
    back, ref = again.results(), uninterrupted.results()
    assert int(back["resumed_from"]) == 2 * len(saved)
    for name in ("fit_w", "fit_b", "fit_loss", "fit_epoch"):
        np.testing.assert_array_equal(back[name], ref[name], err_msg=name)
    print(
        f"\nkill: the survivor reported it and exited {latency:.2f} s after the "
        f"SIGKILL (launch {killed.seconds:.1f} s); resumed launch {again.seconds:.1f} s"
    )


def test_four_processes(reference, tmp_path):
    # The sweep driven in chunks (a callback on every process after each):
    # bitwise the single program still.
    args = ("--epochs", str(EPOCHS), "--sweep-chunk-epochs", "3")
    run = launch(LAUNCHER, 4, tmp_path, devices=1, args=args)
    assert run.codes == [0, 0, 0, 0], run.report()
    got = run.results()
    assert int(got["processes"]) == 4 and int(got["devices"]) == 4
    assert [f"sweep: {e} epochs" in run.logs[0] for e in (3, 6, 8)] == [True] * 3
    same_results_everywhere(run)
    check_against_reference(got, reference)
    print(
        f"\n4 processes: {run.seconds:.1f} s; data-parallel vs gd.fit: max |diff| "
        f"params {np.max(np.abs(got['fit_w'] - reference['fit_w'])):.2g}, loss "
        f"history {np.max(np.abs(got['fit_loss'] - reference['fit_loss'])):.2g}"
    )


def test_processes_that_see_different_checkpoints_refuse_to_resume(
    uninterrupted, tmp_path
):
    # Each process gets its own folder (no shared file system): process 0
    # finds a checkpoint, process 1 none. Both must refuse, naming both.
    own = tmp_path / "process-local"
    shutil.copytree(uninterrupted.out / "ckpt", own / "ckpt")
    run = launch(
        WORKER,
        2,
        tmp_path,
        devices=1,
        args=("--epochs", str(EPOCHS), "--no-sweep"),
        env={
            "GDJAX_KILL_RANK": "-1",
            "GDJAX_KILL_EPOCH": "0",
            "GDJAX_OUT_0": str(own),
        },
    )
    assert run.codes == [1, 1], run.report()
    for log in run.logs:
        assert "found different checkpoints" in log, run.report()
        assert "process 0: the checkpoint of epoch 8" in log, run.report()
        assert "process 1: no checkpoint" in log, run.report()


def test_only_process_zero_writes_checkpoints(tmp_path, monkeypatch):
    """The one-writer rule itself, in this process: as process 1 of a run,
    ``save`` (and so ``saver`` and ``fit_resumable``) writes nothing and
    returns the path process 0 writes; as process 0 it writes that path."""
    (x, y), loss = launcher.problem()
    params = launcher.init(jax.random.key(0))
    result = gd.fit(loss, params, (x, y), gd.sgd(0.05), key=jax.random.key(1), epochs=2)
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    path = gd.checkpoint.save(tmp_path, result)
    assert path == tmp_path / "ckpt-000000002.npz"
    assert not path.exists() and not list(tmp_path.iterdir())
    monkeypatch.setattr(jax, "process_index", lambda: 0)
    assert gd.checkpoint.save(tmp_path, result) == path and path.exists()


def test_hung_process_is_detected_by_the_heartbeat(tmp_path):
    """Process 1 freezes (SIGSTOP: alive, silent) after its epoch-4
    checkpoint. No collective fails; the coordinator's heartbeat timeout
    (GDJAX_TIMEOUT) must stop process 0, naming the silent task."""
    timeout = 10
    hung = launch(
        WORKER,
        2,
        tmp_path,
        devices=1,
        args=("--epochs", str(EPOCHS), "--no-sweep"),
        env={
            "GDJAX_KILL_RANK": "1",
            "GDJAX_KILL_EPOCH": "4",
            "GDJAX_KILL_SIGNAL": "STOP",
            "GDJAX_TIMEOUT": str(timeout),
        },
        wait_for=(0,),
    )
    assert hung.codes[0] not in (0, None), hung.report()  # JAX aborts it
    assert "stopped sending heartbeats" in hung.logs[0], hung.report()
    stop_time = float(hung.logs[1].split("SIGSTOP at ")[1].split()[0])
    latency = hung.ended[0] - stop_time
    assert latency < 2 * timeout, hung.report()
    print(f"\nhang: process 0 stopped {latency:.1f} s after process 1 froze")
