"""The user-id hash of sticky stages by header (controller.traffic.buckets). That it is the one
nginx's split_clients computes is tested against the lab's nginx (tests/integration/
test_sticky.py); here, what holds whatever the ids."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from controller.traffic.buckets import goes_green, murmur2, position


@given(st.text(max_size=40), st.integers(0, 100), st.integers(0, 100))
def test_a_user_on_green_stays_on_green_as_the_share_rises(user: str, a: int, b: int) -> None:
    low, high = sorted((a, b))
    if goes_green(user, low):
        assert goes_green(user, high)


@given(st.text(max_size=40))
def test_nobody_at_0_everybody_at_100_and_position_says_from_where(user: str) -> None:
    assert not goes_green(user, 0)
    assert goes_green(user, 100)
    assert goes_green(user, min(100.0, position(user) + 0.02))


def test_the_shares_come_out_as_asked_and_hash_to_32_bits() -> None:
    users = [f"user-{i}" for i in range(20000)]
    for pct in (1, 10, 50, 90):
        share = 100 * sum(goes_green(u, pct) for u in users) / len(users)
        assert abs(share - pct) < 1.0, (pct, share)
    assert all(0 <= murmur2(u.encode()) < 2**32 for u in users[:100])
    assert murmur2(b"") == 0  # seed 0 and no data: nothing to mix
