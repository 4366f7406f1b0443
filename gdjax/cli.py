"""The ``gdjax`` command.

``gdjax demo`` races plain (full-batch), mini-batch and stochastic gradient
descent on the built-in 8×8 digits: the same small MLP, the same initial
parameters for each seed, the same number of epochs (so every regime sees the
same number of examples), each regime one vmapped sweep over the seeds. It
prints a table (final training loss and test accuracy, mean ± std over seeds;
epochs; gradient evaluations; wall time and throughput), and writes a picture
(``demo.png``) and the numbers behind it (``demo.json``) to ``--out``.

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

from gdjax import __version__

__all__ = ["main"]

DEFAULT_SEEDS = 5
DEFAULT_EPOCHS = 30
DEFAULT_BATCH = 32
DEFAULT_HIDDEN = 32
# Picked by hand on this problem, each a little below where its regime turns
# erratic (measured with 5 seeds: full batch oscillates at 1.0 and diverges at
# 2.0; mini-batch 32 spikes at 0.3; stochastic spikes at 0.05).
DEFAULT_LR = {"full batch": 0.7, "mini-batch": 0.1, "stochastic": 0.02}
# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
COLORS = {"full batch": "#0072B2", "mini-batch": "#009E73", "stochastic": "#D55E00"}
RESULTS_JSON = "demo.json"
PICTURE_PNG = "demo.png"
_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


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
    demo = commands.add_parser(
        "demo",
        help="race full-batch, mini-batch and stochastic descent on the digits",
        description="Train the same small MLP on the built-in 8x8 digits with "
        "full-batch, mini-batch and stochastic gradient descent, over several "
        "seeds (each regime one vmapped program), for the same number of "
        "epochs. Prints a table, writes a picture (demo.png) and the numbers "
        "behind it (demo.json) to --out. About 20 s on 2 CPU cores with the "
        "defaults, most of it compilation.",
        epilog="examples: gdjax demo | gdjax demo --seeds 8 --epochs 50 --out "
        "runs/a | gdjax demo --lr 0.05 --batch-size 128 | gdjax demo --hidden 0 "
        "(softmax regression)",
    )
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
        help="one learning rate for all three regimes (default: a rate per "
        "regime, see below)",
    )
    for name, flag in (
        ("full-batch", "--lr-full"),
        ("mini-batch", "--lr-minibatch"),
        ("stochastic", "--lr-stochastic"),
    ):
        default = DEFAULT_LR[name.replace("full-batch", "full batch")]
        demo.add_argument(
            flag,
            type=_learning_rate,
            default=None,
            metavar="LR",
            help=f"learning rate of {name} descent; overrides --lr (default "
            f"{default:g})",
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
        "--quiet",
        action="store_true",
        help="no progress and no table: print only the paths of the files written",
    )
    demo.set_defaults(run=_demo, command_parser=demo)
    return parser


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


# -------------------------------------------------------------------- the sweep


@functools.cache
def _compile_clock() -> list[float]:
    """Seconds of XLA compilation so far in this process (one listener, once)."""
    import jax

    total = [0.0]

    def listener(event: str, duration: float, **kwargs: Any) -> None:
        del kwargs
        if event == _COMPILE_EVENT:
            total[0] += duration

    jax.monitoring.register_event_duration_secs_listener(listener)
    return total


def _seed_sweep(
    loss: Callable,
    init: Callable,
    data: Any,
    transform: Any,
    *,
    seeds: Sequence[int],
    epochs: int,
    regime: Any,
    chunk_epochs: int,
    callback: Callable[[Any], Any] | None,
    **fit_kwargs: Any,
) -> Any:
    """One vmapped run per seed, ``gd.sweep.sweep``: a FitResult stacked over seeds.

    The only place the command touches the sweep machinery. Seed ``s`` draws
    its initial parameters from ``gd.sweep.seed_keys(s)[0]``, so the three
    regimes start from the same parameters for the same seed.
    """
    from gdjax import sweep

    result = sweep.sweep(
        loss,
        init,
        data,
        transform,
        seeds=list(seeds),
        epochs=epochs,
        regime=regime,
        chunk_epochs=chunk_epochs,
        callback=callback,
        **fit_kwargs,
    )
    if result.axes != ("seed",):  # pragma: no cover - a contract check
        raise AssertionError(f"expected a sweep over seeds only, got {result.axes}")
    return result.result


# ------------------------------------------------------------------------- demo


class _Race(NamedTuple):
    """One regime's outcome, on the host."""

    name: str
    describe: str
    batch_size: int
    learning_rate: float
    steps_per_epoch: int
    train_loss: np.ndarray  # (seeds, epochs): full training set, after each epoch
    batch_loss: np.ndarray  # (seeds, epochs): mean of the epoch's batch losses
    test_loss: np.ndarray  # (seeds, epochs)
    test_accuracy: np.ndarray  # (seeds, epochs)
    epochs_run: np.ndarray  # (seeds,)
    steps: np.ndarray  # (seeds,)
    failed: np.ndarray  # (seeds,) bool
    reasons: list[str]
    wall_s: float
    compile_s: float
    result: Any  # the stacked FitResult


