"""Hooks at phase boundaries: an argv command (never a shell) or an HTTP call, each with a
timeout. What a failure means is the hook's own on_failure: rollback, hold or ignore."""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass
from typing import Any

import httpx

from config.operations import HOOK_FIELDS, Hook, HookPoint, NotifyEvent
from config.settings import Settings
from controller.daemon.notify import Notifier
from controller.state.journal import EventKind
from controller.state.store import StateStore
from sync.children import run_command

log = logging.getLogger("cutover.hooks")


@dataclass(frozen=True)
class HookOutcome:
    name: str
    ok: bool
    detail: str
    on_failure: str

    def as_dict(self) -> dict[str, Any]:
        return {"hook": self.name, "ok": self.ok, "detail": self.detail, "on_failure": self.on_failure}


def hook_name(hook: Hook) -> str:
    if hook.name:
        return hook.name
    if hook.command:
        return hook.command[0]
    return f"{hook.method} {hook.url.host if hook.url else '?'}"  # never the full URL: it may hold a token


def run_hooks(hooks: list[Hook], point: HookPoint, context: dict[str, Any],
              transport: httpx.BaseTransport | None = None) -> list[HookOutcome]:
    """Run every hook for `point` in order; stop at the first failure that is not ignored.
    transport: for URL hooks, httpx's default (the network) unless given."""
    outcomes = []
    for hook in (h for h in hooks if h.at is point):
        outcome = _run_one(hook, {"at": point.value, **context}, transport)
        outcomes.append(outcome)
        if not outcome.ok:
            log.warning("hook %s at %s failed: %s", outcome.name, point.value, outcome.detail)
            if hook.on_failure != "ignore":
                break
    return outcomes


def first_failure(outcomes: list[HookOutcome]) -> HookOutcome | None:
    return next((o for o in outcomes if not o.ok and o.on_failure != "ignore"), None)


def run_point(settings: Settings, journal: StateStore, point: HookPoint,
              context: dict[str, Any]) -> HookOutcome | None:
    """The hooks of one point, each journaled; the failure that counts (not ignored) is
    notified and returned, for the caller to hold or roll back."""
    outcomes = run_hooks(settings.hooks, point, {"service": settings.service, **context})
    for o in outcomes:
        journal.record(EventKind.HOOK, {"at": point.value, **o.as_dict()})
    failed = first_failure(outcomes)
    if failed is not None:
        Notifier(settings.notify, settings.service).send(
            NotifyEvent.HOOK_FAILED, f"hook {failed.name} at {point.value} failed: {failed.detail}",
            failed.as_dict())
    return failed


def _run_one(hook: Hook, context: dict[str, Any], transport: httpx.BaseTransport | None) -> HookOutcome:
    name = hook_name(hook)
    if hook.command is not None:
        # Every placeholder was checked against HOOK_FIELDS when the config was read.
        fields = {k: "" if context.get(k) is None else str(context[k]) for k in HOOK_FIELDS}
        argv = [part.format_map(fields) for part in hook.command]
        try:
            done = run_command(argv, hook.timeout)
        except FileNotFoundError:
            return HookOutcome(name, False, f"command not found: {argv[0]}", hook.on_failure)
        except subprocess.TimeoutExpired:
            return HookOutcome(name, False, f"timed out after {hook.timeout:g}s", hook.on_failure)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip()[-300:]
            return HookOutcome(name, False, f"exit {done.returncode}: {tail}", hook.on_failure)
        return HookOutcome(name, True, "ok", hook.on_failure)
    assert hook.url is not None  # the settings insist on one of command or url
    try:
        with httpx.Client(transport=transport, timeout=hook.timeout) as client:
            response = client.request(hook.method, str(hook.url),
                                      json=context if hook.method == "POST" else None)
    except httpx.HTTPError as exc:
        return HookOutcome(name, False, type(exc).__name__, hook.on_failure)
    if not response.is_success:
        return HookOutcome(name, False, f"HTTP {response.status_code}", hook.on_failure)
    return HookOutcome(name, True, f"HTTP {response.status_code}", hook.on_failure)

