"""The write switch through the lab's real PgBouncer, with pgbench writing through it: blue ->
green -> blue with checksums equal after each, a transaction that holds the pause past the
timeout, sequences, and a controller killed between any two steps."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest

from controller.lab.load import Pgbench, pgbench_init
from sync import logical
from sync.errors import SyncError
from sync.status import wait_applied
from sync.switch import switch
from tests.switchfixtures import Routed
from tests.syncfixtures import DbPair, assert_same_data


def read_only(pair: DbPair, env: str) -> bool:
    with psycopg.connect(pair.dsn(env)) as conn:
        row = conn.execute("SHOW default_transaction_read_only").fetchone()
    return row == ("on",)


def start_sync(routed: Routed, scale: int = 2) -> None:
    pgbench_init(routed.pair.dsn("blue"), scale)
    with routed.pair.blue() as b:
        b.execute("ALTER TABLE pgbench_history REPLICA IDENTITY FULL")
    logical.start(routed.settings)
    routed.pair.wait_caught_up()


def test_switch_there_and_back_under_load_loses_nothing(routed: Routed) -> None:
    start_sync(routed)
    bench = Pgbench(routed.dsn, clients=4, seconds=12)
    bench.start()
    time.sleep(2)
    there = switch(routed.settings, "green")
    assert routed.primary() == "green"
    assert there.pause_ms is not None
    assert there.pause_ms < 2000
    assert read_only(routed.pair, "blue")
    assert not read_only(routed.pair, "green")
    time.sleep(3)
    back = switch(routed.settings, "blue")
    assert routed.primary() == "blue"
    assert not read_only(routed.pair, "blue")
    assert read_only(routed.pair, "green")
    result = bench.wait(timeout=60)
    assert result.failed == 0
    assert result.transactions > 100
    routed.pair.wait_caught_up()  # blue -> green again after the way back
    assert_same_data(routed.pair)
    with routed.pair.blue() as b:
        assert b.execute("SELECT count(*) FROM pgbench_history").fetchone() == (result.transactions,)
    assert back.sequences >= 0
    assert {"fence", "drain", "sequences", "verify", "stop and slot", "repoint", "resume"} \
        <= set(there.steps)


def test_a_transaction_holding_the_pause_aborts_the_switch_cleanly(routed: Routed) -> None:
    start_sync(routed, scale=1)
    holder = routed.connect()
    holder.autocommit = False
    holder.execute("UPDATE pgbench_branches SET bbalance = bbalance + 1 WHERE bid = 1")
    with pytest.raises(SyncError, match=r"could not pause .* within 2s"):
        switch(routed.settings, "green")
    holder.commit()
    holder.close()
    assert routed.primary() == "blue"
    assert not read_only(routed.pair, "blue")
    with routed.connect() as conn:
        conn.execute("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, 1, 7, now())")
    routed.pair.wait_caught_up()
    assert_same_data(routed.pair)


def test_sequences_continue_on_the_new_primary(routed: Routed) -> None:
    with routed.pair.blue() as b:
        b.execute("CREATE TABLE orders (id bigserial PRIMARY KEY, note text);"
                  "CREATE TABLE ident (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v int);"
                  "INSERT INTO orders (note) SELECT 'o' FROM generate_series(1, 500);"
                  "INSERT INTO ident (v) SELECT generate_series(1, 300)")
    logical.start(routed.settings)
    routed.pair.wait_caught_up()
    switch(routed.settings, "green")
    with routed.connect() as conn:
        row = conn.execute("INSERT INTO orders (note) VALUES ('after') RETURNING id").fetchone()
        assert row == (501,)
        assert conn.execute("INSERT INTO ident (v) VALUES (0) RETURNING id").fetchone() == (301,)
    switch(routed.settings, "blue")
    with routed.connect() as conn:
        assert conn.execute("INSERT INTO orders (note) VALUES ('back') RETURNING id").fetchone() == (502,)
    routed.pair.wait_caught_up()
    assert_same_data(routed.pair)


class Killed(BaseException):
    """The controller dying at a step: nothing of ours catches it, so nothing is undone."""


STEPS = ["pause: done", "fence: done", "drain: done", "sequences: done", "stop and slot: done",
         "unfence new primary: done", "repoint: done", "resume: done", "subscribe back: done"]


@pytest.mark.parametrize("at", STEPS)
def test_killed_between_steps_then_rerun_ends_consistent(routed: Routed, at: str) -> None:
    start_sync(routed, scale=1)
    stop = threading.Event()
    written: list[int] = []

    def writer() -> None:  # a client that keeps writing through PgBouncer, retrying errors
        n = 0
        while not stop.is_set():
            try:
                with routed.connect() as conn:
                    while not stop.is_set():
                        conn.execute("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
                                     "VALUES (1, 1, 1, %s, now())", [n])
                        written.append(n)
                        n += 1
                        time.sleep(0.005)
            except psycopg.Error:
                time.sleep(0.05)

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(0.5)

    def die(step: str, _details: dict[str, Any]) -> None:
        if step == at:
            raise Killed(step)

    try:
        with pytest.raises(Killed):
            switch(routed.settings, "green", record=die)
        report = switch(routed.settings, "green")  # the operator re-runs it
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join()
    assert routed.primary() == "green"
    assert report.already or report.pause_ms is not None
    assert read_only(routed.pair, "blue")
    assert not read_only(routed.pair, "green")
    with routed.pair.green() as g:
        rows = {int(r[0]) for r in g.execute("SELECT delta FROM pgbench_history").fetchall()}
    assert set(written) <= rows, "an acknowledged write is missing on the new primary"
    # Blue is current through the reverse replication: nothing lost for a way back.
    with routed.pair.green() as g, routed.pair.blue() as b:
        assert wait_applied(g, b, 30)
    assert_same_data(routed.pair)
