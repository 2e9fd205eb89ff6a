"""The ``calogan`` command line: one module per command, assembled in ``main``. Imported by nothing.

Heavy imports (TensorFlow, matplotlib) happen inside the command functions, so ``calogan --help``
stays fast.
"""
