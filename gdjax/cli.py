"""The ``gdjax`` command.

``gdjax demo`` races plain (full-batch), mini-batch and stochastic gradient
descent on the built-in 8×8 digits: the same small MLP, the same initial
parameters for each seed, the same number of epochs (so every regime sees the
same number of examples). Each regime is one vmapped sweep over the seeds and
a few learning rates (``gd.sweep``); the rate with the lowest mean final
training loss over the seeds (``SweepResult.best``) is the one shown, unless a
rate is given on the command line. It prints a table (final training loss and
test accuracy, mean ± std over seeds; epochs; gradient evaluations; wall time
and throughput), and writes a picture (``demo.png``: loss from the initial
parameters against examples seen, gradient evaluations and wall-clock
seconds) and the numbers behind it (``demo.json``) to ``--out``.

The command uses only gdjax's public API (``import gdjax as gd``), like any
user's script. JAX's persistent compilation cache (under the user's cache
folder, ``--no-cache`` to skip it) makes a second run start faster; on a CPU
the sweeps compile with :data:`gdjax.QUICK_COMPILE` (``--xla-emitters`` for
XLA's defaults), since compiling is most of the demo's time.

Contract for the command line: bad input (an unknown dataset, zero seeds, a
non-positive or non-finite learning rate, a batch larger than the training set,
an output folder that cannot be written) is a one-line error on stderr and
exit status 2, found before anything is trained. Output files are written to
temporary files in the output folder and renamed into place, so an interrupted
or failed run never leaves a half-written file and never loses an existing one.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from gdjax import __version__, cache

__all__ = ["main"]

DEFAULT_SEEDS = 5
DEFAULT_EPOCHS = 30
DEFAULT_BATCH = 32
DEFAULT_HIDDEN = 32
# Each regime's candidate learning rates, swept in one vmapped program: a factor
# of 2 around a rate picked by hand a little below where the regime turns
# erratic (measured with 5 seeds: full batch oscillates at 1.0 and diverges at
# 2.0; mini-batch 32 spikes at 0.3; stochastic spikes at 0.05).
DEFAULT_RATES = {
    "full batch": (0.35, 0.7, 1.4),
    "mini-batch": (0.05, 0.1, 0.2),
    "stochastic": (0.01, 0.02, 0.04),
}
# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
COLORS = {"full batch": "#0072B2", "mini-batch": "#009E73", "stochastic": "#D55E00"}
RESULTS_JSON = "demo.json"
PICTURE_PNG = "demo.png"
# Tracing, lowering and XLA compilation: what a second run with the same
# shapes skips (and the persistent cache mostly skips across processes).
_COMPILE_EVENTS = frozenset(
    f"/jax/core/compile/{name}_duration"
    for name in ("jaxpr_trace", "jaxpr_to_mlir_module", "backend_compile")
)
CACHE_MIN_COMPILE_S = 0.0  # every program: its second run compiles nothing


# --------------------------------------------------------------------- arguments


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``gdjax demo: error: ... (see --help)``."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a positive integer, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"must be a non-negative integer, got {text!r}"
        )
    return value


def _learning_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def _parser() -> _Parser:
    parser = _Parser(
        prog="gdjax",
        description="gdjax: gradient descent as pure, composable, jittable JAX "
        "functions. Run 'gdjax demo' to see plain, mini-batch and stochastic "
        "gradient descent race on real data.",
    )
    parser.add_argument("--version", action="version", version=f"gdjax {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_demo_parser(commands)
    return parser


def _add_demo_parser(commands: Any) -> None:
    """The ``demo`` subcommand and its options."""
    demo = commands.add_parser(
        "demo",
        help="race full-batch, mini-batch and stochastic descent on the digits",
        description="Train the same small MLP on the built-in 8x8 digits with "
        "full-batch, mini-batch and stochastic gradient descent, over several "
        "seeds and three learning rates (each regime one vmapped program; the "
        "rate with the lowest final training loss is shown), for the same "
        "number of epochs. Prints a table, writes a picture (demo.png) and the "
        "numbers behind it (demo.json) to --out. About 20 s on 2 CPU cores with "
        "the defaults, most of it compilation; a second run reads the compiled "
        "programs from JAX's persistent cache.",
        epilog="examples: gdjax demo | gdjax demo --seeds 8 --epochs 50 --out "
        "runs/a | gdjax demo --lr 0.05 --batch-size 128 | gdjax demo --hidden 0 "
        "(softmax regression)",
    )
    _add_run_arguments(demo)
    _add_output_arguments(demo)
    demo.set_defaults(run=_demo, command_parser=demo)


def _add_run_arguments(demo: argparse.ArgumentParser) -> None:
    """The options that shape the race: data, seeds, epochs, rates, model."""
    demo.add_argument(
        "--dataset",
        choices=["digits"],
        default="digits",
        help="the data; 'digits' (the only one, and the default) is the 8x8 "
        "handwritten digits shipped with gdjax: 1,347 training and 450 test "
        "images, 10 classes",
    )
    demo.add_argument(
        "--seeds",
        type=_positive_int,
        default=DEFAULT_SEEDS,
        metavar="N",
        help="number of seeds, 0 to N-1 (default %(default)s); seed s draws the "
        "initial parameters (the same for the three regimes) and the data order",
    )
    demo.add_argument(
        "--epochs",
        type=_positive_int,
        default=DEFAULT_EPOCHS,
        metavar="E",
        help="passes over the training set, the same for every regime, so every "
        "regime sees the same examples (default %(default)s)",
    )
    demo.add_argument(
        "--lr",
        type=_learning_rate,
        default=None,
        metavar="LR",
        help="one learning rate for all three regimes (default: each regime "
        "sweeps three rates and keeps the one with the lowest final training "
        "loss, see below)",
    )
    for name, flag in (
        ("full-batch", "--lr-full"),
        ("mini-batch", "--lr-minibatch"),
        ("stochastic", "--lr-stochastic"),
    ):
        rates = DEFAULT_RATES[name.replace("full-batch", "full batch")]
        demo.add_argument(
            flag,
            type=_learning_rate,
            default=None,
            metavar="LR",
            help=f"learning rate of {name} descent; overrides --lr (default: "
            f"the best of {', '.join(f'{r:g}' for r in rates)})",
        )
    demo.add_argument(
        "--batch-size",
        type=_positive_int,
        default=DEFAULT_BATCH,
        metavar="B",
        help="examples per step of mini-batch descent (default %(default)s); "
        "full batch uses all of them, stochastic one",
    )
    demo.add_argument(
        "--hidden",
        type=_nonnegative_int,
        default=DEFAULT_HIDDEN,
        metavar="H",
        help="hidden units of the MLP 64-H-10 with ReLU (default %(default)s); "
        "0 gives softmax regression",
    )


def _add_output_arguments(demo: argparse.ArgumentParser) -> None:
    """The options that decide what is written and shown."""
    demo.add_argument(
        "--out",
        default="gdjax-out",
        metavar="DIR",
        help="folder for demo.png and demo.json, created if needed (default "
        "./%(default)s); existing files there are replaced only once the new "
        "ones are complete",
    )
    demo.add_argument(
        "--no-plot",
        action="store_true",
        help="skip the picture (also skipped, with a note, when matplotlib is "
        "not installed: pip install 'gdjax[plot]')",
    )
    demo.add_argument(
        "--no-cache",
        action="store_true",
        help="do not use JAX's persistent compilation cache (default: on, in "
        f"{_cache_dir_shown()}; a second run then compiles almost nothing)",
    )
    demo.add_argument(
        "--xla-emitters",
        action="store_true",
        help="compile with XLA's default CPU emitters (default: gd.QUICK_COMPILE "
        "on a CPU, about 40%% faster to compile, the same numbers)",
    )
    demo.add_argument(
        "--quiet",
        action="store_true",
        help="no progress and no table: print only the paths of the files written",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``gdjax`` command with ``argv`` (default ``sys.argv[1:]``).

    Returns the exit status (0 on success); command-line errors exit with 2
    through ``SystemExit``, as argparse does.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    args._argv = None if argv is None else list(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.run(args, args.command_parser)
    except KeyboardInterrupt:
        print("gdjax: interrupted.", file=sys.stderr)
        return 130


# ----------------------------------------------------------------------- outputs


def _check_out(parser: argparse.ArgumentParser, out: str) -> str:
    """The output folder, created and proven writable, or a one-line error."""
    path = os.path.abspath(os.path.expanduser(out))
    if os.path.exists(path) and not os.path.isdir(path):
        parser.error(f"argument --out: {out!r} exists and is not a folder")
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".gdjax-write-test-")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        why = e.strerror or str(e)
        parser.error(f"argument --out: cannot write to folder {out!r}: {why}")
    return path


def _write_atomic(path: str, write: Callable[[Any], None], mode: str = "w") -> None:
    """Write through a temporary file in the same folder, then rename over ``path``."""
    folder, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
        # mkstemp makes the file private (0600); give it the usual mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


# ------------------------------------------------------------ compilation cache


def _cache_dir_shown() -> str:
    path, home = cache.default_cache_dir(), os.path.expanduser("~")
    if path.startswith(home + os.sep):
        path = "~" + path[len(home) :]
    return path.replace("%", "%%")  # argparse formats help with %


def _use_cache(enabled: bool) -> str | None:
    """Turn on JAX's persistent compilation cache; the folder, or None.

    JAX decides once per process, at its first compilation, whether the cache
    is used: call this before anything compiles. It stays on for the rest of
    the process (the command's whole life).
    """
    if not enabled:
        return None
    try:
        return cache.enable_compilation_cache(min_compile_time_s=CACHE_MIN_COMPILE_S)
    except OSError as e:
        path = cache.default_cache_dir()
        print(
            f"note: no compilation cache ({path}: {e.strerror or e})", file=sys.stderr
        )
        return None


# -------------------------------------------------------------------- the sweep


@functools.cache
def _compile_clock() -> list[float]:
    """Seconds of tracing and compilation so far in this process (one listener)."""
    import jax

    total = [0.0]

    def listener(event: str, duration: float, **kwargs: Any) -> None:
        del kwargs
        if event in _COMPILE_EVENTS:
            total[0] += duration

    jax.monitoring.register_event_duration_secs_listener(listener)
    return total


# ------------------------------------------------------------------------- demo


class _Timing(NamedTuple):
    """How long a regime's sweep ran.

    ``marks`` maps each epoch count reached to the seconds of running so far,
    compilation excluded; ``wall`` and ``compile`` are totals in seconds.
    """

    marks: dict[int, float]
    wall: float
    compile: float


class _Race(NamedTuple):
    """One regime's outcome at its chosen learning rate, on the host."""

    name: str
    describe: str
    batch_size: int
    learning_rate: float  # the chosen one
    candidates: tuple[float, ...]  # the rates swept
    selection: list[dict]  # SweepResult.summary(): one row per candidate
    steps_per_epoch: int
    epochs: np.ndarray  # (rows,): the epoch of each history row
    train_loss: np.ndarray  # (seeds, rows): full training set, after each epoch
    batch_loss: np.ndarray  # (seeds, rows): mean of the epoch's batch losses
    test_loss: np.ndarray  # (seeds, rows)
    test_accuracy: np.ndarray  # (seeds, rows)
    final_train_loss: np.ndarray  # (seeds,): last finite value of train_loss
    final_test_loss: np.ndarray  # (seeds,)
    final_test_accuracy: np.ndarray  # (seeds,)
    epochs_run: np.ndarray  # (seeds,)
    steps: np.ndarray  # (seeds,)
    failed: np.ndarray  # (seeds,) bool
    reasons: list[str]
    seconds: np.ndarray  # (rows + 1,): run time at epoch 0 and each row's epoch
    members: int  # members of the sweep (seeds x candidates)
    total_steps: int  # gradient steps of all members
    wall_s: float
    compile_s: float


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of the finite entries (NaN if none)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std())


