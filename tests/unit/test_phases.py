"""decide(): every phase, every intent, job results and breaches, with no servers."""

from __future__ import annotations

from dataclasses import replace

import pytest

from controller.daemon.phases import (
    Breach,
    Effect,
    Failure,
    Intent,
    Job,
    JobResult,
    Observations,
    Phase,
    State,
    decide,
)
from controller.daemon.plan import Mode, Plan, Stage

STAGES = (Stage(10, 60.0), Stage(50, 60.0), Stage(100, 60.0))
FULL = Plan(Mode.FULL, STAGES, auto_switch=True, hold=300.0)
SHARED = Plan(Mode.SHARED, STAGES)
SYNC_ONLY = Plan(Mode.SYNC_ONLY)


def done(job: Job, ok: bool = True, **kw: object) -> Observations:
    return Observations(done=JobResult(job, ok, **kw))  # type: ignore[arg-type]


def test_pending_starts_preflight() -> None:
    d = decide(State(), Observations(), FULL)
    assert d.state.phase is Phase.PREFLIGHT
    assert d.effect == Effect(Job.PREFLIGHT)


def test_shared_database_goes_straight_to_the_first_stage() -> None:
    d = decide(State(), Observations(), SHARED)
    assert d.state.phase is Phase.SHIFTING
    assert d.effect == Effect(Job.SHIFT, weight=10, stage=0)


@pytest.mark.parametrize(("phase", "job", "next_phase"), [
    (Phase.PREFLIGHT, Job.PREFLIGHT, Phase.COPYING),
    (Phase.COPYING, Job.COPY, Phase.STREAMING),
    (Phase.SWITCHING, Job.SWITCH, Phase.SHIFTING),
    (Phase.FINALIZING, Job.FINALIZE, Phase.FINALIZED),
    (Phase.ROLLING_BACK, Job.ROLLBACK, Phase.ROLLED_BACK),
])
def test_a_job_phase_runs_its_job_then_moves_on(phase: Phase, job: Job, next_phase: Phase) -> None:
    assert decide(State(phase=phase), Observations(), FULL).effect == Effect(job)
    # While it runs: nothing new is started.
    running = decide(State(phase=phase), Observations(running=job), FULL)
    assert running.effect is None
    assert running.state.phase is phase
    after = decide(State(phase=phase), done(job), FULL)
    assert after.state.phase is next_phase


def test_copy_then_streaming_waits_for_the_lag_gate() -> None:
    s = decide(State(phase=Phase.COPYING), done(Job.COPY), FULL).state
    assert s.phase is Phase.STREAMING
    waiting = decide(s, Observations(sync_ready=False), FULL)
    assert waiting.effect is None
    assert waiting.state.phase is Phase.STREAMING
    go = decide(s, Observations(sync_ready=True), FULL)
    assert go.state.phase is Phase.SWITCHING
    assert go.effect == Effect(Job.SWITCH)


def test_schema_drift_holds_the_auto_switch_and_says_why() -> None:
    s = State(phase=Phase.STREAMING)
    held = decide(s, Observations(sync_ready=False, sync_held="schema drift: public.newer is "
                                  "on blue but not replicated"), FULL)
    assert held.effect is None
    assert held.state.phase is Phase.STREAMING
    assert "public.newer is on blue but not replicated" in held.reason


def test_a_broken_replication_is_the_reason_shown_without_auto_switch_too() -> None:
    manual = replace(FULL, auto_switch=False)
    held = decide(State(phase=Phase.STREAMING), Observations(
        sync_held="replication is broken: green's apply worker failed 1 more time(s)"), manual)
    assert held.effect is None
    assert "replication is broken" in held.reason


def test_without_auto_switch_streaming_waits_for_promote() -> None:
    manual = replace(FULL, auto_switch=False)
    s = State(phase=Phase.STREAMING)
    assert decide(s, Observations(sync_ready=True), manual).effect is None
    d = decide(s, Observations(intents=(Intent.PROMOTE,)), manual)
    assert d.state.phase is Phase.SWITCHING
    assert d.effect == Effect(Job.SWITCH)


def test_sync_only_streams_forever() -> None:
    s = decide(State(phase=Phase.COPYING), done(Job.COPY), SYNC_ONLY).state
    for _ in range(3):
        d = decide(s, Observations(sync_ready=True, intents=(Intent.PROMOTE,)), SYNC_ONLY)
        assert d.state.phase is Phase.STREAMING
        assert d.effect is None


