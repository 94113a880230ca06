"""sd_notify against a real AF_UNIX datagram socket standing in for systemd's, and the
watchdog period systemd hands over in WATCHDOG_USEC / WATCHDOG_PID."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.daemon import sdnotify


@pytest.fixture
def receiver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A bound datagram socket in tmp_path, named in NOTIFY_SOCKET like systemd does."""
    path = tmp_path / "notify.sock"
    assert len(str(path)) < 108, "AF_UNIX paths are limited to 107 bytes"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield sock


def test_fields_go_as_one_datagram_joined_by_newlines(receiver: socket.socket) -> None:
    assert sdnotify.notify("READY=1", "STATUS=copying 40 %") is True
    assert receiver.recv(4096) == b"READY=1\nSTATUS=copying 40 %"


def test_each_call_is_its_own_datagram(receiver: socket.socket) -> None:
    assert sdnotify.notify("WATCHDOG=1")
    assert sdnotify.notify("STOPPING=1", "STATUS=stopping in shifting")
    assert receiver.recv(4096) == b"WATCHDOG=1"
    assert receiver.recv(4096) == b"STOPPING=1\nSTATUS=stopping in shifting"


def test_status_text_is_sent_as_utf8(receiver: socket.socket) -> None:
    assert sdnotify.notify("STATUS=shifting stage 2: blue → green 50 %")
    assert receiver.recv(4096).decode() == "STATUS=shifting stage 2: blue → green 50 %"


def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"cutover-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)  # what systemd means by "@name"
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify("READY=1") is True
        assert sock.recv(4096) == b"READY=1"


def test_without_notify_socket_it_is_a_quiet_no(monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "")
    assert sdnotify.notify("READY=1") is False
    assert not caplog.records


def test_missing_socket_is_false_and_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    with caplog.at_level(logging.WARNING, logger="cutover.sdnotify"):
        assert sdnotify.notify("READY=1") is False
    assert [r.name for r in caplog.records] == ["cutover.sdnotify"]
    assert "gone.sock" in caplog.text


@pytest.mark.parametrize("address", ["relative.sock", "@", "/" + "x" * 200])
def test_unusable_addresses_are_false_not_errors(address: str, monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    with caplog.at_level(logging.WARNING, logger="cutover.sdnotify"):
        assert sdnotify.notify("WATCHDOG=1") is False
    assert caplog.records


def test_a_file_that_is_not_a_socket_is_false(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = tmp_path / "plain"
    plain.write_text("")
    monkeypatch.setenv("NOTIFY_SOCKET", str(plain))
    assert sdnotify.notify("READY=1") is False


@pytest.fixture
def no_watchdog(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    return monkeypatch


def test_no_watchdog_without_watchdog_usec(no_watchdog: pytest.MonkeyPatch) -> None:
    assert sdnotify.watchdog_period() is None
    no_watchdog.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_period() is None


def test_watchdog_usec_in_seconds(no_watchdog: pytest.MonkeyPatch) -> None:
    no_watchdog.setenv("WATCHDOG_USEC", "30000000")
    assert sdnotify.watchdog_period() == 30.0
    no_watchdog.setenv("WATCHDOG_USEC", "1500000")
    assert sdnotify.watchdog_period() == 1.5


def test_watchdog_meant_for_this_process(no_watchdog: pytest.MonkeyPatch) -> None:
    no_watchdog.setenv("WATCHDOG_USEC", "30000000")
    no_watchdog.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_period() == 30.0


def test_watchdog_of_another_process_is_not_ours(no_watchdog: pytest.MonkeyPatch) -> None:
    # Inherited from a watched parent (e.g. a hook started by the daemon): not for us to feed.
    no_watchdog.setenv("WATCHDOG_USEC", "30000000")
    no_watchdog.setenv("WATCHDOG_PID", str(os.getppid() if os.getppid() != os.getpid() else 1))
    assert sdnotify.watchdog_period() is None


@pytest.mark.parametrize(("usec", "pid"), [("abc", None), ("0", None), ("-5", None), ("30000000", "x")])
def test_malformed_watchdog_variables_mean_no_watchdog(usec: str, pid: str | None,
                                                       no_watchdog: pytest.MonkeyPatch) -> None:
    no_watchdog.setenv("WATCHDOG_USEC", usec)
    if pid is not None:
        no_watchdog.setenv("WATCHDOG_PID", pid)
    assert sdnotify.watchdog_period() is None
