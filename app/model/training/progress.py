"""How a run reports what it is doing (the CLI draws it; the library stays silent)."""

from __future__ import annotations

from typing import Any, Protocol


class TrainingProgress(Protocol):
    """Told what training is doing; the CLI implements it with a rich progress bar."""

    def phase(self, description: str, total_steps: int) -> None:
        """A phase (warm-up, an epoch, validation) starts with this many steps."""

    def step(self, losses: dict[str, float]) -> None:
        """One step of the current phase is done."""

    def epoch_done(self, row: dict[str, Any]) -> None:
        """An epoch (or the warm-up) is finished; ``row`` is its CSV log line."""


class SilentProgress:
    """A :class:`TrainingProgress` that ignores everything."""

    def phase(self, description: str, total_steps: int) -> None:
        pass

    def step(self, losses: dict[str, float]) -> None:
        pass

    def epoch_done(self, row: dict[str, Any]) -> None:
        pass
