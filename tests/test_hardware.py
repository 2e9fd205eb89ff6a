"""The machine description used by cards, the int8 backend's threads and the benchmarks."""

import pytest

from app.hardware import cpu_cores, cpu_description


def test_cpu_cores_follows_the_affinity_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {3})
    assert cpu_cores() == 1


def test_cpu_description_names_the_vector_isa() -> None:
    assert any(isa in cpu_description() for isa in ("(avx512,", "(avx2,", "(sse,"))
