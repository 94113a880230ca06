"""The switch's way back before its point of no return: undo what was done and resume
writes on the old primary; and what an earlier run left midway (finish it or undo it)."""

from __future__ import annotations

from config.environments import DatabaseSettings
from sync import objects
from sync.endpoint import PgBouncerEndpoint, WriteEndpoint, target_of
from sync.errors import SyncError
from sync.switch_movers import Mover, Sides


class Undo:
    """Undo for one switch run, which tells it what it did (repoint_tried, dst_fenced)."""

    def __init__(self, sides: Sides, endpoint: WriteEndpoint, mover: Mover, name: str) -> None:
        self.s, self.endpoint, self.mover, self.name = sides, endpoint, mover, name
        self.reconciling = False
        """Undoing what an earlier run left: where a command endpoint points is unknown."""
        self.repoint_tried = False
        """This run tried to repoint: a failed script may have done part of its work."""
        self.dst_fenced: bool | None = None
        """Whether the new primary was fenced before this run (the way back: the old primary of
        the switch before), so an undo puts that fence back; None: unknown (a later run)."""

    def points_at(self, db: DatabaseSettings) -> bool:
        return self.endpoint.points_at() == target_of(db)

    def _marked(self) -> bool:
        """A mark on the new primary that still counts: the old primary is still fenced (an
        undo or the guardian going back lifts that fence, which leaves a mark stale)."""
        return objects.switch_marked(self.s.dst, self.name, self.s.d.to) and objects.fenced(self.s.src)

    def complete_repoint(self) -> None:
        """The endpoint really pointed at the new primary: PgBouncer as it serves (the file
        may have been written without its RELOAD), a command endpoint by running its repoint
        again (it cannot be read back)."""
        if isinstance(self.endpoint, PgBouncerEndpoint) and \
                self.endpoint.serving() == target_of(self.s.d.dst_db):
            return
        self.endpoint.repoint(self.s.d.dst_db)

    def left_midway(self) -> str | None:
        """What an earlier run left: "finish" (the endpoint points at the target already),
        "undo" (objects or a fence of a switch that did not get that far), or None."""
        d = self.s.d
        if self.points_at(d.dst_db) or self._marked():
            return "finish"
        if self.mover.left_over() or objects.fenced(self.s.src):
            return "undo"
        return None

    def undo(self) -> None:
        """Back to writes on the old primary with src -> dst replication, whatever was done
        before the point of no return."""
        d = self.s.d
        objects.clear_switch_mark(self.s.dst, self.name)
        self.mover.undo()
        if self._may_point_elsewhere():
            try:
                self.endpoint.repoint(d.src_db)
            except SyncError as exc:
                if isinstance(self.endpoint, PgBouncerEndpoint):
                    raise
                # The user's repoint failed both ways: the endpoint most likely never moved.
                self.s.say(f"pointing the endpoint back failed too ({str(exc).strip()}); it most "
                           "likely still points at the old primary: resuming there")
        objects.unfence(self.s.src)
        if self._was_fenced():  # only one side takes writes, also after an undone way back
            objects.fence(self.s.dst)
        self.endpoint.resume()

    def _was_fenced(self) -> bool:
        """The new primary was the old primary of an earlier switch, fenced since: this run
        knows from its precheck; a later run from the earlier switch's mark on this side."""
        if self.dst_fenced is not None:
            return self.dst_fenced
        src_side = "blue" if self.s.d.to == "green" else "green"
        return objects.switch_marked(self.s.src, self.name, src_side)

    def _may_point_elsewhere(self) -> bool:
        """Whether the endpoint may not point at the old primary any more: PgBouncer's file
        says so; a command endpoint this run tried to repoint (a failed script may have done
        part of its work), or one an earlier run may have repointed."""
        if isinstance(self.endpoint, PgBouncerEndpoint):
            return not self.points_at(self.s.d.src_db)
        return self.repoint_tried or self.reconciling

