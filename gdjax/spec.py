r"""What shapes a run: three small frozen values, validated once.

Every entry point that trains (:func:`gdjax.fit`, :func:`gdjax.sweep`,
:func:`gdjax.fit_stream`, :func:`gdjax.fit_data_parallel`,
:func:`gdjax.checkpoint.fit_resumable`, the range test) takes the options of a
run as the same three values, or as flat keywords that build them:

* :class:`Stopping` — when the run ends: ``max_steps``, ``target_loss``,
  ``grad_tol``, ``tol`` with ``patience``, ``until``, and ``guard`` (stop on
  NaN/inf). Its numbers become a :class:`~gdjax.stopping.Criteria` of arrays
  in the run's dtype, so new values (or a sweep over them) reuse the program.
* :class:`Recording` — what the run records each epoch: ``metric``,
  ``monitors`` every ``monitor_every`` epochs, at most ``history_size`` rows.
* :class:`Driving` — how the host drives it: ``chunk_epochs``, ``callback``,
  ``progress``, ``donate``, ``raise_on_nonfinite``, ``check_finite``,
  ``compiler_options``.

The flat keywords are the fields of the three classes; :func:`from_options`
sorts them (from :func:`dataclasses.fields`, never from a list written
elsewhere), so adding an option means adding one field and its check here.

Examples:
  >>> import gdjax as gd
  >>> stop, rec, drive = gd.spec.from_options(tol=1e-3, history_size=50)
  >>> stop.tol, stop.patience, rec.history_size, drive.chunk_epochs
  (0.001, 5, 50, None)
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping
from typing import Any

from gdjax import _validate as V
from gdjax.errors import GdjaxTypeError, GdjaxValueError
from gdjax.stopping import Criteria, make_criteria


@dataclasses.dataclass(frozen=True)
class Stopping:
    """When a run stops: the first criterion that holds (see :mod:`gdjax.stopping`).

    Attributes:
      max_steps: stop after this many gradient steps.
      target_loss: stop when an epoch's mean loss is at most this.
      grad_tol: stop when an epoch's mean gradient norm is at most this.
      tol: plateau: stop after ``patience`` epochs in a row without a relative
        improvement of the best loss larger than ``tol``.
      patience: epochs without improvement (needs ``tol``; default 5 with it).
      until: ``until(history, epoch) -> bool``, traced into the program.
      guard: reject a step whose loss, gradient or new parameters are not
        finite, and stop there (the parameters stay the last finite ones).
    """

    max_steps: int | None = None
    target_loss: float | None = None
    grad_tol: float | None = None
    tol: float | None = None
    patience: int | None = None
    until: Callable | None = None
    guard: bool = True

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.max_steps is not None:
            set_(self, "max_steps", V.check_count(self.max_steps, "max_steps"))
        if self.target_loss is not None:
            set_(self, "target_loss", V.check_scalar(self.target_loss, "target_loss"))
        for name in ("grad_tol", "tol"):
            value = getattr(self, name)
            if value is not None:
                set_(self, name, V.check_scalar(value, name, low=0.0))
        if self.patience is not None:
            if self.tol is None:
                raise GdjaxValueError(
                    f"patience={self.patience!r} is given without tol; patience "
                    "counts epochs without relative improvement above tol: pass "
                    "tol=... too (or drop patience)."
                )
            set_(self, "patience", V.check_count(self.patience, "patience"))
        elif self.tol is not None:
            set_(self, "patience", 5)
        V.check_callable(self.until, "until", "until(history, epoch) -> bool", 2)
        set_(self, "guard", V.check_flag(self.guard, "guard"))

    def criteria(self, dtype: Any) -> Criteria:
        """The numbers as arrays, thresholds in the run's ``dtype``."""
        return make_criteria(
            max_steps=self.max_steps,
            target_loss=self.target_loss,
            grad_tol=self.grad_tol,
            tol=self.tol,
            patience=self.patience,
            dtype=dtype,
        )


def _check_eval_fn(fn: Any, name: str, call: str) -> None:
    """A metric or monitor: 2 positional arguments, or 3 (a stateful loss's
    state in the middle; the run checks which one its loss needs)."""
    try:
        V.check_callable(fn, name, call, 3)
    except TypeError:
        V.check_callable(fn, name, call, 2)


