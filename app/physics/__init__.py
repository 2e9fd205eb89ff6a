"""Detector description, the parametric reference Monte Carlo, per-shower observables and shower files.

Imports numpy, scipy and h5py, and nothing from ``app`` except ``app.errors`` (and ``app.__version__``
for file metadata). Everything here works in GeV, mm and radiation lengths (X0), as names say.
"""
