"""The command line assembles and answers --help without importing heavy libraries."""

import subprocess
import sys


def test_help_lists_commands() -> None:
    result = subprocess.run([sys.executable, "-m", "app.cli", "--help"], capture_output=True, text=True, check=True)
    assert "mc" in result.stdout