@dataclasses.dataclass(frozen=True)
class Recording:
    """What a run records after each epoch, beside the loss and gradient norm.

    Attributes:
      metric: ``metric(params, batch) -> scalar`` on ``val_data`` (or ``data``);
        with a stateful loss (:func:`gdjax.stateful`)
        ``metric(params, state, batch)``.
      monitors: ``{name: fn(params, data) -> scalar}``, every ``monitor_every``
        epochs (a sorted tuple of pairs once built); ``fn(params, state,
        data)`` with a stateful loss.
      monitor_every: epochs between monitor evaluations.
      history_size: the most history rows kept; with more epochs, row
        ``(e - 1) // stride`` holds epoch ``e``'s record (the last of each
        window of ``stride = ceil(epochs / history_size)`` epochs).
      step_stats: record each epoch's mean loss and gradient norm over its
        steps (the default). ``False`` takes ``jax.grad`` alone at each step,
        with no loss value and no gradient norm: the history's ``loss`` and
        ``grad_norm`` are NaN, and what reads them is refused (``target_loss``,
        ``grad_tol``, ``tol``, and the NaN guard: pass ``guard=False``). For
        steps so small that these cost as much as the gradient (batch-1 SGD
        on a linear model, the benchmark's W5: 1.4x faster).
    """

    metric: Callable | None = None
    monitors: Any = ()
    monitor_every: int = 1
    history_size: int = 10_000
    step_stats: bool = True

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        _check_eval_fn(self.metric, "metric", "metric(params, batch) -> scalar")
        monitors = self.monitors
        if monitors is None:
            monitors = ()
        if isinstance(monitors, Mapping):
            monitors = tuple(sorted(monitors.items()))
        elif not isinstance(monitors, tuple):
            raise GdjaxTypeError(
                "monitors must be a dict {name: fn(params, data) -> scalar}, got "
                f"{V.describe(monitors)}."
            )
        for name, fn in monitors:
            if not isinstance(name, str) or not name:
                raise GdjaxTypeError(
                    f"monitors keys must be non-empty strings, got {name!r}."
                )
            if fn is None:
                raise GdjaxTypeError(f"monitors[{name!r}] must be callable, got None.")
            _check_eval_fn(fn, f"monitors[{name!r}]", "fn(params, data) -> scalar")
        set_(self, "monitors", monitors)
        set_(self, "monitor_every", V.check_count(self.monitor_every, "monitor_every"))
        if self.monitor_every != 1 and not monitors:
            raise GdjaxValueError(
                f"monitor_every={self.monitor_every} is given without monitors, so "
                "it would be ignored; pass monitors={name: fn(params, data)} too "
                "(or drop monitor_every)."
            )
        set_(self, "history_size", V.check_count(self.history_size, "history_size"))
        set_(self, "step_stats", V.check_flag(self.step_stats, "step_stats"))

    def stride(self, epochs: int) -> int:
        """Epochs per history row for a budget of ``epochs``."""
        return -(-epochs // self.history_size)


@dataclasses.dataclass(frozen=True)
class Driving:
    """How the host drives a run (nothing here changes the numbers).

    Attributes:
      chunk_epochs: run in compiled chunks of this many epochs (one program,
        reused), so that ``callback`` and ``progress`` see the run; bitwise the
        single-program run.
      callback: ``callback(result) -> bool`` after every chunk, the last one
        included; a truthy return stops a run that is still going.
      progress: show a tqdm progress bar (``gdjax[progress]``).
      donate: donate the run state's buffers to the program (the ``params``
        passed in must not be used afterwards).
      raise_on_nonfinite: raise :class:`~gdjax.NonFiniteError` (carrying the
        result) instead of returning a failed result.
      check_finite: refuse data containing NaN or inf.
      compiler_options: XLA options for the compiled run, passed to
        ``jax.jit(..., compiler_options=...)`` (kept as sorted ``(name,
        value)`` pairs). :data:`gdjax.QUICK_COMPILE` trades run time for
        compile time on CPU; an option XLA does not know fails at compile time
        with XLA's message.
    """

    chunk_epochs: int | None = None
    callback: Callable | None = None
    progress: bool = False
    donate: bool = False
    raise_on_nonfinite: bool = False
    check_finite: bool = True
    compiler_options: Any = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "compiler_options", check_compiler_options(self.compiler_options))
        if self.chunk_epochs is not None:
            set_(self, "chunk_epochs", V.check_count(self.chunk_epochs, "chunk_epochs"))
        V.check_callable(self.callback, "callback", "callback(result) -> bool", 1)
        for name in ("progress", "donate", "raise_on_nonfinite", "check_finite"):
            set_(self, name, V.check_flag(getattr(self, name), name))

    @property
    def chunked(self) -> bool:
        return (
            self.chunk_epochs is not None or self.callback is not None or self.progress
        )


