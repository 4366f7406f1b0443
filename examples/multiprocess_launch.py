"""One process of a multi-process gdjax run: start one per host (JAX's runtime).

JAX runs several hosts as one program: one Python process per host, connected
by ``jax.distributed.initialize``, every process running this same script on
the same arguments (SPMD). The mesh then spans the devices of every process.

Each process learns who it is from the environment, as a launcher sets it:

    JAX_COORDINATOR_ADDRESS  host:port of process 0's coordinator (every process)
    JAX_NUM_PROCESSES        how many processes
    JAX_PROCESS_ID           this process's rank, 0 .. JAX_NUM_PROCESSES - 1

(under SLURM, ``srun`` sets SLURM_PROCID / SLURM_NTASKS and JAX reads them
itself). Without them the script runs as one ordinary process.
GDJAX_CPU_DEVICES=k simulates k CPU devices per process (to try it on one
machine); GDJAX_TIMEOUT (seconds, default 60) bounds the wait for the other
processes at start-up and how long a silent process is waited for before the
run is stopped with an error.

What it runs, on a least-squares problem every process builds from one seed:

1. ``gd.sweep``: 3 seeds x 2 learning rates, the members sharded over every
   device of every process; every process gets every member back, labelled.
2. data-parallel gradient descent: each process loads only its own rows, the
   batch is split over all devices, and process 0 checkpoints the run every
   2 epochs into ``--out/ckpt`` (``checkpoint.fit_resumable`` on the sharded
   data runs data-parallel over its mesh):
   started again after a crash, every process resumes from the newest
   checkpoint, bit for bit.
3. process 0 prints a summary and writes ``--out/results.npz``.

Run (two processes on one machine):

    JAX_COORDINATOR_ADDRESS=127.0.0.1:12355 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=0 \
        python examples/multiprocess_launch.py --out runs/mp &
    JAX_COORDINATOR_ADDRESS=127.0.0.1:12355 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=1 \
        python examples/multiprocess_launch.py --out runs/mp
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pathlib
import sys
import time

import jax


def initialize() -> None:
    """Connect to the other processes named by the environment (if any).

    Must run before anything else touches JAX's devices.
    """
    cpu_devices = os.environ.get("GDJAX_CPU_DEVICES")
    if cpu_devices:
        jax.config.update("jax_num_cpu_devices", int(cpu_devices))
    count = os.environ.get("JAX_NUM_PROCESSES") or os.environ.get("SLURM_NTASKS")
    if count is None or int(count) == 1:
        return
    # CPU collectives across processes (gloo over TCP; accelerators use their own).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    timeout = int(os.environ.get("GDJAX_TIMEOUT", "60"))
    rank = os.environ.get("JAX_PROCESS_ID")
    jax.distributed.initialize(  # the coordinator address comes from the environment
        num_processes=int(count) if rank is not None else None,
        process_id=int(rank) if rank is not None else None,
        initialization_timeout=timeout,
        heartbeat_timeout_seconds=timeout,
    )


def problem(n: int = 64, d: int = 4):
    """The data (the same on every process) and the loss."""
    import numpy as np

    import gdjax as gd

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x @ rng.normal(size=d) + 0.1 * rng.normal(size=n)).astype(np.float32)
    loss = gd.make_loss(gd.models.linear, gd.losses.squared_error)
    return (x, y), loss


def init(key):
    return {
        "w": 0.5 * jax.random.normal(key, (4, 1)),
        "b": jax.numpy.zeros(1),
    }


SWEEP = dict(seeds=[0, 1, 2], hyperparams={"learning_rate": [0.02, 0.1]})
FIT = dict(learning_rate=0.05, batch_size=16, key=7, params_seed=3)


def main(argv=None, *, callback=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gdjax-out", help="results and checkpoints")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument(
        "--sweep",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the sweep (--no-sweep: only the checkpointed fit)",
    )
    parser.add_argument(
        "--sweep-chunk-epochs",
        type=int,
        default=None,
        help="drive the sweep in chunks of this many epochs, with a progress line",
    )
    args = parser.parse_args(argv)
    initialize()

    import numpy as np

    import gdjax as gd
    from gdjax import checkpoint, sharding

    me, count = jax.process_index(), jax.process_count()
    out = pathlib.Path(args.out)
    (x, y), loss = problem()
    kw = dict(epochs=args.epochs, regime=gd.minibatch(FIT["batch_size"]))

    # 1. A sweep whose members are spread over every device of every process.
    results = {"processes": count, "devices": len(jax.devices())}
    if args.sweep:
        start = time.perf_counter()
        chunks = {}
        if args.sweep_chunk_epochs:

            def report(members) -> bool:  # every process gets every member
                if me == 0:
                    print(f"sweep: {int(members.epoch.min())} epochs", flush=True)
                return False

            chunks = dict(chunk_epochs=args.sweep_chunk_epochs, callback=report)
        sweep = gd.sweep(loss, init, (x, y), gd.sgd(0.1), **SWEEP, **kw, **chunks)
        results.update(
            sweep_s=time.perf_counter() - start,
            sweep_w=sweep.result.params["w"],
            sweep_b=sweep.result.params["b"],
            sweep_epoch=sweep.result.epoch,
            sweep_loss=sweep.final_loss,
        )

    # 2. Data-parallel descent: this process loads only its rows.
    mesh = sharding.data_mesh()  # every device of every process
    rows = len(x) // count
    mine = slice(me * rows, (me + 1) * rows)
    data = sharding.shard_data((x[mine], y[mine]), mesh, process_local=True)
    found = checkpoint.checkpoints(out / "ckpt")
    newest = checkpoint.read_manifest(found[-1])["epoch"] if found else 0
    results["resumed_from"] = newest
    if newest and me == 0:
        print(f"resuming from epoch {newest} ({found[-1]})")
    start = time.perf_counter()
    fit = checkpoint.fit_resumable(
        loss,
        init(jax.random.key(FIT["params_seed"])),
        data,
        gd.sgd(FIT["learning_rate"]),
        directory=out / "ckpt",
        every=2,
        keep=None,
        key=jax.random.key(FIT["key"]),
        callback=callback,
        check_finite=False,  # no process holds every row to check
        **kw,
    )
    results.update(
        fit_s=time.perf_counter() - start,
        fit_w=np.asarray(fit.params["w"]),
        fit_b=np.asarray(fit.params["b"]),
        fit_loss=np.asarray(fit.history.loss),
        fit_epoch=int(fit.epoch),
    )
    # Every process holds every result: the same bytes on each.
    digest = hashlib.sha256()
    for name in sorted(k for k in results if k.startswith(("sweep_", "fit_"))):
        if not name.endswith("_s"):  # not the timings
            digest.update(np.ascontiguousarray(results[name]).tobytes())
    print(f"process {me}: results sha256 {digest.hexdigest()[:16]}", flush=True)
    if me == 0:
        print(f"{count} process(es), {len(jax.devices())} devices in the mesh")
        if args.sweep:
            best, mean = sweep.best()
            print(
                f"sweep {sweep.shape} ({results['sweep_s']:.2f} s): best {best}, "
                f"mean final loss over seeds {mean:.4g}"
            )
        print(
            f"data-parallel fit ({results['fit_s']:.2f} s): {int(fit.epoch)} epochs, "
            f"loss {float(fit.history.loss[-1]):.4g}, checkpoints in {out / 'ckpt'}"
        )
        out.mkdir(parents=True, exist_ok=True)
        np.savez(out / "results.npz", **results)
    return results


def run(argv=None, *, callback=None) -> dict:
    """:func:`main`, reporting a lost process in one line and exiting at once.

    When a process dies, the others fail in their next collective (gloo:
    "Connection reset by peer"). Leaving Python normally would then wait up
    to GDJAX_TIMEOUT in JAX's shutdown barrier for the dead process, and
    abort; ``os._exit`` ends this process now, with status 1.
    """
    try:
        return main(argv, callback=callback)
    except jax.errors.JaxRuntimeError as e:
        if jax.process_count() == 1:
            raise
        cause = str(e).splitlines()[0]
        print(
            f"process {jax.process_index()} of {jax.process_count()}: the run "
            f"stopped because another process is gone ({cause}). Start every "
            "process again: the fit resumes from the newest checkpoint.",
            file=sys.stderr,
            flush=True,
        )
        os._exit(1)


if __name__ == "__main__":
    run()
