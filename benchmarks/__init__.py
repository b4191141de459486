"""Benchmarks of stepwise, kept outside the library (as diffrax keeps its PyTorch comparison in ``benchmarks/``).

Run from the repository root, as a script or a module:

* ``python benchmarks/bench_train.py --out bench`` (``make bench-train``): time per SSL training step, JAX vs
  the same step in PyTorch (a benchmark-only dependency) -> ``bench_train.json`` / ``.png``;
* ``python benchmarks/bench_ntk.py --out bench`` (``make bench-ntk``): empirical-NTK time, peak memory and FLOP/s
  per backend and size -> ``bench_ntk.json`` / ``.png``;
* ``python benchmarks/bench_fig_linear.py`` (``make bench``): wall time of ``make fig-linear``;
* ``python benchmarks/ntk_devices.py``: the NTK spread over forced host devices;
* ``benchmarks/gpu/``: the prepared GPU check (``make gpu-check``).

:mod:`benchmarks.common` holds what they share.
"""
