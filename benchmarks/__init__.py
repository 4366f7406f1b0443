"""gdjax benchmarks: jitted gradient descent against what researchers use today.

Run ``python -m benchmarks`` (full), ``python -m benchmarks --quick`` (under 3
minutes on 2 cores) or ``--smoke`` (seconds, for the tests); see
``benchmarks/README.md`` for the workloads, the contenders, what every column
means and the targets. Nothing here is part of the ``gdjax`` package.
"""
