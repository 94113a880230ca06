from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.durations import format_duration, parse_duration, parse_size


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90.0), ("5m", 300.0), ("1h30m", 5400.0), ("250ms", 0.25), ("1.5s", 1.5),
    ("2d", 172800.0), (" 10s ", 10.0), (3, 3.0), (0.5, 0.5), ("0s", 0.0),
])
def test_parse_duration_accepts_human_text_and_numbers(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "10", "10x", "s", "-5s", "5m10", "1e3s", True, None, [], "nan"])
def test_parse_duration_rejects_with_an_example_of_what_is_expected(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


@given(st.integers(min_value=0, max_value=10**7))
def test_format_duration_round_trips_whole_seconds(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@given(st.integers(min_value=1, max_value=999_999))
def test_format_duration_round_trips_milliseconds(ms: int) -> None:
    assert parse_duration(format_duration(ms / 1000)) == pytest.approx(ms / 1000)


@pytest.mark.parametrize(("text", "size"), [
    ("16MB", 16_000_000), ("1GiB", 1024**3), (4096, 4096), ("512 kB", 512_000), ("7", 7),
])
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["16 XB", "-1", "MB", -5, 1.5, True])
def test_parse_size_rejects_garbage(bad: object) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(bad)


@pytest.mark.parametrize("bad", ["\u0661s", "\u0967\u0966m", "999999999999999999999999d", 1e300, "1e300"])
def test_durations_are_ascii_and_bounded(bad: object) -> None:
    """Only ASCII digits (an Arabic-Indic "1s" is not one second), and at most about 31 years: a timeout of
    1e300 passed the check and crashed a command with OverflowError."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_sizes_are_ascii() -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size("\u0661MB")
