"""sd_notify without a dependency: READY, STATUS, WATCHDOG and STOPPING to systemd.

`cutover run` runs as a `Type=notify` unit with a watchdog (systemd/cutover@.service): it says
READY=1 once its state is loaded, WATCHDOG=1 from its loop (a stalled loop gets it restarted)
and STOPPING=1 when it winds down. The protocol is one datagram of newline-separated
assignments to the AF_UNIX socket named in $NOTIFY_SOCKET; libsystemd is not needed for that.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("cutover.sdnotify")

SEND_TIMEOUT = 1.0
"""Seconds a send may block (systemd's queue full): a stuck manager must not stall the loop."""


def notify(*fields: str) -> bool:
    """Send fields such as "READY=1" or "STATUS=copying 40 %" as one datagram to $NOTIFY_SOCKET.

    Returns False when not run by systemd (no NOTIFY_SOCKET) or when the send failed: a lost
    notification is logged, never raised, since the daemon's work matters more than its report.
    """
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket: its name starts with a NUL byte
        target = "\0" + address[1:]
    elif address.startswith("/"):
        target = address
    else:
        log.warning("sd_notify: NOTIFY_SOCKET=%r is neither a path nor an abstract socket", address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.settimeout(SEND_TIMEOUT)
            sock.sendto("\n".join(fields).encode(), target)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in a path
        log.warning("sd_notify to %s failed: %s", address, exc)
        return False
    return True


def watchdog_period() -> float | None:
    """systemd's WatchdogSec in seconds when it watches this process (send WATCHDOG=1 at half
    of it); None without a watchdog, or when WATCHDOG_PID names another process (the variables
    were inherited from a parent that systemd watches, not us)."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    try:
        if pid and int(pid) != os.getpid():
            return None
        period = int(usec)
    except ValueError:
        return None
    return period / 1e6 if period > 0 else None
