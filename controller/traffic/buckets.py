"""Which colour a user belongs to at a share, by hashing the user's id the way nginx's
split_clients does (MurmurHash2, seed 0, the share in hundredths of a percent): a sticky stage
by header sends a user to green exactly when an application that checks a feature flag's
rollout_percentage with `goes_green` shows it the new behaviour. A user is green from the
share it first falls under on, and stays green as the share rises. Pure: no I/O."""

from __future__ import annotations

M = 0x5BD1E995
MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """MurmurHash2 (32 bits, seed 0) as nginx computes it: 4-byte little-endian blocks, then
    the tail, then the final mix."""
    h = len(data) & MASK
    blocks = len(data) // 4 * 4
    for i in range(0, blocks, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * M) & MASK
        k ^= k >> 24
        k = (k * M) & MASK
        h = ((h * M) & MASK) ^ k
    tail = data[blocks:]
    if tail:
        for shift, byte in reversed(list(enumerate(tail))):
            h ^= byte << (8 * shift)
        h = (h * M) & MASK
    h ^= h >> 13
    h = (h * M) & MASK
    h ^= h >> 15
    return h


def threshold(percent: float) -> int:
    """The hashes below this are in the first `percent` (nginx keeps two decimals)."""
    hundredths = round(percent * 100)
    return hundredths * MASK // 10000


def goes_green(key: str, percent: float) -> bool:
    """Whether the user with this id is on green while green has `percent` % of users."""
    if percent >= 100:
        return True
    return murmur2(key.encode()) < threshold(percent)


def position(key: str) -> float:
    """The share (0-100) from which on this user is green."""
    return 100.0 * murmur2(key.encode()) / (MASK + 1)