class _Progress:
    """A tqdm bar per regime on a terminal, else one plain line per regime."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar = None
        self.tqdm = None
        if not quiet and sys.stderr.isatty():
            try:
                from tqdm import tqdm

                self.tqdm = tqdm
            except ImportError:  # pragma: no cover - depends on the environment
                self.tqdm = None

    def start(self, title: str, epochs: int) -> None:
        if self.quiet:
            return
        if self.tqdm is not None:
            # A terminal that reports a size of 0 (a bare pty) would get no bar:
            # tqdm hides bars below the last row. get_terminal_size falls back.
            size = shutil.get_terminal_size()
            self.bar = self.tqdm(
                total=epochs,
                desc=title,
                unit="epoch",
                leave=True,
                file=sys.stderr,
                ncols=min(size.columns, 120),
                nrows=max(size.lines, 2),
            )
            self.done = 0
        else:
            print(f"{title:<36} ...", end="", file=sys.stderr, flush=True)

    def update(self, state: Any) -> None:
        if self.bar is None:
            return
        reached = int(np.max(np.asarray(state.epoch)))
        self.bar.update(reached - self.done)
        self.done = reached
        losses = np.asarray(state.history.loss)[..., max(reached - 1, 0)]
        finite = losses[np.isfinite(losses)]
        if finite.size:
            self.bar.set_postfix(loss=f"{finite.mean():.4f}", refresh=False)

    def finish(self, seconds: float, reached: int) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            # The sweep skips the callback after its last chunk.
            self.bar.update(reached - self.done)
            self.bar.close()
            self.bar = None
        else:
            print(f" {seconds:.1f} s", file=sys.stderr, flush=True)


def _race(
    name: str,
    regime: Any,
    rates: Sequence[float],
    *,
    index: int,
    total: int,
    problem: dict,
    args: argparse.Namespace,
    progress: _Progress,
) -> _Race:
    """One regime: a vmapped sweep over seeds x ``rates``, the best rate kept."""
    import gdjax as gd

    n = problem["n_train"]
    plan = gd.batching.plan(regime, n)
    shown = (
        f"lr={rates[0]:g}"
        if len(rates) == 1
        else "lr in {" + ", ".join(f"{r:g}" for r in rates) + "}"
    )
    progress.start(
        f"[{index}/{total}] {name} (B={plan.batch_size}, {shown})", args.epochs
    )
    sw, timing = _timed_sweep(
        regime, rates, problem=problem, args=args, progress=progress
    )
    return _race_result(name, regime, plan, rates, sw, args.seeds, timing)


def _compiler_options(args: argparse.Namespace) -> Any:
    """:data:`gdjax.QUICK_COMPILE` on a CPU (the demo's time is mostly
    compiling), unless ``--xla-emitters``; XLA's defaults elsewhere."""
    import jax

    import gdjax as gd

    if getattr(args, "xla_emitters", False) or jax.default_backend() != "cpu":
        return None
    return gd.QUICK_COMPILE


