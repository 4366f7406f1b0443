"""Shared pytest configuration: strict rank promotion, a compile counter, the
``slow`` tests, and one compilation cache shared by the test processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")

# Tests that start Python subprocesses (examples, benchmarks, multi-process and
# 8-device runs, the packaged CLI) or run whole programs (the demo, the
# reproductions' example runs). They are marked ``slow`` and left out of a
# plain ``pytest``; ``pytest --runslow`` (what ``.ci/run`` and the README's test
# command run) includes them. A test that uses one of these fixtures is marked
# ``slow`` here.
SLOW_FIXTURES = frozenset(
    {"smoke", "sharding_results", "eight_devices", "demo", "eos_run", "cbs_run"}
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--runslow",
        action="store_true",
        help="also run the tests marked slow (subprocesses, the demo): the full "
        "suite that .ci/run runs",
    )


_CACHE_ENV = "GDJAX_TEST_COMPILATION_CACHE"


def quick_compile(config: pytest.Config) -> None:
    """The default run (without ``--runslow``) compiles with XLA's older CPU
    emitters (:data:`gdjax.QUICK_COMPILE`, for every program of the test
    process): compiling is most of the suite's time, and they compile about
    40% faster, to bitwise the same numbers on the benchmark's workloads (the
    suite: 3 min 22 s -> 2 min 27 s on 2 cores). The full run
    (``--runslow``: ``.ci/run``) keeps XLA's defaults, the code users run. An
    ``XLA_FLAGS`` that names the option wins. XLA reads the flag when JAX
    starts its CPU backend, after this."""
    flags = os.environ.get("XLA_FLAGS", "")
    if config.getoption("--runslow") or "xla_cpu_use_fusion_emitters" in flags:
        return
    os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_use_fusion_emitters=false".strip()


def pytest_configure(config: pytest.Config) -> None:
    """Share compiled programs between the test processes of one run.

    ``pytest -n`` (pytest-xdist) runs the tests in several processes, and many
    of them compile the same programs (the same small problems). The first
    process to compile one writes it to a folder made for this run, and the
    others load it (JAX's persistent compilation cache, every program written).
    The folder is new for every run: nothing carries over between runs, so
    each run starts from cold caches. A load counts as a compilation for the
    ``compiles`` fixture (a new program was needed either way). Subprocesses
    started by tests do not use it. A process may read an entry that another
    is still writing: JAX then warns (ignored in ``pyproject.toml``) and
    compiles the program itself. (JAX's locked cache, turned on by a size
    limit, avoids that but made the suite a minute slower: it rescans the
    folder at every write.)
    """
    quick_compile(config)
    folder = os.environ.get(_CACHE_ENV)
    if folder is None:  # the controlling process (or a run without -n)
        folder = tempfile.mkdtemp(prefix="gdjax-test-cache-")
        os.environ[_CACHE_ENV] = folder
        config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    if config.getoption("--runslow"):
        return
    dropped = [item for item in items if item.get_closest_marker("slow")]
    keep = [item for item in items if item not in dropped]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_CACHE_LOAD_EVENT = "/jax/compilation_cache/cache_hits"  # see pytest_configure
_counts = {"n": 0}


def _listener(event: str, duration: float, **kwargs) -> None:
    del duration, kwargs
    if event == _COMPILE_EVENT:
        _counts["n"] += 1


def _load_listener(event: str, **kwargs) -> None:
    del kwargs
    if event == _CACHE_LOAD_EVENT:
        _counts["n"] += 1


jax.monitoring.register_event_duration_secs_listener(_listener)
jax.monitoring.register_event_listener(_load_listener)


class CompileCounter:
    """Counts the programs built inside a ``with`` block (``.count``): XLA
    backend compilations and loads from the run's shared cache."""

    def __init__(self) -> None:
        self.count = 0

    @contextlib.contextmanager
    def __call__(self):
        start = _counts["n"]
        try:
            yield self
        finally:
            self.count = _counts["n"] - start


@pytest.fixture
def compiles() -> CompileCounter:
    """``with compiles() as c: ...; assert c.count == 0``."""
    return CompileCounter()


@pytest.fixture
def x64():
    """Run a test with 64-bit mode on."""
    with jax.enable_x64(True):
        yield
