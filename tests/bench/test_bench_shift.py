"""Traffic shift through the lab's HAProxy at ~1 k req/s, 10 trials (10 -> 50 -> 100 -> 0 ...):

- apply: `set weight` on every server plus the read-back, as `cutover shift` does it, beside
  the anchor (HAProxy applies a weight in under 5 ms);
- confirm: from the shift returning to our observed split (HAProxy's per-server counters)
  within 2 points of the target — when a stage may start baking;
- clients: the split the load generator itself saw in the second after the shift returned, and
  the time until its running split (requests sent since the return, at least 20) first came
  within 2 points and stayed there. No request may fail.
"""

from __future__ import annotations

import time

import pytest

from config.traffic import HAProxySettings
from controller.lab.lab import Lab
from controller.lab.load import HttpLoad, LoadReport
from controller.traffic.haproxy import HAProxyBalancer
from controller.traffic.shift import Seen, observe_split, shift
from tests.bench.conftest import BENCH_TIMEOUT, median, percentile, wait_quiet

RATE = 1000
TARGETS = (10, 50, 100, 0, 10, 50, 100, 0, 50, 10)
TOLERANCE = 2.0
ANCHOR_MS = 5.0


def settled_after(report: LoadReport, since: float, target: float, until: float) -> float | None:
    """Seconds from `since` until the clients' running split (requests sent since then, at
    least 20) entered target +- TOLERANCE and stayed within it until `until`."""
    window = sorted((s for s in report.samples if since <= s.at <= until and s.env), key=lambda s: s.at)
    green = 0
    settled: float | None = None
    for n, s in enumerate(window, 1):
        green += s.env == "green"
        inside = n >= 20 and abs(100 * green / n - target) <= TOLERANCE
        if inside and settled is None:
            settled = s.at - since
        elif not inside and n >= 20:
            settled = None
    return settled


@pytest.mark.timeout(BENCH_TIMEOUT)
def test_shift_apply_and_confirm(lab: Lab) -> None:
    lb = HAProxyBalancer(HAProxySettings(socket=lab.state.haproxy_socket),
                         lab.state.servers_of("blue"), lab.state.servers_of("green"))
    apply_ms, confirm_ms, client_ms, client_err = [], [], [], []
    wait_quiet("the shift benchmark")
    try:
        with HttpLoad(lab.state.frontend_url, rate=RATE, write_ratio=0.0) as load:
            time.sleep(1.0)
            for i, target in enumerate(TARGETS, 1):
                result = shift(lb, target, observe=False)
                returned = time.monotonic()
                seen = observe_split(lb, target, TOLERANCE, 10.0)
                assert seen.seen is Seen.CONFIRMED, f"trial {i}: {seen}"
                time.sleep(max(0.0, returned + 1.2 - time.monotonic()))
                report = load.report()
                window = [s for s in report.samples if returned <= s.at <= returned + 1.0 and s.env]
                share = 100 * sum(s.env == "green" for s in window) / len(window)
                settled = settled_after(report, returned, target, returned + 1.0)
                assert settled is not None, f"trial {i}: clients never saw {target} % (saw {share:.1f})"
                apply_ms.append(result.apply_seconds * 1000)
                confirm_ms.append(seen.seconds * 1000)
                client_ms.append(settled * 1000)
                client_err.append(abs(share - target))
                print(f"[bench] trial {i:2} -> {target:3} %: apply {apply_ms[-1]:.1f} ms, confirmed "
                      f"after {confirm_ms[-1]:.0f} ms ({seen.requests} requests), clients "
                      f"{share:.1f} % over 1 s, within {TOLERANCE:g} points after "
                      f"{client_ms[-1]:.0f} ms")
            final = load.stop()
    finally:
        shift(lb, 0, observe=False)
        lb.close()
    rate = final.total / max(1e-9, final.samples[-1].at - final.samples[0].at)
    print(f"\nshift through HAProxy at {rate:.0f} req/s, {len(TARGETS)} trials, 1 blue + 1 green "
          f"server (medians, max):")
    print(f"    apply (set weight x2 + read back)   {median(apply_ms):6.1f} ms  max "
          f"{max(apply_ms):.1f} ms   ours / anchor ({ANCHOR_MS:g} ms) {median(apply_ms) / ANCHOR_MS:.2f}")
    print(f"    confirmed by HAProxy's counters     {median(confirm_ms):6.0f} ms  max "
          f"{max(confirm_ms):.0f} ms   (needs 50 requests: 50 ms at 1 k req/s)")
    print(f"    clients within {TOLERANCE:g} points            {median(client_ms):6.0f} ms  max "
          f"{max(client_ms):.0f} ms   p90 {percentile(client_ms, 90):.0f} ms")
    print(f"    clients' split error over 1 s       {median(client_err):6.2f} points  max "
          f"{max(client_err):.2f}")
    print(f"    failed requests                     {final.failed} of {final.total}")
    assert final.failed == 0