def _timed_sweep(
    regime: Any,
    rates: Sequence[float],
    *,
    problem: dict,
    args: argparse.Namespace,
    progress: _Progress,
) -> tuple[Any, _Timing]:
    """The regime's sweep over seeds x ``rates``, and how long it ran."""
    import gdjax as gd

    clock = _compile_clock()
    compiled_before = clock[0]
    start = time.perf_counter()
    # (epochs done, seconds of running so far, compilation excluded)
    marks = {0: 0.0}

    def callback(state: Any) -> bool:
        progress.update(state)
        done = int(np.max(np.asarray(state.epoch)))  # waits for the chunk
        marks[done] = time.perf_counter() - start - (clock[0] - compiled_before)
        return False

    seeds = list(range(args.seeds))
    sw = gd.sweep(
        problem["loss"],
        problem["init"],
        problem["train"],
        gd.sgd(rates[0]),
        seeds=seeds,
        hyperparams={"learning_rate": list(rates)},
        epochs=args.epochs,
        regime=regime,
        chunk_epochs=max(1, math.ceil(args.epochs / 30)),
        callback=callback,
        val_data=problem["test"],
        metric=problem["metric"],
        monitors={"train_loss": problem["loss"]},
        compiler_options=_compiler_options(args),
    )
    wall = time.perf_counter() - start
    compile_s = min(clock[0] - compiled_before, wall)
    done = int(np.max(np.asarray(sw.result.epoch)))
    marks[done] = wall - compile_s
    progress.finish(wall, done)
    return sw, _Timing(marks, wall, compile_s)


