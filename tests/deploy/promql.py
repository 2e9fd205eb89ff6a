"""Just enough PromQL reading for the deploy tests: which series names and labels an expression asks for.

Not a parser: string literals and range selectors are removed first, then every identifier that
is a calogan metric (``calogan_...``) or a recording rule (``level:metric:operations``, with a
colon) is collected. Good enough for the expressions in this repository, which the tests also
run through a real Prometheus.
"""

from __future__ import annotations

import re

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_RANGES = re.compile(r"\[[^\]]*\]")
_IDENTIFIER = re.compile(r"(?<![\w:$.])([A-Za-z_:][A-Za-z0-9_:]*)")
_SELECTOR = re.compile(r"(?<![\w:])([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def _code(expr: str) -> str:
    return _RANGES.sub("[]", _STRINGS.sub('""', expr))


def is_ours(name: str) -> bool:
    """A calogan series or a recording rule (the only names these tests can resolve)."""
    return name.startswith("calogan_") or ":" in name


def series_names(expr: str) -> set[str]:
    """calogan series and recording-rule names in ``expr``."""
    return {name for name in _IDENTIFIER.findall(_code(expr)) if is_ours(name)}


def selector_labels(expr: str) -> dict[str, set[str]]:
    """For each calogan series or rule selected with ``{...}``: the label names its matchers use."""
    found: dict[str, set[str]] = {}
    for name, matchers in _SELECTOR.findall(_STRINGS.sub(_blank_string, expr)):
        if is_ours(name):
            found.setdefault(name, set()).update(_MATCHER.findall(matchers))
    return found


def grouping_labels(expr: str) -> set[str]:
    """Label names in ``by (...)``, ``without (...)``, ``on (...)`` clauses."""
    labels: set[str] = set()
    for group in _GROUPING.findall(_code(expr)):
        labels.update(part.strip() for part in group.split(",") if part.strip())
    return labels


def _blank_string(match: re.Match[str]) -> str:
    # Keep the quotes (a matcher's value) but drop what is inside, so "}" in a value does no harm.
    return match.group(0)[0] * 2
