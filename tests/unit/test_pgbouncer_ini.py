"""The switch's repoint rewrites host, port and dbname of PgBouncer's [databases] lines and
keeps everything else: pure text, no servers."""

from __future__ import annotations

from sync.pgbouncer_ini import parse, retarget

LINE = ("bank = host=10.0.0.5 port=31000 dbname=bank pool_size=24 user=app auth_user=pgb "
        "pool_mode=transaction client_encoding=UTF8 application_name='the bank''s app'\n")


def test_only_the_target_changes_and_every_other_option_keeps_its_place() -> None:
    entry = parse(LINE)
    assert entry is not None
    assert retarget(entry, "bank", "10.0.0.6", 31001, "bank_v2") == (
        "bank = host=10.0.0.6 port=31001 dbname=bank_v2 pool_size=24 user=app auth_user=pgb "
        "pool_mode=transaction client_encoding=UTF8 application_name='the bank''s app'\n")


def test_quoted_values_are_read_and_written_back_quoted() -> None:
    entry = parse(LINE)
    assert entry is not None
    assert entry.value("application_name") == "the bank's app"
    assert entry.value("port") == "31000"
    moved = retarget(entry, "bank", "db host", 5432, "x")
    assert moved.startswith("bank = host='db host' port=5432 dbname=x ")


def test_a_line_without_a_target_gets_one_and_a_new_entry_is_written_whole() -> None:
    entry = parse("bank = pool_size=5\n")
    assert entry is not None
    assert retarget(entry, "bank", "h", 1, "d") == "bank = host=h port=1 dbname=d pool_size=5\n"
    assert retarget(None, "bank", "h", 1, "d") == "bank = host=h port=1 dbname=d\n"


def test_comments_sections_and_lines_it_cannot_read_are_not_entries() -> None:
    for line in ("; bank = host=x", "# note", "[databases]", "", "bank = host=x garbage here"):
        assert parse(line) is None, line