def _race_result(
    name: str,
    regime: Any,
    plan: Any,
    rates: Sequence[float],
    sw: Any,
    seeds: int,
    timing: _Timing,
) -> _Race:
    """The ``_Race`` of a finished sweep: the best rate's members per seed."""
    import gdjax as gd

    try:
        best, _ = sw.best()  # lowest mean final training loss, no failed seed
        lr = float(best["learning_rate"])
    except ValueError:  # every candidate failed on some seed: show the smallest
        lr = float(min(rates))
    j = int(np.argmin([abs(r - lr) for r in rates]))
    members = [sw.member(i, j) for i in range(seeds)]

    def per_seed(get: Callable[[Any], Any]) -> np.ndarray:
        return np.stack([np.asarray(get(m), float) for m in members])

    epochs = gd.plot.history_epochs(sw)
    done_at, seconds_at = zip(*sorted(timing.marks.items()), strict=True)
    status = [int(m.status) for m in members]
    return _Race(
        name=name,
        describe=regime.describe(),
        batch_size=plan.batch_size,
        learning_rate=lr,
        candidates=tuple(float(r) for r in rates),
        selection=sw.summary(),
        steps_per_epoch=plan.steps,
        epochs=epochs,
        train_loss=per_seed(lambda m: m.history.monitors["train_loss"]),
        batch_loss=per_seed(lambda m: m.history.loss),
        test_loss=per_seed(lambda m: m.history.val_loss),
        test_accuracy=per_seed(lambda m: m.history.metric),
        final_train_loss=gd.plot.final_values(sw, "train_loss")[:, j],
        final_test_loss=gd.plot.final_values(sw, "val_loss")[:, j],
        final_test_accuracy=gd.plot.final_values(sw, "metric")[:, j],
        epochs_run=np.array([int(m.epoch) for m in members]),
        steps=np.array([int(m.steps) for m in members]),
        failed=np.array([bool(m.failed) for m in members]),
        reasons=[gd.stopping.Status(s).message for s in status],
        seconds=np.interp(np.r_[0, epochs], done_at, seconds_at),
        members=int(np.size(sw.result.epoch)),
        total_steps=int(np.sum(sw.result.steps)),
        wall_s=timing.wall,
        compile_s=timing.compile,
    )


