"""What every unit test gets."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's CUTOVER_* variables or systemd credentials must not leak into tests."""
    for name in list(os.environ):
        if name.startswith("CUTOVER_"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