def _last(values: np.ndarray) -> np.ndarray:
    """Each row's last finite value (NaN if none)."""
    finite = np.isfinite(values)
    idx = values.shape[-1] - 1 - np.argmax(finite[..., ::-1], axis=-1)
    out = np.take_along_axis(values, idx[..., None], axis=-1)[..., 0]
    return np.where(finite.any(-1), out, np.nan)


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    v = values[np.isfinite(values)]
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
    lr: float,
    *,
    index: int,
    total: int,
    problem: dict,
    args: argparse.Namespace,
    progress: _Progress,
) -> _Race:
    import jax

    import gdjax as gd

    n = problem["n_train"]
    plan = gd.batching.plan(regime, n)
    title = f"[{index}/{total}] {name} (B={plan.batch_size}, lr={lr:g})"
    progress.start(title, args.epochs)

    def callback(state: Any) -> bool:
        progress.update(state)
        return False

    clock = _compile_clock()
    compiled_before = clock[0]
    start = time.perf_counter()
    result = _seed_sweep(
        problem["loss"],
        problem["init"],
        problem["train"],
        gd.sgd(lr),
        seeds=range(args.seeds),
        epochs=args.epochs,
        regime=regime,
        chunk_epochs=max(1, math.ceil(args.epochs / 30)),
        callback=callback,
        val_data=problem["test"],
        metric=problem["metric"],
        monitors={"train_loss": problem["loss"]},
    )
    result = jax.block_until_ready(result)
    wall = time.perf_counter() - start
    compile_s = min(clock[0] - compiled_before, wall)
    progress.finish(wall, int(np.max(result.epoch)))

    status = np.asarray(result.status).reshape(-1)
    reasons = [gd.stopping.Status(int(s)).message for s in status]
    return _Race(
        name=name,
        describe=regime.describe(),
        batch_size=plan.batch_size,
        learning_rate=lr,
        steps_per_epoch=plan.steps,
        train_loss=np.asarray(result.history.monitors["train_loss"], float),
        batch_loss=np.asarray(result.history.loss, float),
        test_loss=np.asarray(result.history.val_loss, float),
        test_accuracy=np.asarray(result.history.metric, float),
        epochs_run=np.asarray(result.epoch).reshape(-1),
        steps=np.asarray(result.steps).reshape(-1),
        failed=status >= int(gd.stopping.Status.NONFINITE_LOSS),
        reasons=reasons,
        wall_s=wall,
        compile_s=compile_s,
        result=result,
    )


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
    lrs = {
        name: getattr(args, flag) or args.lr or DEFAULT_LR[name]
        for name, flag in (
            ("full batch", "lr_full"),
            ("mini-batch", "lr_minibatch"),
            ("stochastic", "lr_stochastic"),
        )
    }
    import jax

    import gdjax as gd

    problem = _problem(args.hidden)
    if args.batch_size > problem["n_train"]:
        parser.error(
            f"argument --batch-size: must be at most {problem['n_train']} (the "
            f"digits training set), got {args.batch_size}"
        )
    out = _check_out(parser, args.out)
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
            lrs[name],
            index=i,
            total=len(regimes),
            problem=problem,
            args=args,
            progress=progress,
        )
        for i, (name, regime) in enumerate(regimes, start=1)
    ]
    if not args.quiet:
        print()
        print(_table(races, args.seeds, problem["n_test"]))
    record = _record(races, problem, args, header)
    written = []
    if not args.no_plot:
        try:
            figure = _figure(races, problem, args)
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
    for p in written:
        print(p if args.quiet else f"wrote {_shown(p)}")
    return 0


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
    rows = []
    notes = []
    for r in races:
        loss_m, loss_s = _mean_std(_last(r.train_loss))
        acc_m, acc_s = _mean_std(_last(r.test_accuracy))
        run_s = max(r.wall_s - r.compile_s, 1e-9)
        epochs = (
            f"{r.epochs_run.min()}"
            if r.epochs_run.min() == r.epochs_run.max()
            else f"{r.epochs_run.min()}-{r.epochs_run.max()}"
        )
        rows.append(
            [
                r.name,
                str(r.batch_size),
                f"{r.learning_rate:g}",
                f"{loss_m:.4f} ± {loss_s:.4f}",
                f"{100 * acc_m:.1f}% ± {100 * acc_s:.1f}%",
                epochs,
                f"{int(r.steps.max()):,}",
                f"{r.wall_s:.2f}",
                f"{r.compile_s:.2f}",
                f"{int(r.steps.sum()) / run_s:,.0f}",
            ]
        )
        if r.failed.any():
            notes.append(
                f"{r.name}: {int(r.failed.sum())} of {seeds} seeds diverged "
                f"({r.reasons[int(np.argmax(r.failed))]}); the statistics are "
                "over the others. Try a smaller learning rate."
            )
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
    text.append(
        "train loss: cross-entropy on the whole training set after the last epoch; "
        f"test acc: on the {n_test} held-out images."
    )
    text.append(
        "grad evals: gradient steps per seed (a step averages the gradient over "
        "its batch); steps/s: over all seeds, wall time less compile time."
    )
    text += notes
    return "\n".join(text)


