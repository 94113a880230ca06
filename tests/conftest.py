"""Shared test setup. With CUTOVER_FORBID_SKIPS=1 (CI), any skipped test fails the run:
a missing server must never pass silently."""

from __future__ import annotations

import os

import pytest

_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("CUTOVER_FORBID_SKIPS") == "1" and _skipped:
        print(f"\nCUTOVER_FORBID_SKIPS=1 and {len(_skipped)} test(s) skipped: {_skipped}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
