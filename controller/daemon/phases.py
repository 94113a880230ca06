"""The phase machine, pure: decide(state, observations, plan) -> Decision. No servers, no
clock, no I/O: the daemon observes, calls decide once per tick, persists the new state and
runs the one effect it names. Every rule here is unit-tested (tests/unit/test_phases.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

from controller.daemon.phase_types import (
    LIVE_TRAFFIC,
    TERMINAL,
    Breach,
    Decision,
    Effect,
    Failure,
    Intent,
    Job,
    JobResult,
    Observations,
    Phase,
    State,
)
from controller.daemon.plan import Mode, Plan

__all__ = [
    "LIVE_TRAFFIC", "TERMINAL", "Breach", "Decision", "Effect", "Failure", "Intent", "Job",
    "JobResult", "Observations", "Phase", "State", "decide", "plan_summary",
]
"""The types are re-exported: callers take the machine and its vocabulary from one place."""


def decide(s: State, o: Observations, plan: Plan) -> Decision:
    """One decision per tick: operator intents first, then a finished job, then the phase."""
    for intent in o.intents:
        s = _take_intent(s, intent, plan, job_running=o.running is not None)
    if o.done is not None:
        s = _job_finished(s, o.done, plan)
    if o.running is not None:
        return Decision(s, None, f"{o.running.value} running")
    if s.abort_requested and s.phase not in TERMINAL:
        return _abort(s)
    if s.phase in LIVE_TRAFFIC and s.applied and o.breach is not None:
        return _breach(s, o.breach, plan)
    if s.paused and s.phase is not Phase.ROLLING_BACK:
        return Decision(s, None, f"paused: {s.reason}")
    return _PHASES[s.phase](s, o, plan)


def _take_intent(s: State, intent: Intent, plan: Plan, job_running: bool) -> State:
    if intent is Intent.PAUSE:
        return replace(s, paused=True, reason="paused by the operator")
    if intent is Intent.RESUME:
        return replace(s, paused=False, reason="resumed by the operator")
    if intent is Intent.ABORT:
        if s.phase in TERMINAL or s.phase is Phase.ROLLING_BACK:
            return s
        return replace(s, abort_requested=True, reason="aborted by the operator")
    if intent is Intent.RETRY:
        if s.phase is not Phase.ROLLED_BACK:
            return s
        # Writes that stayed on green need no new sync: start again at the first stage.
        phase = Phase.SHIFTING if s.switched or plan.mode is Mode.SHARED else Phase.PENDING
        return State(phase=phase, switched=s.switched, attempt=s.attempt + 1,
                     reason=f"retry #{s.attempt + 1} by the operator")
    # PROMOTE: the next step now.
    if s.phase is Phase.STREAMING and plan.mode is Mode.FULL and not job_running:
        return replace(s, phase=Phase.SWITCHING, paused=False, reason="promoted by the operator")
    if s.phase is Phase.SHIFTING and s.applied:  # also ends a hold (a starved stage's), opens a gate
        return replace(s, bake_seconds=max(s.bake_seconds, plan.stages[s.stage].bake), paused=False,
                       approved=True, reason="promoted by the operator: bake skipped, gate open")
    if s.phase is Phase.PROMOTED:
        return replace(s, phase=Phase.FINALIZING, reason="finalized by the operator")
    return s


def _job_finished(s: State, r: JobResult, plan: Plan) -> State:
    if r.ok:
        return _JOB_OK[r.job](s, r, plan)
    if r.job is Job.ROLLBACK:
        # Stay rolling back: the next tick runs it again (traffic to blue is the safe side).
        return replace(s, reason=f"rollback failed, retrying: {r.detail}")
    if r.job is Job.SYNC_CYCLE:  # the continuous sync keeps going: the next cycle retries
        return replace(s, reason=f"diff cycle failed, retrying in the next: {r.detail}")
    if r.job is Job.APPROVE and r.failure is not Failure.ROLLBACK:  # not yet: asked again later
        return replace(s, reason=f"stage {s.stage + 1} not approved yet: {r.detail}")
    if r.job is Job.SWITCH and r.failure is Failure.FINISH:
        # Writes went to green already: stay switching, the next run finishes the switch.
        return replace(s, reason=f"switch unfinished, finishing it: {r.detail}")
    if r.job is Job.SWITCH:
        # The switch undoes itself on failure: writes are on blue, green still streams.
        return replace(s, phase=Phase.STREAMING, paused=True, reason=f"switch failed: {r.detail}")
    if s.phase in LIVE_TRAFFIC and (r.failure is Failure.ROLLBACK or r.job is Job.SHIFT):
        return replace(s, phase=Phase.ROLLING_BACK, reason=f"{r.job.value} failed: {r.detail}")
    return replace(s, paused=True, reason=f"{r.job.value} failed: {r.detail}")


def _preflight_ok(s: State, r: JobResult, plan: Plan) -> State:
    return replace(s, phase=Phase.COPYING, reason="preflight passed")


def _copy_ok(s: State, r: JobResult, plan: Plan) -> State:
    return replace(s, phase=Phase.STREAMING, reason="green streams from blue")


def _switch_ok(s: State, r: JobResult, plan: Plan) -> State:
    return replace(s, phase=Phase.SHIFTING, stage=0, applied=False, bake_seconds=0.0,
                   switched=True, reason=f"writes switched to green{': ' + r.detail if r.detail else ''}")


def _shift_ok(s: State, r: JobResult, plan: Plan) -> State:
    return replace(s, applied=True, reason=f"stage {s.stage + 1}: {r.detail or 'applied'}")


def _stage_done(s: State, r: JobResult, plan: Plan) -> State:
    if s.stage + 1 < len(plan.stages):
        return replace(s, stage=s.stage + 1, applied=False, bake_seconds=0.0, starved_seconds=0.0,
                       starved_hooks=False, gated=False, approved=False, since_ask=0.0,
                       reason=f"stage {s.stage + 1} baked")
    return replace(s, phase=Phase.PROMOTED, hold_seconds=0.0, reason="all traffic on green")


def _finalize_ok(s: State, r: JobResult, plan: Plan) -> State:
    return replace(s, phase=Phase.FINALIZED, reason="finalized")


def _rollback_ok(s: State, r: JobResult, plan: Plan) -> State:
    return replace(s, phase=Phase.ROLLED_BACK, applied=False, abort_requested=False,
                   switched=s.switched and not r.reverted, reason=s.reason)


_JOB_OK: dict[Job, Callable[[State, JobResult, Plan], State]] = {
    Job.PREFLIGHT: _preflight_ok, Job.COPY: _copy_ok, Job.SWITCH: _switch_ok,
    Job.SHIFT: _shift_ok, Job.STAGE_DONE: _stage_done, Job.FINALIZE: _finalize_ok,
    Job.SYNC_CYCLE: lambda s, r, plan: replace(s, reason=r.detail),
    Job.STARVED: lambda s, r, plan: replace(s, reason=f"stage {s.stage + 1}: stage_starved hooks ran"),
    Job.APPROVE: lambda s, r, plan: replace(s, approved=True,
                                            reason=f"stage {s.stage + 1} approved by its hooks"),
    Job.ROLLBACK: _rollback_ok,
}


def _abort(s: State) -> Decision:
    if s.phase in LIVE_TRAFFIC:
        return Decision(replace(s, phase=Phase.ROLLING_BACK, paused=False), Effect(Job.ROLLBACK),
                        "aborted: traffic back to blue")
    # Before any traffic moved there is nothing to put back; the sync keeps running.
    return Decision(replace(s, phase=Phase.ROLLED_BACK, abort_requested=False, paused=False),
                    None, "aborted before any traffic moved")


def _breach(s: State, b: Breach, plan: Plan) -> Decision:
    why = f"SLO breach: {b.check}: {b.reason}"
    if plan.on_breach == "pause":
        return Decision(replace(s, paused=True, reason=why), None, why + " (holding)")
    return Decision(replace(s, phase=Phase.ROLLING_BACK, paused=False, reason=why),
                    Effect(Job.ROLLBACK), why)


def _pending(s: State, o: Observations, plan: Plan) -> Decision:
    if plan.mode is Mode.SHARED:
        return _shifting(replace(s, phase=Phase.SHIFTING, stage=0, applied=False,
                                 reason="shared database: traffic stages only"), o, plan)
    return Decision(replace(s, phase=Phase.PREFLIGHT, reason="starting"), Effect(Job.PREFLIGHT),
                    "starting")


def _run(job: Job) -> Callable[[State, Observations, Plan], Decision]:
    def phase(s: State, o: Observations, plan: Plan) -> Decision:
        return Decision(s, Effect(job), s.reason)
    return phase


def _streaming(s: State, o: Observations, plan: Plan) -> Decision:
    switching = plan.mode is Mode.FULL and plan.auto_switch and o.sync_ready
    if plan.diff_every is not None and not switching:  # the diff sync's own cadence
        s = replace(s, since_sync=s.since_sync + o.elapsed)
        if s.since_sync >= plan.diff_every:
            return Decision(replace(s, since_sync=0.0), Effect(Job.SYNC_CYCLE), "diff cycle due")
    if plan.mode is not Mode.FULL:
        return Decision(s, None, "streaming (continuous sync)")
    if switching:
        return Decision(replace(s, phase=Phase.SWITCHING, reason="lag under the limits"),
                        Effect(Job.SWITCH), "green caught up: switching writes")
    if o.sync_held:  # said in manual mode too: a promote would only fail on it
        return Decision(s, None, f"streaming; the switch waits: {o.sync_held}")
    return Decision(s, None, "streaming; waiting for `cutover promote`" if not plan.auto_switch
                    else "streaming; waiting for lag under the limits")


def _shifting(s: State, o: Observations, plan: Plan) -> Decision:
    stage = plan.stages[s.stage]
    weight = plan.weight(s.stage)
    if not s.applied:
        control = f" ({100 - weight} % on blue as a control)" if weight < stage.weight else ""
        return Decision(s, Effect(Job.SHIFT, weight=weight, stage=s.stage),
                        f"stage {s.stage + 1}: green {weight} %{control}")
    baked = s.bake_seconds + (o.elapsed if o.slo_passing else 0.0)
    s = replace(s, bake_seconds=baked)
    if o.starved and not o.slo_passing:
        s = replace(s, starved_seconds=s.starved_seconds + o.elapsed)
        if s.starved_seconds >= plan.starved_after * stage.bake:
            return _starved(s, o, plan)
    if baked >= stage.bake and stage.gate != "none" and not s.approved:
        return _gated(s, o, plan)
    if baked >= stage.bake:
        # The last stage ends at 100 % whatever its control was (a reload may have changed it).
        return Decision(s, Effect(Job.STAGE_DONE, stage=s.stage,
                                  weight=100 if stage.weight == 100 else None),
                        f"stage {s.stage + 1} baked")
    return Decision(s, None, f"baking stage {s.stage + 1}" + ("" if o.slo_passing else " (held: "
                                                              "a check is not passing)"))


def _gated(s: State, o: Observations, plan: Plan) -> Decision:
    """A baked stage at its gate: it waits for `cutover promote`, or asks its approve_stage
    hooks now and every gate_poll after. The watch goes on: a breach still rolls back."""
    n = s.stage + 1
    if plan.stages[s.stage].gate == "hook":
        asked = s.since_ask + o.elapsed
        if not s.gated:
            why = f"stage {n} baked: waiting for its approve_stage hooks (or `cutover promote`)"
            return Decision(replace(s, gated=True, since_ask=0.0, reason=why),
                            Effect(Job.APPROVE, stage=s.stage), why)
        if asked >= plan.gate_poll:
            return Decision(replace(s, since_ask=0.0), Effect(Job.APPROVE, stage=s.stage),
                            f"stage {n}: asking its approve_stage hooks again")
        return Decision(replace(s, since_ask=asked), None,
                        f"stage {n} baked: waiting for its approve_stage hooks (or `cutover promote`)")
    why = f"stage {n} baked: waiting at its gate for `cutover promote`"
    return Decision(replace(s, gated=True, reason=why), None, why)


def _starved(s: State, o: Observations, plan: Plan) -> Decision:
    waited = f"{s.starved_seconds:.0f}s"
    checks = ", ".join(o.starved)
    if not s.starved_hooks:  # once: a hook may start synthetic load; then wait as long again
        return Decision(replace(s, starved_seconds=0.0, starved_hooks=True),
                        Effect(Job.STARVED, stage=s.stage),
                        f"stage {s.stage + 1} starved of evidence for {waited} ({checks}): "
                        "running the stage_starved hooks")
    why = (f"stage {s.stage + 1} holds: no evidence for {waited} from {checks} (too little "
           "traffic or no data); send traffic, fix the source, or `cutover promote` to skip the bake")
    return Decision(replace(s, paused=True, starved_seconds=0.0, reason=why), None, why)


def _promoted(s: State, o: Observations, plan: Plan) -> Decision:
    held = s.hold_seconds + o.elapsed
    s = replace(s, hold_seconds=held)
    if plan.auto_finalize and held >= plan.hold:
        return Decision(replace(s, phase=Phase.FINALIZING, reason="hold passed"),
                        Effect(Job.FINALIZE), "hold passed: finalizing")
    return Decision(s, None, "holding at 100 %")


def _terminal(s: State, o: Observations, plan: Plan) -> Decision:
    return Decision(s, None, s.reason)


_PHASES: dict[Phase, Callable[[State, Observations, Plan], Decision]] = {
    Phase.PENDING: _pending,
    Phase.PREFLIGHT: _run(Job.PREFLIGHT),
    Phase.COPYING: _run(Job.COPY),
    Phase.STREAMING: _streaming,
    Phase.SWITCHING: _run(Job.SWITCH),
    Phase.SHIFTING: _shifting,
    Phase.PROMOTED: _promoted,
    Phase.FINALIZING: _run(Job.FINALIZE),
    Phase.ROLLING_BACK: _run(Job.ROLLBACK),
    Phase.FINALIZED: _terminal,
    Phase.ROLLED_BACK: _terminal,
}


def plan_summary(plan: Plan) -> dict[str, Any]:
    return {"mode": plan.mode.value, "stages": [asdict(x) for x in plan.stages],
            "auto_switch": plan.auto_switch, "hold": plan.hold, "auto_finalize": plan.auto_finalize}
