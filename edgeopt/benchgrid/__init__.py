"""``edgeopt bench``: a bundle timed over a grid of providers, threads, batch sizes and
sequence lengths, with cold start and peak memory from fresh processes and PyTorch eager
beside it when the source model is at hand.

:mod:`~edgeopt.benchgrid.spec` is the grid, :mod:`~edgeopt.benchgrid.inputs` reads the
bundle and makes its feeds, :mod:`~edgeopt.benchgrid.runner` the timed call (IO binding on
a device provider), :mod:`~edgeopt.benchgrid.coldstart` the fresh-process measurement,
:mod:`~edgeopt.benchgrid.result` the report section and :mod:`~edgeopt.benchgrid.run`
puts them together.
"""

from __future__ import annotations

from edgeopt.benchgrid.run import bench_bundle, write_to_report
from edgeopt.benchgrid.spec import GridSpec

__all__ = ["GridSpec", "bench_bundle", "write_to_report"]