def test_the_diff_sync_runs_a_cycle_each_interval_while_streaming() -> None:
    plan = replace(SYNC_ONLY, diff_every=30.0)
    s = State(phase=Phase.STREAMING)
    d = decide(s, Observations(elapsed=20.0), plan)
    assert d.effect is None
    d = decide(d.state, Observations(elapsed=10.0), plan)
    assert d.effect == Effect(Job.SYNC_CYCLE)
    assert d.state.since_sync == 0.0
    running = decide(d.state, Observations(elapsed=40.0, running=Job.SYNC_CYCLE), plan)
    assert running.effect is None, "one job at a time"
    after = decide(running.state, done(Job.SYNC_CYCLE, detail="+3 ~0 -1"), plan)
    assert after.state.phase is Phase.STREAMING
    assert after.state.reason == "+3 ~0 -1"


def test_a_failed_diff_cycle_is_retried_not_held() -> None:
    plan = replace(SYNC_ONLY, diff_every=1.0)
    d = decide(State(phase=Phase.STREAMING), done(Job.SYNC_CYCLE, ok=False, detail="blue down"), plan)
    assert not d.state.paused
    assert "retrying" in d.state.reason
    assert decide(d.state, Observations(elapsed=1.0), plan).effect == Effect(Job.SYNC_CYCLE)


def test_full_diff_mode_switches_without_waiting_for_a_cycle() -> None:
    plan = replace(FULL, diff_every=30.0)
    d = decide(State(phase=Phase.STREAMING), Observations(elapsed=40.0, sync_ready=True), plan)
    assert d.effect == Effect(Job.SWITCH)


def test_switch_success_marks_writes_on_green_and_enters_stage_one() -> None:
    d = decide(State(phase=Phase.SWITCHING), done(Job.SWITCH), FULL)
    assert d.state.switched
    assert d.state.phase is Phase.SHIFTING
    assert d.state.stage == 0
    assert d.effect == Effect(Job.SHIFT, weight=10, stage=0)


def test_switch_failure_holds_in_streaming_with_writes_on_blue() -> None:
    d = decide(State(phase=Phase.SWITCHING), done(Job.SWITCH, ok=False, detail="lag"), FULL)
    assert d.state.phase is Phase.STREAMING
    assert d.state.paused
    assert not d.state.switched
    assert d.effect is None
    assert "lag" in d.state.reason
    # Resume: the lag gate decides again.
    again = decide(d.state, Observations(intents=(Intent.RESUME,), sync_ready=True), FULL)
    assert again.effect == Effect(Job.SWITCH)


def _baking(stage: int = 0, baked: float = 0.0) -> State:
    return State(phase=Phase.SHIFTING, stage=stage, applied=True, bake_seconds=baked, switched=True)


def test_bake_advances_only_while_every_check_passes() -> None:
    s = _baking()
    s = decide(s, Observations(elapsed=10, slo_passing=True), FULL).state
    assert s.bake_seconds == 10
    s = decide(s, Observations(elapsed=10, slo_passing=False), FULL).state
    assert s.bake_seconds == 10  # inconclusive or failing: held, not advanced
    d = decide(replace(s, bake_seconds=55), Observations(elapsed=5, slo_passing=True), FULL)
    assert d.effect == Effect(Job.STAGE_DONE, stage=0)


def test_stage_done_moves_to_the_next_stage_then_to_promoted() -> None:
    d = decide(_baking(0, 60), done(Job.STAGE_DONE), FULL)
    assert d.state.stage == 1
    assert not d.state.applied
    assert d.state.bake_seconds == 0
    assert d.effect == Effect(Job.SHIFT, weight=50, stage=1)
    last = decide(_baking(2, 60), done(Job.STAGE_DONE), FULL)
    assert last.state.phase is Phase.PROMOTED


def test_the_last_stage_keeps_a_control_on_blue_until_it_has_baked() -> None:
    """5 % stay on blue while the 100 % stage bakes, so checks relative to blue still have a
    live blue under the same load; they move to green as the stage is done."""
    plan = replace(FULL, control=5)
    start = decide(replace(_baking(2), applied=False), Observations(), plan)
    assert start.effect == Effect(Job.SHIFT, weight=95, stage=2)
    assert "5 % on blue as a control" in start.reason
    assert decide(replace(_baking(1), applied=False), Observations(), plan).effect == Effect(
        Job.SHIFT, weight=50, stage=1)  # earlier stages are as configured
    baked = decide(_baking(2, 59), Observations(elapsed=5), plan)
    assert baked.effect == Effect(Job.STAGE_DONE, stage=2, weight=100)
    # Without a control too: the last stage's end sets 100 %, whatever a reload changed.
    assert decide(_baking(2, 59), Observations(elapsed=5), FULL).effect == Effect(
        Job.STAGE_DONE, stage=2, weight=100)
    assert decide(_baking(1, 59), Observations(elapsed=5), FULL).effect == Effect(Job.STAGE_DONE, stage=1)


