"""What each decision leaves behind: the journal's phase and decision events, the saved state,
the user's log lines and the phase notifications."""

from __future__ import annotations

from typing import Any

from config.operations import NotifyEvent
from controller.daemon.notify import Notifier
from controller.daemon.phases import Decision, Observations, State
from controller.state.journal import EventKind
from controller.state.store import StateStore
from sync.callbacks import Say


class Recorder:
    def __init__(self, notifier: Notifier, say: Say) -> None:
        self.notifier, self.say = notifier, say
        self.last_reason = ""
        """The last decision's reason: a line is said when it changes, not every tick."""

    def record(self, store: StateStore, before: State, d: Decision, obs: Observations) -> None:
        """What the decision d, taken in state `before` on obs, leaves behind."""
        after = d.state
        if after.phase is not before.phase:
            text = f"{before.phase.value} -> {after.phase.value}: {after.reason}"
            self.say(text)
            store.record(EventKind.PHASE, {"from": before.phase.value, "to": after.phase.value,
                                   "reason": after.reason, "state": after.as_dict()})
            self.notifier.send(NotifyEvent.PHASE, text, {"from": before.phase.value,
                                                         "to": after.phase.value, "reason": after.reason})
        elif after.paused and not before.paused:  # a hold within a phase needs an operator too
            self.notifier.send(NotifyEvent.PHASE, f"holding: {after.reason}",
                               {"phase": after.phase.value, "paused": True, "reason": after.reason})
        if after.gated and not before.gated:
            self.notifier.send(NotifyEvent.GATE, d.reason, {"stage": after.stage + 1, "reason": d.reason})
        if d.effect is not None or obs.intents or obs.done is not None or (
                after.paused != before.paused) or (after.stage != before.stage) or (
                after.gated != before.gated):
            inputs: dict[str, Any] = {"intents": [i.value for i in obs.intents]}
            if obs.done is not None:
                inputs["job_result"] = {"job": obs.done.job.value, "ok": obs.done.ok,
                                        "detail": obs.done.detail}
            if obs.breach is not None:
                inputs["breach"] = {"check": obs.breach.check, "reason": obs.breach.reason}
            store.record(EventKind.DECISION, {
                "reason": d.reason, "effect": d.effect.as_dict() if d.effect else None,
                "inputs": inputs, "state": after.as_dict()})
            if d.reason != self.last_reason and after.phase is before.phase:
                self.say(d.reason)
        self.last_reason = d.reason
        if after != before:
            store.save_state(after.as_dict())
