"""The write switch: move the one write endpoint from one database to the other with a pause
of milliseconds, and leave the old side current through replication the other way, so going
back loses nothing.

Blue -> green, in order (green -> blue mirrors it):
 1. precheck: green streams, no write transaction older than a limit; then, writes flowing,
    wait until green has applied all but a bounded tail (a heartbeat gets through within
    catch_up_tail, lag under max_lag_bytes): the pause never drains a backlog;
 2. pause the endpoint; fence blue (database read-only for new sessions, every remaining
    client session ended);
 3. a heartbeat on blue, and wait until green applied it: green now holds every commit blue
    made (apply keeps commit order);
 4. copy every sequence;
 5. stop blue -> green (PostgreSQL 15 has no origin filter: both directions at once would
    loop) and create the reverse slot on green (its publication was made before the pause);
 6. unfence green, repoint the endpoint to green, resume. Then, outside the pause: blue
    subscribes to the reverse slot (copy_data = false: the slot kept every change since the
    fence), and the old subscription and slot are dropped.
Row counts (or checksums) are compared as both sides stood at the fence. By default
(verify_at = "after_resume") that runs once writes flow again: blue is fenced and does not
follow green yet, and green is read in the snapshot its reverse slot exported at the fence,
so the pause does not grow with the data; a difference switches writes straight back to blue
(the reverse replication carries what green took meanwhile). With verify_at = "in_pause" it
runs before step 5 and a difference aborts.
The point of no return is a mark written on the new primary after the repoint, just before
the resume (objects.SWITCH_MARK_DDL). Any failure of any kind, or the hard timeout, before it
undoes what was done (reverse objects dropped, blue -> green re-enabled, blue unfenced,
endpoint pointed back) and resumes writes on blue; after it the switch only goes forward. A
fence guardian (sync.guardian) started before the pause applies the same rule should this
process die or hang. A switch killed midway is reconciled by the next run: completed if the
endpoint already points at the target or the mark is there while the old primary is still
fenced (writes may have landed there: only forward), undone otherwise, then run again. One
killed before its comparison after the resume is compared live by the next, once the old
primary has caught up (the fence snapshot died with the killed run).

What the steps do to the data depends on the sync mode (sync.switch_movers: replication, or a
final diff under the fence); the undo and what an earlier run left are in sync.switch_undo.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg

from config.replication import SyncMode
from config.settings import Settings, need_switchover
from sync import objects, readiness
from sync.callbacks import Record, Say
from sync.catalog import list_tables
from sync.connections import Conn, connect
from sync.endpoint import WriteEndpoint
from sync.errors import SyncError
from sync.guardian import Guardian
from sync.schema import synced_schemas
from sync.sequences import copy_sequences
from sync.switch_compare import compare_at_fence, compare_live
from sync.switch_movers import Sides, mover_for
from sync.switch_report import (
    Direction,
    SwitchReport,
    SwitchUnfinished,
    VerifyDifference,
    direction,
    endpoint_for,
)
from sync.switch_undo import Undo

GUARDIAN_GRACE = 2.0
"""The guardian acts this long after switchover.timeout, should the switch hang past its own
limit; a controller that dies is seen at once (its pipe closes)."""


class _Switch:
    def __init__(self, settings: Settings, d: Direction, sides: tuple[Conn, Conn], endpoint: WriteEndpoint,
                 say: Say, record: Record, *, compare: bool = True, back_on_difference: bool = True) -> None:
        """sides: connections to the old primary (d.src_db) and the new one (d.dst_db)."""
        self.settings, self.d, self.endpoint, self.say, self.record = settings, d, endpoint, say, record
        self.src, self.dst = sides
        self.sw = need_switchover(settings, "the switch")
        self.sides = Sides(settings, d, *sides, say)
        # The diff sync's final diff compares every row: no separate comparison.
        self.compare = compare and self.sw.verify != "none" and settings.sync.mode != SyncMode.DIFF
        # Comparing after the resume needs the reverse replication to switch back losslessly.
        self.after_resume = (self.compare and self.sw.verify_at == "after_resume"
                             and self.sw.reverse_replication)
        self.back_on_difference = back_on_difference
        self.mover = mover_for(self.sides, export_snapshot=self.after_resume)
        self.report = SwitchReport(d.to)
        self.sequence_schemas = list(settings.sync.schemas)
        """Where sequences are copied from in the pause: found before it (precheck)."""
        self.name = objects.pg_name(settings.sync)
        self.guardian: Guardian | None = None
        self.marked = False
        """Past the point of no return (the mark is on the new primary): only forward now."""
        self.back = Undo(self.sides, endpoint, self.mover, self.name)

    def step(self, name: str, fn: Callable[[], Any], **details: Any) -> Any:
        self.record(f"{name}: start", details)
        started = time.monotonic()
        result = fn()
        self.report.steps[name] = time.monotonic() - started
        self.record(f"{name}: done", {**details, "seconds": self.report.steps[name]})
        return result

    # -- the steps ---------------------------------------------------------------------

    def precheck(self) -> None:
        self.back.dst_fenced = objects.fenced(self.dst)
        self.sequence_schemas = synced_schemas(self.src, self.settings)
        self.mover.precheck()
        self._precheck_writers()

    def make_ready(self, dry_run: bool) -> None:
        """Before the pause, never inside it: the new primary's planner statistics, and (going
        to green) its materialized views refreshed from its own data. A dry run only names
        what is not ready."""
        tables = list_tables(self.src, self.settings.sync)
        if dry_run:
            state = readiness.read(self.dst, tables)
            if not state.ready:
                self.say(f"{self.d.to} is not ready for traffic yet ({state.describe()}); a switch "
                         "puts that right before its pause")
            return
        with connect(self.d.dst_db, "ready", statement_timeout=0) as conn:
            readiness.make_ready(conn, tables, self.say, refresh_all=self.d.to == "green")

    def _precheck_writers(self) -> None:
        old = self.src.execute(
            "SELECT pid, now() - xact_start FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_xid IS NOT NULL AND pid <> pg_backend_pid() "
            "AND now() - xact_start > make_interval(secs => %s) ORDER BY xact_start LIMIT 1",
            [self.sw.max_write_xact_age]).fetchone()
        if old is not None:
            raise SyncError(f"a write transaction (pid {old[0]}) has been open for {old[1]}, longer "
                            f"than switchover.max_write_xact_age; the pause would wait for it. "
                            "Let it finish, or end it, then retry")

    def fence_src(self) -> None:
        objects.fence(self.src)
        # Every remaining client session ends: none may write after the fence, whatever its role.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            left = self.src.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend'").fetchone()
            if left == (0,):
                return
            time.sleep(0.005)
        raise SyncError("client sessions on the old primary would not end")

    def sequences(self) -> None:
        done = copy_sequences(self.src, self.dst, self.sequence_schemas)
        self.report.sequences = done.copied

    def verify(self) -> None:
        """Both sides as they stood at the fence (switch_compare.compare_at_fence); any
        difference raises VerifyDifference."""
        self.report.tables_verified = compare_at_fence(
            self.src, self.dst, list_tables(self.src, self.settings.sync), self.sw.verify,
            self.mover.fence_snapshot, self.d.to)

    def prepare_back(self) -> None:
        """Before the pause: the mark's table on the new primary, so the pause only inserts,
        and the way back (the mover's)."""
        self.dst.execute(objects.SWITCH_MARK_DDL)
        objects.clear_switch_mark(self.dst, self.name)  # from an earlier switch this way: stale
        self.mover.prepare_back()

    def repoint(self) -> None:
        if self.guardian is not None:
            self.guardian.repointing()
        self.back.repoint_tried = True
        self.endpoint.repoint(self.d.dst_db)

    def mark(self) -> None:
        """The point of no return, after the repoint and just before the resume (no write has
        reached the new primary yet): the guardian is told first, then the mark goes on the
        new primary. From here a failure, a kill or a hang only goes forward (sync.guardian
        has the rule); before it, everything is undone."""
        if self.guardian is not None:
            self.guardian.forward()
        objects.mark_switch(self.dst, self.name, self.d.to)
        self.marked = True
        objects.clear_switch_mark(self.src, self.name)  # the earlier switch's, now superseded

    # -- the whole -------------------------------------------------------------------------

    def reconcile(self) -> bool:
        """Finish or undo a switch an earlier run left midway; True when it was complete.
        Once the endpoint points at the target, writes may have landed there: only forward."""
        d = self.d
        left = self.back.left_midway()
        if left == "finish":
            self.say(f"writes already go to {d.to}: finishing what an earlier run left")
            uncompared = self.mover.uncompared()
            objects.unfence(self.dst)
            self.back.complete_repoint()
            self.endpoint.resume()
            self.report.already = True
            if not uncompared:
                self.finish()
                return True
            # Its fence snapshot died with it: compare live instead, once the old primary has
            # caught up, with verify's rechecks under the new primary's writes. The old
            # replication goes only after that, so a run killed meanwhile compares again.
            self.step("subscribe back", self.mover.subscribe_back)
            self._compare_or_switch_back("verify live", lambda: compare_live(self.sides, self.report))
            self.step("drop old replication", self.mover.drop_old)
            return True
        if left == "undo":
            self.say("undoing an interrupted switch first: writes resume on the current primary")
            self.back.reconciling = True
            self.step("undo interrupted", self.back.undo)
            self.report.undid_interrupted = True
        return False

    def finish(self) -> None:
        self.step("subscribe back", self.mover.subscribe_back)
        self.step("drop old replication", self.mover.drop_old)

    def run(self, dry_run: bool) -> SwitchReport:
        try:
            return self._run(dry_run)
        finally:
            self.mover.close()

    def _run(self, dry_run: bool) -> SwitchReport:
        if dry_run and (left := self.back.left_midway()) is not None:
            self.report.dry_run = True
            self.report.already = left == "finish"
            self.say(f"dry run: writes already go to {self.d.to}; a run would finish what an "
                     "earlier one left" if left == "finish" else
                     "dry run: an earlier switch stopped midway; a run would undo it first "
                     "(writes resume on the current primary), then switch")
            return self.report
        if self.reconcile():
            return self.report
        self.step("precheck", self.precheck)  # before the work of making ready, and after it:
        self.step("make ready", lambda: self.make_ready(dry_run))
        self.step("precheck", self.precheck)
        if not dry_run:
            self.step("catch up", self.mover.catch_up)
        if dry_run:  # reads only: nothing created on either server
            self.mover.tables_back()
            lag = self.mover.lag_bytes()
            if lag and lag > self.settings.sync.max_lag_bytes:
                self.say(f"{self.d.to} is {lag:,} bytes behind: a switch would wait for it to catch "
                         "up before pausing writes")
            self.report.dry_run = True
            self.say(f"dry run: prechecks pass; a switch to {self.d.to} would start now")
            return self.report
        self.step("prepare back", self.prepare_back)
        in_pause: list[tuple[str, Callable[[], Any]]] = [
            ("fence", self.fence_src), ("drain", lambda: self.mover.drain(self.report)),
            ("sequences", self.sequences)]
        if self.compare and not self.after_resume:
            in_pause.append(("verify", self.verify))
        in_pause += [("stop and slot", self.mover.stop_and_slot),
                     ("unfence new primary", lambda: objects.unfence(self.dst)),
                     ("repoint", self.repoint),
                     ("mark", self.mark)]
        self.guardian = self._start_guardian()
        try:
            self._pause_and_switch(in_pause)
        finally:
            self.guardian.done()
        self.say(f"writes now go to {self.d.to}; the pause lasted {self.report.pause_ms:.0f} ms")
        if self.compare:
            self.report.verified = "after resume" if self.after_resume else "in pause"
        if self.after_resume:
            try:
                self._compare_or_switch_back("verify", self.verify)
            finally:
                self.mover.close()
        self.finish()
        return self.report

    def _start_guardian(self) -> Guardian:
        """Writes flow again even if this process dies in the pause (sync.guardian); started
        before it, so its start-up is no part of the pause."""
        return Guardian.start(self.sw, self.d.src_db, self.d.dst_db, (self.name, self.d.to),
                              self.sw.timeout + GUARDIAN_GRACE)

    def _pause_and_switch(self, in_pause: list[tuple[str, Callable[[], Any]]]) -> None:
        deadline = time.monotonic() + self.sw.timeout
        paused = time.monotonic()
        self.step("pause", lambda: self.endpoint.pause(self.sw.fence_timeout))
        try:
            for name, fn in in_pause:
                if time.monotonic() > deadline and not self.marked:
                    raise SyncError(f"the switch passed switchover.timeout ({self.sw.timeout:g}s)")
                self.step(name, fn)
            self.step("resume", self.endpoint.resume)
        except Exception as exc:
            # Whatever failed, of whatever kind (a full disk, a bad template, a bug), writes
            # must not stay held: past the mark the switch goes forward, before it it is
            # undone; and if that fails too, the guardian releases the writers by its rule.
            what = _describe(exc)
            if self.marked:
                self._forward_anyway(what)
            else:
                self._undo_after(what)
        self.report.pause_ms = (time.monotonic() - paused) * 1000

    def _forward_anyway(self, what: str) -> None:
        """A failure past the point of no return (the endpoint is repointed already): resume
        once more; if that fails too, the guardian goes forward and the next run finishes."""
        assert self.guardian is not None
        self.say(f"switch step failed past its point of no return ({what}); going forward")
        try:
            self.step("resume", self.endpoint.resume)
        except Exception as again:
            released = self.guardian.release()
            raise SwitchUnfinished(f"switch to {self.d.to} failed past its point of no return ({what}), "
                            f"and resuming again failed ({_describe(again)}); {released}; run "
                            f"`cutover switch --to {self.d.to}` to finish it") from None

    def _undo_after(self, what: str) -> None:
        assert self.guardian is not None
        self.say(f"switch failed ({what}); undoing: writes resume on the old primary")
        try:
            self.guardian.back()  # in case the mark was being written when it failed
            self.step("undo", self.back.undo)
        except Exception as undo_exc:
            released = self.guardian.release()
            raise SyncError(f"switch failed: {what}; AND undoing it failed: {_describe(undo_exc)}; "
                            f"{released}; run `cutover switch --to {self.d.to}` again to reconcile "
                            "once both databases answer") from None
        raise SyncError(f"switch to {self.d.to} failed and was undone (writes are on the "
                        f"old primary, nothing lost): {what}") from None

    def _compare_or_switch_back(self, name: str, compare: Callable[[], None]) -> None:
        """Compare while writes flow on the new primary; on a difference, switch writes
        straight back (nothing compared there: the sides are known to differ), losing
        nothing, and fail. A comparison that cannot run fails nothing: the switch is done,
        only its proof is missing, and the operator is told to verify."""
        try:
            self.step(name, compare)
            return
        except VerifyDifference as exc:
            diff = exc
        except (SyncError, psycopg.Error) as exc:
            self.report.verified = None
            self.say(f"writes are on {self.d.to}, but the two sides were not compared: "
                     f"{str(exc).strip()}; run `cutover verify` once they have caught up")
            return
        if not self.back_on_difference:
            self.report.difference = str(diff)
            self.say(f"{diff}; writes stay on {self.d.to} (a rollback does not go back); "
                     "compare the two sides with `cutover verify`")
            return
        back_to = "blue" if self.d.to == "green" else "green"
        self.say(f"{diff}; switching writes back to {back_to}")
        self.mover.close()
        self.finish()  # the old primary follows the new one: what it took comes back
        back = _Switch(self.settings, direction(self.settings, back_to), (self.dst, self.src),
                       self.endpoint, self.say, self.record, compare=False)
        try:
            back.run(dry_run=False)
        except (SyncError, psycopg.Error) as exc:
            raise SyncError(f"{diff}; switching writes back to {back_to} failed too "
                            f"({str(exc).strip()}): writes are on {self.d.to}, and "
                            f"{back_to} follows it; run `cutover switch --to {back_to}`") from None
        raise VerifyDifference(f"switch to {self.d.to} reverted: {diff}; writes are back on "
                               f"{back_to}, with every row written meanwhile")


def _describe(exc: BaseException) -> str:
    """An error for a message: ours and PostgreSQL's by their text, others with their type
    (an IsADirectoryError's text alone does not say what happened)."""
    if isinstance(exc, SyncError | psycopg.Error):
        return str(exc).strip()
    return f"{type(exc).__name__}: {str(exc).strip()}".rstrip(": ")



def switch(settings: Settings, to: str = "green", *, dry_run: bool = False,
           say: Say = lambda _: None, record: Record = lambda _s, _d: None,
           endpoint: WriteEndpoint | None = None, back_on_difference: bool = True) -> SwitchReport:
    """back_on_difference=False (a rollback): a difference found after the resume is
    reported (SwitchReport.difference) and writes stay where they went."""
    d = direction(settings, to)
    ep = endpoint or endpoint_for(settings)
    with connect(d.src_db, "switch", statement_timeout=0) as src, \
            connect(d.dst_db, "switch", statement_timeout=0) as dst:
        return _Switch(settings, d, (src, dst), ep, say, record,
                       back_on_difference=back_on_difference).run(dry_run)