def test_shift_result_marks_the_stage_applied() -> None:
    s = replace(_baking(1), applied=False)
    d = decide(s, done(Job.SHIFT), FULL)
    assert d.state.applied
    assert d.effect is None


def test_a_failed_shift_rolls_back() -> None:
    d = decide(replace(_baking(1), applied=False), done(Job.SHIFT, ok=False, detail="mismatch"), FULL)
    assert d.state.phase is Phase.ROLLING_BACK
    assert d.effect == Effect(Job.ROLLBACK)


def test_breach_rolls_back_at_once_even_when_paused() -> None:
    b = Breach("error_ratio", "0.5 > 0.05")
    for s in (_baking(), replace(_baking(), paused=True), State(phase=Phase.PROMOTED, applied=True)):
        d = decide(s, Observations(breach=b), FULL)
        assert d.state.phase is Phase.ROLLING_BACK
        assert d.effect == Effect(Job.ROLLBACK)
        assert "error_ratio" in d.state.reason


def test_breach_with_on_breach_pause_holds() -> None:
    d = decide(_baking(), Observations(breach=Breach("latency", "slow")), replace(FULL, on_breach="pause"))
    assert d.state.paused
    assert d.state.phase is Phase.SHIFTING
    assert d.effect is None


def test_breach_is_ignored_until_the_stage_is_applied() -> None:
    s = replace(_baking(), applied=False)
    d = decide(s, Observations(breach=Breach("x", "y")), FULL)
    assert d.state.phase is Phase.SHIFTING
    assert d.effect == Effect(Job.SHIFT, weight=10, stage=0)


def test_rollback_failure_retries_and_success_records_revert() -> None:
    s = State(phase=Phase.ROLLING_BACK, switched=True, reason="breach")
    again = decide(s, done(Job.ROLLBACK, ok=False, detail="socket"), FULL)
    assert again.state.phase is Phase.ROLLING_BACK
    assert again.effect == Effect(Job.ROLLBACK)
    stayed = decide(s, done(Job.ROLLBACK), FULL).state
    assert stayed.phase is Phase.ROLLED_BACK
    assert stayed.switched
    reverted = decide(s, done(Job.ROLLBACK, reverted=True), FULL).state
    assert not reverted.switched


def test_rolling_back_is_not_held_by_a_pause() -> None:
    s = State(phase=Phase.ROLLING_BACK, paused=True)
    assert decide(s, Observations(intents=(Intent.PAUSE,)), FULL).effect == Effect(Job.ROLLBACK)


def test_promoted_holds_then_finalizes() -> None:
    s = State(phase=Phase.PROMOTED, applied=True)
    s = decide(s, Observations(elapsed=200), FULL).state
    assert s.phase is Phase.PROMOTED
    assert s.hold_seconds == 200
    d = decide(s, Observations(elapsed=100), FULL)
    assert d.state.phase is Phase.FINALIZING
    assert d.effect == Effect(Job.FINALIZE)


def test_manual_finalize_waits_for_promote() -> None:
    manual = replace(FULL, auto_finalize=False)
    s = State(phase=Phase.PROMOTED, applied=True, hold_seconds=10_000)
    assert decide(s, Observations(elapsed=1), manual).effect is None
    d = decide(s, Observations(intents=(Intent.PROMOTE,)), manual)
    assert d.state.phase is Phase.FINALIZING
    assert d.effect == Effect(Job.FINALIZE)


def test_promote_skips_the_rest_of_a_bake() -> None:
    d = decide(_baking(1, 3), Observations(intents=(Intent.PROMOTE,), slo_passing=False), FULL)
    assert d.effect == Effect(Job.STAGE_DONE, stage=1)


def test_pause_holds_every_live_phase_and_resume_continues() -> None:
    for s in (State(), State(phase=Phase.STREAMING), _baking(), State(phase=Phase.SWITCHING)):
        paused = decide(s, Observations(intents=(Intent.PAUSE,), sync_ready=True, elapsed=5), FULL)
        assert paused.state.paused
        assert paused.effect is None
        assert paused.state.bake_seconds == s.bake_seconds
        resumed = decide(paused.state, Observations(intents=(Intent.RESUME,), sync_ready=True), FULL)
        assert not resumed.state.paused


