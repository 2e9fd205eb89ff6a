"""A small reader of the repository's Dockerfile: stages, and the instructions of each (no Docker needed)."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

_FROM = re.compile(r"^(?:--platform=\S+\s+)?(?P<image>\S+)(?:\s+AS\s+(?P<name>\S+))?$", re.IGNORECASE)


@dataclass
class Stage:
    """One ``FROM`` block: its base image, its name, and its instructions as (KEYWORD, arguments)."""

    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        """Arguments of every ``keyword`` instruction of this stage, in order."""
        return [args for kw, args in self.instructions if kw == keyword]

    def env(self) -> dict[str, str]:
        """The ``ENV`` variables this stage sets (``KEY=VALUE`` form)."""
        found: dict[str, str] = {}
        for args in self.all("ENV"):
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                found[key] = value
        return found

    def exec_form(self, keyword: str) -> list[str]:
        """The last ``keyword`` (CMD, ENTRYPOINT) of the stage as a JSON list; [] if absent."""
        args = self.all(keyword)
        return json.loads(args[-1]) if args else []


def logical_lines(text: str) -> list[str]:
    """Instructions with their continuation lines joined and comments dropped."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1].strip() + " "
            continue
        lines.append((current + stripped).strip())
        current = ""
    return [line for line in lines if line]


def read_stages(path: Path) -> list[Stage]:
    """Every stage of the Dockerfile at ``path``, in order (instructions before the first FROM are dropped)."""
    stages: list[Stage] = []
    for line in logical_lines(path.read_text()):
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = _FROM.match(args.strip())
            if match is None:
                raise ValueError(f"cannot read FROM line: {line!r}")
            stages.append(Stage(image=match["image"], name=match["name"]))
        elif stages:
            stages[-1].instructions.append((keyword, args.strip()))
    return stages