def _initial_loss(problem: dict, seeds: int) -> np.ndarray:
    """The training loss at each seed's initial parameters (epoch 0).

    ``gd.sweep`` draws seed ``s``'s parameters with ``init(gd.seed_keys(s)[0])``;
    the same key here gives the same parameters. One small compiled program,
    reused by a second demo in the same process (``_problem`` is cached).
    """
    import jax.numpy as jnp

    import gdjax as gd

    keys = jnp.stack([gd.seed_keys(s)[0] for s in range(seeds)])
    return np.asarray(
        _losses_at_init(problem["init"], problem["loss"], keys, problem["train"])
    )


@functools.cache
def _jitted_losses_at_init() -> Callable:
    import jax

    def losses(init: Callable, loss: Callable, keys: Any, data: Any) -> Any:
        return jax.vmap(lambda key: loss(init(key), data))(keys)

    return jax.jit(losses, static_argnums=(0, 1))


def _losses_at_init(init: Callable, loss: Callable, keys: Any, data: Any) -> Any:
    return _jitted_losses_at_init()(init, loss, keys, data)


@functools.lru_cache(maxsize=4)
def _problem(hidden: int) -> dict:
    """Data, model and loss; cached so that a second demo in the same process
    passes the same function objects to the sweep and reuses its programs."""
    import gdjax as gd

    train, test = gd.datasets.digits()
    widths = [64, hidden, 10] if hidden else [64, 10]
    loss = gd.make_loss(gd.models.mlp, gd.losses.softmax_cross_entropy)
    return {
        "train": train,
        "test": test,
        "n_train": int(train[0].shape[0]),
        "n_test": int(test[0].shape[0]),
        "widths": widths,
        "n_params": sum((a + 1) * b for a, b in itertools.pairwise(widths)),
        "init": functools.partial(gd.init.mlp, widths=widths),
        "loss": loss,
        "metric": gd.accuracy(gd.models.mlp),
    }


def _model_name(widths: list[int]) -> str:
    if len(widths) == 2:
        return "softmax regression 64-10"
    return "MLP " + "-".join(map(str, widths)) + " (ReLU)"