def test_a_failed_step_before_traffic_holds_and_resume_runs_it_again() -> None:
    d = decide(State(phase=Phase.PREFLIGHT), done(Job.PREFLIGHT, ok=False, detail="wal_level"), FULL)
    assert d.state.phase is Phase.PREFLIGHT
    assert d.state.paused
    assert d.effect is None
    assert decide(d.state, Observations(intents=(Intent.RESUME,)), FULL).effect == Effect(Job.PREFLIGHT)


def test_a_hook_failure_asking_for_rollback_rolls_back_live_traffic() -> None:
    d = decide(_baking(0, 60), done(Job.STAGE_DONE, ok=False, failure=Failure.ROLLBACK), FULL)
    assert d.state.phase is Phase.ROLLING_BACK
    held = decide(_baking(0, 60), done(Job.STAGE_DONE, ok=False, failure=Failure.HOLD), FULL)
    assert held.state.phase is Phase.SHIFTING
    assert held.state.paused


def test_abort_before_traffic_ends_without_touching_anything() -> None:
    for phase in (Phase.PENDING, Phase.STREAMING, Phase.PREFLIGHT):
        d = decide(State(phase=phase), Observations(intents=(Intent.ABORT,)), FULL)
        assert d.state.phase is Phase.ROLLED_BACK
        assert d.effect is None


def test_abort_with_live_traffic_rolls_back() -> None:
    d = decide(_baking(1), Observations(intents=(Intent.ABORT,)), FULL)
    assert d.state.phase is Phase.ROLLING_BACK
    assert d.effect == Effect(Job.ROLLBACK)


def test_abort_during_the_switch_waits_for_it_then_rolls_back() -> None:
    s = State(phase=Phase.SWITCHING)
    waiting = decide(s, Observations(intents=(Intent.ABORT,), running=Job.SWITCH), FULL)
    assert waiting.effect is None
    assert waiting.state.abort_requested
    after = decide(waiting.state, done(Job.SWITCH), FULL)
    assert after.state.phase is Phase.ROLLING_BACK
    assert after.effect == Effect(Job.ROLLBACK)


def test_retry_after_rollback() -> None:
    stayed = State(phase=Phase.ROLLED_BACK, switched=True)
    d = decide(stayed, Observations(intents=(Intent.RETRY,)), FULL)
    assert d.state.phase is Phase.SHIFTING
    assert d.state.attempt == 2
    assert d.state.switched
    reverted = State(phase=Phase.ROLLED_BACK, switched=False)
    d = decide(reverted, Observations(intents=(Intent.RETRY,)), FULL)
    assert d.state.phase is Phase.PREFLIGHT
    assert d.effect == Effect(Job.PREFLIGHT)


def test_retry_and_abort_are_ignored_where_they_mean_nothing() -> None:
    s = _baking(1, 20)
    assert decide(s, Observations(intents=(Intent.RETRY,), elapsed=1), FULL).state.attempt == 1
    fin = State(phase=Phase.FINALIZED)
    assert decide(fin, Observations(intents=(Intent.ABORT,)), FULL).state == fin


def test_terminal_phases_do_nothing() -> None:
    for phase in (Phase.FINALIZED, Phase.ROLLED_BACK):
        d = decide(State(phase=phase), Observations(elapsed=100, sync_ready=True), FULL)
        assert d.effect is None
        assert d.state.phase is phase


def test_state_round_trips_through_json_dicts() -> None:
    s = State(phase=Phase.SHIFTING, stage=2, applied=True, bake_seconds=12.5, switched=True)
    assert State.from_dict(s.as_dict()) == s
    assert State.from_dict({**s.as_dict(), "unknown_future_field": 1}) == s


def test_a_switch_failed_past_its_point_of_no_return_is_run_again_to_finish() -> None:
    s = State(phase=Phase.SWITCHING)
    failed = JobResult(Job.SWITCH, False, "resume failed", Failure.FINISH)
    d = decide(s, Observations(done=failed), FULL)
    assert d.state.phase is Phase.SWITCHING
    assert not d.state.paused
    assert d.effect == Effect(Job.SWITCH)
    undone = decide(s, Observations(done=JobResult(Job.SWITCH, False, "precheck failed")), FULL)
    assert (undone.state.phase, undone.state.paused) == (Phase.STREAMING, True)



