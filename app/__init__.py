"""calogan: a GAN inference service for electromagnetic calorimeter showers.

Subpackages, from the bottom up (imports point downwards only):

- ``physics``: detector description, the parametric reference Monte Carlo, observables, HDF5 I/O.
- ``validation``: two-sample physics metrics, plots and reports (imports ``physics``).
- ``model``: the Conv2D GAN, its training, export and loading (imports ``physics``).
- ``serving``: the HTTP service, dynamic batcher and backends (imports ``model.loading``, ``physics``).
- ``cli``: the ``calogan`` command line; imported by nothing.

The leaves ``errors``, ``config`` and ``log`` may be imported by anyone.
"""

__version__ = "0.1.0"
