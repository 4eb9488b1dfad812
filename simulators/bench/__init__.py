"""Benchmarks: ``python -m simulators.bench NAME [--quick]``.

Each benchmark is a module ``simulators/bench/NAME.py`` with ``add_args(parser)`` and
``run(args) -> dict``. The dispatcher prints the figures as ONE JSON object on the last line
of output. Every benchmark measures a baseline in the same run and reports a ratio against it
(machines are noisy; absolute times are not stable). ``--quick`` finishes in under a minute.
Results are recorded in docs/benchmarks.md with the command that produced them.
"""
