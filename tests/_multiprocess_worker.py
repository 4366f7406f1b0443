"""One process of tests/test_multiprocess.py's kill test.

It is ``examples/multiprocess_launch.py`` (imported, its ``run`` called
unchanged) with one addition: the process whose rank is ``GDJAX_KILL_RANK``
kills itself with SIGKILL, as a crashed host would vanish, once the run has
passed epoch ``GDJAX_KILL_EPOCH`` (in the callback that follows each
checkpoint). The others must then stop with an error, not hang.
``GDJAX_KILL_SIGNAL=STOP`` freezes it instead (SIGSTOP: a hung host, alive
but silent), which only the coordinator's heartbeat timeout can detect.
``GDJAX_OUT_<rank>``, if set, replaces ``--out`` for that rank (a folder no
other process sees, as without a shared file system).
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import signal
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
LAUNCHER = ROOT / "examples" / "multiprocess_launch.py"


def load_launcher():
    spec = importlib.util.spec_from_file_location("multiprocess_launch", LAUNCHER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    import jax
    import numpy as np

    launcher = load_launcher()
    rank = int(os.environ["GDJAX_KILL_RANK"])
    epoch = int(os.environ["GDJAX_KILL_EPOCH"])
    name = os.environ.get("GDJAX_KILL_SIGNAL", "KILL")

    def kill_at_epoch(result) -> bool:
        if jax.process_index() == rank and int(np.max(result.epoch)) >= epoch:
            print(
                f"process {rank}: SIG{name} at {time.time():.3f} (epoch "
                f"{int(result.epoch)})",
                flush=True,
            )
            os.kill(os.getpid(), getattr(signal, f"SIG{name}"))
        return False

    argv = sys.argv[1:]
    own = os.environ.get(f"GDJAX_OUT_{os.environ.get('JAX_PROCESS_ID', '0')}")
    if own is not None:
        argv[argv.index("--out") + 1] = own
    launcher.run(argv, callback=kill_at_epoch)


if __name__ == "__main__":
    main()