def _demo(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    fixed = {
        name: getattr(args, flag) or args.lr
        for name, flag in (
            ("full batch", "lr_full"),
            ("mini-batch", "lr_minibatch"),
            ("stochastic", "lr_stochastic"),
        )
    }
    rates = {name: (lr,) if lr else DEFAULT_RATES[name] for name, lr in fixed.items()}

    problem = _problem(args.hidden)
    if args.batch_size > problem["n_train"]:
        parser.error(
            f"argument --batch-size: must be at most {problem['n_train']} (the "
            f"digits training set), got {args.batch_size}"
        )
    out = _check_out(parser, args.out)
    cache = _use_cache(not args.no_cache)  # before anything compiles

    import jax

    import gdjax as gd

    regimes = [
        ("full batch", gd.full_batch()),
        ("mini-batch", gd.minibatch(args.batch_size)),
        ("stochastic", gd.stochastic()),
    ]
    device = jax.devices()[0]
    header = (
        f"gdjax demo: {_model_name(problem['widths'])} on the 8x8 digits "
        f"({problem['n_train']} train / {problem['n_test']} test), "
        f"{args.seeds} seed{'s' * (args.seeds != 1)}, {args.epochs} epochs, "
        f"{_device_name(device)}"
    )
    if not args.quiet:
        print(header, flush=True)
    progress = _Progress(args.quiet)
    races = [
        _race(
            name,
            regime,
            rates[name],
            index=i,
            total=len(regimes),
            problem=problem,
            args=args,
            progress=progress,
        )
        for i, (name, regime) in enumerate(regimes, start=1)
    ]
    initial = _initial_loss(problem, args.seeds)
    if not args.quiet:
        print()
        print(_table(races, args.seeds, problem["n_test"]))
    record = _record(races, problem, args, header, initial, cache)
    for p in _write_outputs(races, problem, args, initial, record, out):
        print(p if args.quiet else f"wrote {_shown(p)}")
    return 0


def _write_outputs(
    races: list[_Race],
    problem: dict,
    args: argparse.Namespace,
    initial: np.ndarray,
    record: dict,
    out: str,
) -> list[str]:
    """Write the picture (unless skipped) and the JSON record; their paths."""
    written = []
    if not args.no_plot:
        try:
            figure = _figure(races, problem, args, initial)
        except ImportError as e:
            print(f"note: skipped the picture: {e}", file=sys.stderr)
        else:
            png = os.path.join(out, PICTURE_PNG)
            _write_atomic(png, lambda f: figure.savefig(f, format="png"), mode="wb")
            record["picture"] = PICTURE_PNG
            written.append(png)
    path = os.path.join(out, RESULTS_JSON)
    _write_atomic(
        path,
        lambda f: json.dump(record, f, indent=1, allow_nan=False),
    )
    written.insert(0, path)
    return written


def _device_name(device: Any) -> str:
    kind = device.device_kind
    if kind.lower() == device.platform.lower():
        return device.platform
    return f"{device.platform} ({kind})"


def _shown(path: str) -> str:
    rel = os.path.relpath(path)
    return rel if not rel.startswith("..") else path


def _table(races: list[_Race], seeds: int, n_test: int) -> str:
    heads = [
        "regime",
        "batch",
        "lr",
        "train loss (mean ± std)",
        "test acc (mean ± std)",
        "epochs",
        "grad evals",
        "wall s",
        "compile s",
        "steps/s",
    ]
    rows = [_table_row(r) for r in races]
    notes = [
        f"{r.name}: {int(r.failed.sum())} of {seeds} seeds diverged "
        f"({r.reasons[int(np.argmax(r.failed))]}); the statistics are "
        "over the others. Try a smaller learning rate."
        for r in races
        if r.failed.any()
    ]
    right = {1, 2, 5, 6, 7, 8, 9}
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(heads)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    text = [line(heads), line(["-" * w for w in widths])]
    text += [line(row) for row in rows]
    text.append("")
    text += _table_legend(races, n_test)
    text += notes
    return "\n".join(text)


def _table_row(r: _Race) -> list[str]:
    """One regime's cells of the summary table."""
    loss_m, loss_s = _mean_std(r.final_train_loss)
    acc_m, acc_s = _mean_std(r.final_test_accuracy)
    run_s = max(r.wall_s - r.compile_s, 1e-9)
    epochs = (
        f"{r.epochs_run.min()}"
        if r.epochs_run.min() == r.epochs_run.max()
        else f"{r.epochs_run.min()}-{r.epochs_run.max()}"
    )
    return [
        r.name,
        str(r.batch_size),
        f"{r.learning_rate:g}",
        f"{loss_m:.4f} ± {loss_s:.4f}",
        f"{100 * acc_m:.1f}% ± {100 * acc_s:.1f}%",
        epochs,
        f"{int(r.steps.max()):,}",
        f"{r.wall_s:.2f}",
        f"{r.compile_s:.2f}",
        f"{r.total_steps / run_s:,.0f}",
    ]


def _table_legend(races: list[_Race], n_test: int) -> list[str]:
    """The lines under the table that say what its columns mean."""
    text = []
    swept = [r for r in races if len(r.candidates) > 1]
    if swept:
        text.append(
            "lr: the rate with the lowest final training loss (mean over seeds) "
            "among "
            + "; ".join(
                f"{r.name} {', '.join(f'{c:g}' for c in r.candidates)}" for r in swept
            )
            + " (one vmapped sweep per regime)."
        )
    text.append(
        "train loss: cross-entropy on the whole training set after the last epoch; "
        f"test acc: on the {n_test} held-out images."
    )
    text.append(
        "grad evals: gradient steps per seed (a step averages the gradient over "
        "its batch); wall s and steps/s: every member of the regime's sweep "
        "(seeds x rates) together, steps/s without compile time."
    )
    return text


def _finite_list(values: np.ndarray) -> list:
    """A nested list with NaN/inf as None (strict JSON)."""
    arr = np.asarray(values, dtype=float)
    return np.where(np.isfinite(arr), arr, None).tolist()


def _finite(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _stats(values: np.ndarray) -> dict:
    mean, std = _mean_std(values)
    return {
        "mean": _finite(mean),
        "std": _finite(std),
        "per_seed": _finite_list(values),
    }


def _curve(values: np.ndarray) -> dict:
    """Statistics over seeds (rows) at each epoch, of the finite entries."""
    masked = np.ma.masked_invalid(np.asarray(values, float))
    return {
        "mean": _finite_list(masked.mean(0).filled(np.nan)),
        "std": _finite_list(masked.std(0).filled(np.nan)),
        "min": _finite_list(masked.min(0).filled(np.nan)),
        "max": _finite_list(masked.max(0).filled(np.nan)),
        "per_seed": _finite_list(values),
    }


def _record(
    races: list[_Race],
    problem: dict,
    args,
    header: str,
    initial: np.ndarray,
    cache: str | None,
) -> dict:
    import jax

    n = problem["n_train"]
    device = jax.devices()[0]
    return {
        "schema": "gdjax-demo/1",
        "title": header,
        "command": shlex.join(
            ["gdjax", *(sys.argv[1:] if args._argv is None else args._argv)]
        ),
        "gdjax_version": __version__,
        "jax_version": jax.__version__,
        "platform": f"{_device_name(device)}, "
        f"{os.cpu_count()} CPU cores, Python {platform.python_version()}",
        "compilation_cache": cache,
        "dataset": {
            "name": "digits",
            "n_train": n,
            "n_test": problem["n_test"],
            "features": 64,
            "classes": 10,
        },
        "model": {
            "name": _model_name(problem["widths"]),
            "widths": problem["widths"],
            "n_params": problem["n_params"],
            "loss": "softmax cross-entropy",
        },
        "seeds": list(range(args.seeds)),
        "epochs": args.epochs,
        "initial_train_loss": _stats(initial),
        "regimes": [_regime_record(r, n) for r in races],
    }


def _regime_record(r: _Race, n: int) -> dict:
    epochs = np.asarray(r.epochs)
    return {
        "name": r.name,
        "regime": r.describe,
        "batch_size": r.batch_size,
        "learning_rate": r.learning_rate,
        "learning_rate_candidates": list(r.candidates),
        "selection": [{k: _finite(v) for k, v in row.items()} for row in r.selection],
        "steps_per_epoch": r.steps_per_epoch,
        "final_train_loss": _stats(r.final_train_loss),
        "final_test_loss": _stats(r.final_test_loss),
        "final_test_accuracy": _stats(r.final_test_accuracy),
        "epochs_run": r.epochs_run.tolist(),
        "gradient_evaluations": r.steps.tolist(),
        "examples_seen": (r.epochs_run * n).tolist(),
        "diverged": int(r.failed.sum()),
        "stop_reasons": r.reasons,
        "members": r.members,
        "wall_time_s": r.wall_s,
        "compile_time_s": r.compile_s,
        "steps_per_second": r.total_steps / max(r.wall_s - r.compile_s, 1e-9),
        "curves": {
            "epoch": epochs.tolist(),
            "examples_seen": (epochs * n).tolist(),
            "gradient_evaluations": (epochs * r.steps_per_epoch).tolist(),
            "seconds": _finite_list(r.seconds[1:]),
            "train_loss": _curve(r.train_loss),
            "batch_loss": _curve(r.batch_loss),
            "test_loss": _curve(r.test_loss),
            "test_accuracy": _curve(r.test_accuracy),
        },
    }


def _curve_table(r: _Race, initial: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """The regime's training-loss curves in gd.plot's long format, from epoch 0."""
    seeds = len(initial)
    epochs = np.r_[0, r.epochs]
    return {
        "seed": np.repeat(np.arange(seeds), len(epochs)),
        "epoch": np.tile(epochs, seeds),
        "train_loss": np.column_stack([initial, r.train_loss]).ravel(),
        "examples": np.tile(epochs * n, seeds),
        "steps": np.tile(epochs * r.steps_per_epoch, seeds),
        "seconds": np.tile(r.seconds, seeds),
    }


def _figure(races: list[_Race], problem: dict, args, initial: np.ndarray):
    """The three-panel picture (a matplotlib Figure, not registered with pyplot)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(
            "the picture needs matplotlib: pip install 'gdjax[plot]'."
        ) from e

    import gdjax as gd

    n = problem["n_train"]
    fig = Figure(figsize=(15, 5.0), dpi=100, layout="constrained")
    by_examples, by_steps, by_time = fig.subplots(1, 3)
    tables, colors = {}, {}
    for r in races:
        picked = (
            f", best of {'/'.join(f'{c:g}' for c in r.candidates)}"
            if len(r.candidates) > 1
            else ""
        )
        label = f"{r.name} (B={r.batch_size}, lr={r.learning_rate:g}{picked})"
        tables[label] = _curve_table(r, initial, n)
        colors[label] = COLORS[r.name]
    ylabel = "training loss (cross-entropy, whole training set)"
    common = dict(value="train_loss", colors=colors, ylabel=ylabel, legend=False)
    gd.plot.loss_curves(tables, by_examples, x="examples", **common)
    gd.plot.loss_curves(tables, by_steps, x="steps", **common)
    members = max(r.members for r in races)
    gd.plot.loss_curves(
        tables,
        by_time,
        x="seconds",
        xlabel="wall-clock seconds (compilation excluded)",
        **common,
    )
    bottom = min(ax.get_ylim()[0] for ax in (by_examples, by_steps, by_time))
    top = max(ax.get_ylim()[1] for ax in (by_examples, by_steps, by_time))
    for ax in (by_examples, by_steps, by_time):
        ax.set_ylim(bottom, top)
    by_examples.set_title("per example seen (the same data for all)")
    by_steps.set_title("per gradient evaluation (step)")
    by_time.set_title(f"per second ({members} members in one program)")
    fig.legend(
        *by_examples.get_legend_handles_labels(),
        loc="outside lower center",
        ncol=len(tables),
        frameon=False,
    )
    # The epoch scale on top of the examples axis (examples seen = epochs x n).
    top_axis = by_examples.secondary_xaxis(
        "top", functions=(lambda x: x / n, lambda e: e * n)
    )
    top_axis.set_xlabel("epoch")
    seeds = args.seeds
    band = "median and 10–90% band" if seeds > 1 else "a single seed"
    swept = any(len(r.candidates) > 1 for r in races)
    how = (
        "each regime's learning rate: the lowest final training loss in a vmapped "
        "sweep over a few rates"
        if swept
        else "learning rates as given"
    )
    fig.suptitle(
        "Full-batch, mini-batch and stochastic gradient descent on the 8×8 digits: "
        f"{_model_name(problem['widths'])}, n = {n:,}\n"
        f"{band} over {seeds} seed{'s' * (seeds != 1)}, from the initial "
        f"parameters (epoch 0); {how}",
        fontsize=11,
    )
    return fig