def _finite_list(values: np.ndarray) -> list:
    """A nested list with NaN/inf as None (strict JSON)."""
    arr = np.asarray(values, dtype=float)
    return np.where(np.isfinite(arr), arr, None).tolist()


def _stats(values: np.ndarray) -> dict:
    mean, std = _mean_std(values)
    return {
        "mean": mean if math.isfinite(mean) else None,
        "std": std if math.isfinite(std) else None,
        "per_seed": _finite_list(values),
    }


def _curve(values: np.ndarray) -> dict:
    from gdjax.plot import _nan_stats

    mean, std, lo, hi, _ = _nan_stats(values, axis=0)
    return {
        "mean": _finite_list(mean),
        "std": _finite_list(std),
        "min": _finite_list(lo),
        "max": _finite_list(hi),
        "per_seed": _finite_list(values),
    }


def _record(races: list[_Race], problem: dict, args, header: str) -> dict:
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
        "regimes": [_regime_record(r, n) for r in races],
    }


def _regime_record(r: _Race, n: int) -> dict:
    from gdjax.plot import history_epochs

    epochs = history_epochs(r.result)
    return {
        "name": r.name,
        "regime": r.describe,
        "batch_size": r.batch_size,
        "learning_rate": r.learning_rate,
        "steps_per_epoch": r.steps_per_epoch,
        "final_train_loss": _stats(_last(r.train_loss)),
        "final_test_loss": _stats(_last(r.test_loss)),
        "final_test_accuracy": _stats(_last(r.test_accuracy)),
        "epochs_run": r.epochs_run.tolist(),
        "gradient_evaluations": r.steps.tolist(),
        "examples_seen": (r.epochs_run * n).tolist(),
        "diverged": int(r.failed.sum()),
        "stop_reasons": r.reasons,
        "wall_time_s": r.wall_s,
        "compile_time_s": r.compile_s,
        "steps_per_second": float(r.steps.sum()) / max(r.wall_s - r.compile_s, 1e-9),
        "curves": {
            "epoch": epochs.tolist(),
            "examples_seen": (epochs * n).tolist(),
            "gradient_evaluations": (epochs * r.steps_per_epoch).tolist(),
            "train_loss": _curve(r.train_loss),
            "batch_loss": _curve(r.batch_loss),
            "test_loss": _curve(r.test_loss),
            "test_accuracy": _curve(r.test_accuracy),
        },
    }


def _figure(races: list[_Race], problem: dict, args):
    """The two-panel picture (a matplotlib Figure, not registered with pyplot)."""
    from gdjax import plot

    plot._matplotlib()  # ImportError with the install hint when matplotlib is absent
    from matplotlib.figure import Figure

    n = problem["n_train"]
    fig = Figure(figsize=(11, 4.6), dpi=100, layout="constrained")
    left, right = fig.subplots(1, 2, sharey=True)
    results = {
        f"{r.name} (B={r.batch_size}, lr={r.learning_rate:g})": r.result for r in races
    }
    colors = {label: COLORS[r.name] for label, r in zip(results, races, strict=True)}
    ylabel = "training loss (cross-entropy, whole training set)"
    common = dict(value="train_loss", colors=colors, band="minmax", ylabel=ylabel)
    plot.loss_curves(
        results, left, x="examples", examples_per_epoch=n, legend=False, **common
    )
    plot.loss_curves(results, right, x="steps", legend=False, **common)
    fig.legend(
        *left.get_legend_handles_labels(),
        loc="outside lower center",
        ncol=len(results),
        frameon=False,
    )
    right.set_ylabel("")
    right.tick_params(labelleft=True)
    # The epoch scale on top of the examples axis (examples seen = epochs x n).
    top = left.secondary_xaxis("top", functions=(lambda x: x / n, lambda e: e * n))
    top.set_xlabel("epoch")
    seeds = args.seeds
    band = "min–max band" if seeds > 1 else "a single seed"
    fig.suptitle(
        "Full-batch, mini-batch and stochastic gradient descent on the 8×8 digits\n"
        f"{_model_name(problem['widths'])}, n = {n:,} training images; "
        f"mean and {band} over {seeds} seed{'s' * (seeds != 1)}",
        fontsize=11,
    )
    return fig
