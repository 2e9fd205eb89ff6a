"""Print the runtime requirements of ``pyproject.toml``, one per line, for ``pip install -r``.

The Docker build installs dependencies before copying the code, so that a code change does not
re-download TensorFlow. ``--without-tensorflow`` drops the TensorFlow requirements: the ``gpu`` image
starts from the official TensorFlow GPU image, and installing ``tensorflow-cpu`` on top of it would
replace the CUDA build with the CPU one. Uses the standard library only (it runs before anything
is installed).
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def requirement_name(requirement: str) -> str:
    """The normalised project name of a PEP 508 requirement (``uvicorn[standard]>=0.30`` -> ``uvicorn``)."""
    match = _NAME.match(requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def runtime_requirements(pyproject: Path, *, without_tensorflow: bool = False) -> list[str]:
    """The ``[project] dependencies`` of ``pyproject``, optionally without ``tensorflow*`` projects."""
    with pyproject.open("rb") as f:
        dependencies: list[str] = tomllib.load(f)["project"]["dependencies"]
    if without_tensorflow:
        dependencies = [dep for dep in dependencies if not requirement_name(dep).startswith("tensorflow")]
    return dependencies


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python deploy/requirements.py [--without-tensorflow] [pyproject.toml]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject", nargs="?", type=Path, default=Path("pyproject.toml"))
    parser.add_argument("--without-tensorflow", action="store_true", help="drop tensorflow and tensorflow-cpu")
    args = parser.parse_args(argv)
    lines = runtime_requirements(args.pyproject, without_tensorflow=args.without_tensorflow)
    sys.stdout.write("".join(f"{line}\n" for line in lines))


if __name__ == "__main__":
    main()
