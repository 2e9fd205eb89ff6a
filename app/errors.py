"""Every error calogan raises on purpose, in one tree.

::

    CaloganError
    ├── InvalidRequest (also ValueError)   bad user input; carries what is allowed
    ├── ShowerFileError                    unreadable file or wrong HDF5 layout
    ├── ModelLoadError                     a model file that cannot be loaded
    ├── ModelMismatch                      the request pins a model this server does not serve
    └── Overloaded                         the shower queue is full; retry later

Foreign errors (h5py, TensorFlow) are translated into these once, where they enter.
This module imports nothing from ``app``.
"""


class CaloganError(Exception):
    """Base of every error calogan raises on purpose."""


class InvalidRequest(CaloganError, ValueError):
    """A user-supplied value is out of range or malformed; ``allowed`` says what would be accepted."""

    def __init__(self, message: str, *, allowed: str | None = None) -> None:
        super().__init__(message if allowed is None else f"{message}; allowed: {allowed}")
        self.allowed = allowed


class ShowerFileError(CaloganError):
    """A shower file cannot be read or does not have the 3DGAN layout."""


class ModelLoadError(CaloganError):
    """A model file is missing, corrupt, or does not match its model card."""


class ModelMismatch(CaloganError):
    """A request pinned a model (name, version or sha256) other than the one served: HTTP 409."""

    def __init__(self, message: str, *, served: str) -> None:
        super().__init__(message)
        self.served = served


class Overloaded(CaloganError):
    """The shower queue is full; the HTTP edge answers 503 with Retry-After."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"queue full, retry after {retry_after_s:.1f} s")
        self.retry_after_s = retry_after_s