def test_a_stage_starved_of_evidence_runs_its_hooks_then_holds_naming_the_checks() -> None:
    """No traffic: the bake cannot pass. After starved_after x bake the stage_starved hooks
    run (say, to start synthetic load); starved as long again, it holds and says why."""
    starving = Observations(elapsed=30, slo_passing=False, starved=("5xx-ratio", "latency"))
    s = _baking(0, 0)
    for _ in range(5):  # 150 s < 3 x 60 s
        d = decide(s, starving, FULL)
        assert d.effect is None
        s = d.state
    d = decide(s, starving, FULL)
    assert d.effect == Effect(Job.STARVED, stage=0)
    assert "5xx-ratio, latency" in d.reason
    s = decide(d.state, done(Job.STARVED), FULL).state
    assert not s.paused
    for _ in range(5):
        s = decide(s, starving, FULL).state
    held = decide(s, starving, FULL)
    assert held.effect is None
    assert held.state.paused
    assert "no evidence for 180s from 5xx-ratio, latency" in held.state.reason
    assert "cutover promote" in held.state.reason


def test_a_failing_check_is_not_starvation() -> None:
    s = _baking(0, 0)
    for _ in range(20):
        s = decide(s, Observations(elapsed=30, slo_passing=False), FULL).state
    assert not s.paused
    assert s.starved_seconds == 0


GATED = Plan(Mode.SHARED, (Stage(10, 60.0, gate="promote"), Stage(50, 60.0, gate="hook"),
                           Stage(100, 60.0)), gate_poll=15.0)


def test_a_promote_gate_holds_a_baked_stage_until_promoted() -> None:
    s = State(phase=Phase.SHIFTING, stage=0, applied=True, bake_seconds=59.0)
    d = decide(s, Observations(elapsed=5.0), GATED)
    assert d.effect is None
    assert d.state.gated
    assert d.state.stage == 0
    assert "waiting at its gate for `cutover promote`" in d.state.reason
    for _ in range(20):  # baked long ago: it still waits, and the watch stays on
        d = decide(d.state, Observations(elapsed=5.0), GATED)
        assert d.effect is None
        assert d.state.stage == 0
    breach = decide(d.state, Observations(elapsed=5.0, breach=Breach("error_rate", "5 %")), GATED)
    assert breach.state.phase is Phase.ROLLING_BACK
    assert breach.effect == Effect(Job.ROLLBACK)
    d = decide(d.state, Observations(elapsed=5.0, intents=(Intent.PROMOTE,)), GATED)
    assert d.effect == Effect(Job.STAGE_DONE, stage=0)
    nxt = decide(d.state, done(Job.STAGE_DONE), GATED).state
    assert (nxt.stage, nxt.gated, nxt.approved) == (1, False, False)


def test_an_early_promote_opens_the_gate_and_skips_the_bake() -> None:
    s = State(phase=Phase.SHIFTING, stage=0, applied=True, bake_seconds=1.0)
    d = decide(s, Observations(elapsed=1.0, intents=(Intent.PROMOTE,)), GATED)
    assert d.effect == Effect(Job.STAGE_DONE, stage=0)


def test_a_hook_gate_asks_its_hooks_every_poll_until_they_approve() -> None:
    s = State(phase=Phase.SHIFTING, stage=1, applied=True, bake_seconds=60.0)
    d = decide(s, Observations(elapsed=1.0), GATED)
    assert d.effect == Effect(Job.APPROVE, stage=1)
    assert d.state.gated
    refused = JobResult(Job.APPROVE, False, "hook qa: exit 1", Failure.HOLD)
    d = decide(d.state, Observations(elapsed=1.0, done=refused), GATED)
    assert d.effect is None
    assert not d.state.paused
    assert "not approved yet" in d.state.reason
    asked = []
    for _ in range(10):  # 20 s: asked again once gate_poll (15 s) has passed
        d = decide(d.state, Observations(elapsed=2.0), GATED)
        asked.append(d.effect)
    assert asked.count(Effect(Job.APPROVE, stage=1)) == 1
    d = decide(d.state, done(Job.APPROVE), GATED)
    assert d.effect == Effect(Job.STAGE_DONE, stage=1)
    assert d.state.approved


def test_a_hook_gate_refusal_asking_for_rollback_rolls_back() -> None:
    s = State(phase=Phase.SHIFTING, stage=1, applied=True, bake_seconds=60.0, gated=True)
    refused = JobResult(Job.APPROVE, False, "hook qa: exit 1", Failure.ROLLBACK)
    d = decide(s, Observations(done=refused), GATED)
    assert d.state.phase is Phase.ROLLING_BACK
    assert d.effect == Effect(Job.ROLLBACK)


def test_a_stage_without_a_gate_never_waits() -> None:
    s = State(phase=Phase.SHIFTING, stage=2, applied=True, bake_seconds=60.0)
    d = decide(s, Observations(elapsed=1.0), GATED)
    assert d.effect is not None
    assert d.effect.job is Job.STAGE_DONE
    assert not d.state.gated