def check_compiler_options(value: Any) -> tuple[tuple[str, Any], ...]:
    """``compiler_options`` as sorted ``(name, value)`` pairs (``()`` for None).

    Raises:
      TypeError: not a mapping (or pairs) of option names (str) to a bool, an
        int, a float or a str.
    """
    if value is None:
        return ()
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, tuple) and all(
        isinstance(p, tuple) and len(p) == 2 for p in value
    ):
        items = list(value)
    else:
        raise GdjaxTypeError(
            "compiler_options must be a mapping of XLA option names to values, "
            f"e.g. gd.QUICK_COMPILE, got {type(value).__name__}."
        )
    for name, v in items:
        if not isinstance(name, str):
            raise GdjaxTypeError(
                f"compiler_options keys must be XLA option names (str), got {name!r}."
            )
        if not isinstance(v, (bool, int, float, str)):
            raise GdjaxTypeError(
                f"compiler_options[{name!r}] must be a bool, int, float or str, "
                f"got {type(v).__name__}."
            )
    return tuple(sorted(items))


SPECS = (Stopping, Recording, Driving)
"""The three option values, in the order :func:`from_options` returns them."""

OPTION_NAMES: dict[str, type] = {
    f.name: cls for cls in SPECS for f in dataclasses.fields(cls)
}
"""Every flat option keyword and the value it belongs to."""


def from_options(
    stopping: Stopping | None = None,
    recording: Recording | None = None,
    driving: Driving | None = None,
    /,
    **options: Any,
) -> tuple[Stopping, Recording, Driving]:
    """Build the three values from optional base values and flat keywords.

    Args:
      stopping, recording, driving: base values (defaults if None).
      **options: any field of the three classes, e.g. ``tol=1e-3``; each
        replaces that field of its base value.

    Returns:
      ``(stopping, recording, driving)``, each validated.

    Raises:
      TypeError: an unknown keyword (the message lists the valid ones) or a
        base value of the wrong type.
    """
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        close = [
            m for u in unknown for m in difflib.get_close_matches(u, OPTION_NAMES, 1)
        ]
        hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
        raise GdjaxTypeError(
            f"unexpected keyword argument(s) {unknown}{hint}; the run options are "
            f"{sorted(OPTION_NAMES)}."
        )
    out = []
    for cls, base in zip(SPECS, (stopping, recording, driving), strict=True):
        name = cls.__name__.lower()
        if base is not None and not isinstance(base, cls):
            raise GdjaxTypeError(
                f"{name} must be a gd.{cls.__name__}, got {V.describe(base)}."
            )
        mine = {k: v for k, v in options.items() if OPTION_NAMES[k] is cls}
        if base is None:
            out.append(cls(**mine))
        else:
            out.append(dataclasses.replace(base, **mine) if mine else base)
    check_step_stats(out[0], out[1])
    return out[0], out[1], out[2]


def check_step_stats(stopping: Stopping, recording: Recording) -> None:
    """``step_stats=False`` records no per-step loss: refuse what reads it."""
    if recording.step_stats:
        return
    criteria = ("target_loss", "grad_tol", "tol")
    readers = [n for n in criteria if getattr(stopping, n) is not None]
    if stopping.guard:
        readers.append("guard")
    if readers:
        raise GdjaxValueError(
            f"step_stats=False records no loss or gradient norm, which {readers} "
            "read (the NaN guard checks each step's loss); drop them, and pass "
            "guard=False to run without the guard."
        )


__all__ = [
    "OPTION_NAMES",
    "Driving",
    "Recording",
    "Stopping",
    "from_options",
]
