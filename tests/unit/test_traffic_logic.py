"""Traffic logic without servers: weights for a share, the split judge, the shift's read-back
and confirmation rules (against a scripted balancer), the command template, nginx's file."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.traffic import HAProxySettings, Match, NginxSettings
from controller.traffic.balancer import BadTrafficInput, EnvCounters, ShareBalancer, Split, TrafficError
from controller.traffic.command import fill
from controller.traffic.haproxy import HAProxyBalancer
from controller.traffic.nginx import NginxBalancer
from controller.traffic.shift import Seen, judge_window, observe_split, shift
from controller.traffic.weights import MAX_WEIGHT, green_share, weights_for


def names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(1, n + 1)]


@pytest.mark.parametrize(("pct", "nb", "ng", "expected"), [
    (0, 1, 1, {"blue1": 1, "green1": 0}),
    (10, 1, 1, {"blue1": 9, "green1": 1}),
    (10, 2, 2, {"blue1": 9, "blue2": 9, "green1": 1, "green2": 1}),
    (50, 3, 1, {"blue1": 1, "blue2": 1, "blue3": 1, "green1": 3}),
    (100, 2, 1, {"blue1": 0, "blue2": 0, "green1": 1}),
])
def test_weights_examples(pct: int, nb: int, ng: int, expected: dict[str, int]) -> None:
    assert weights_for(pct, names("blue", nb), names("green", ng)) == expected


@given(st.integers(0, 100), st.integers(1, 12), st.integers(1, 12))
def test_weights_give_the_share_within_half_a_point(pct: int, nb: int, ng: int) -> None:
    blue, green = names("blue", nb), names("green", ng)
    w = weights_for(pct, blue, green)
    assert max(w.values()) <= MAX_WEIGHT
    # Within half a point, except where weights of 1..256 cannot get that close at all.
    floor = 100 * ng / (ng + MAX_WEIGHT * nb)
    ceiling = 100 * MAX_WEIGHT * ng / (MAX_WEIGHT * ng + nb)
    if floor + 0.5 <= pct <= ceiling - 0.5:
        assert green_share(w, green) == pytest.approx(pct, abs=0.5)
    assert (sum(w[s] for s in green) == 0) == (pct == 0)
    assert (sum(w[s] for s in blue) == 0) == (pct == 100)
    assert len({w[s] for s in blue}) == 1  # even within an environment
    assert len({w[s] for s in green}) == 1


def test_weights_refuse_a_share_outside_0_to_100() -> None:
    with pytest.raises(ValueError, match="0-100"):
        weights_for(101, ["b"], ["g"])


def test_judge_waits_for_enough_requests_then_compares_with_tolerance() -> None:
    assert judge_window(10, 1, 10, 2) is Seen.WAITING
    assert judge_window(10, 6, 50, 2) is Seen.CONFIRMED  # 12 %
    assert judge_window(10, 7, 50, 2) is Seen.MISMATCH  # 14 %
    assert judge_window(0, 0, 50, 2) is Seen.CONFIRMED
    assert judge_window(100, 49, 50, 2) is Seen.CONFIRMED
    assert judge_window(100, 48, 50, 2) is Seen.MISMATCH


def test_command_template_speaks_the_guides_words() -> None:
    argv = ["shift.sh", "--target", "{target}", "--percentage", "{percentage}",
            "{blue_weight}/{green_weight}"]
    assert fill(argv, 10) == ["shift.sh", "--target", "green", "--percentage", "10", "90/10"]
    assert fill(argv, 0) == ["shift.sh", "--target", "blue", "--percentage", "100", "100/0"]
    with pytest.raises(BadTrafficInput, match="bad placeholder"):
        fill(["x", "{tagret}"], 10)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class Scripted(ShareBalancer):
    """A balancer whose reads, failures and counters a test scripts."""

    def __init__(self, *, per_tick: tuple[int, int] = (90, 10), revert_once: bool = False,
                 fail_apply: bool = False) -> None:
        self.weights = {"b": 1, "g": 0}
        self.per_tick = per_tick
        self.revert_once, self.fail_apply = revert_once, fail_apply
        self.applied: list[int] = []
        self.counts = {"blue": 0, "green": 0}

    def describe(self) -> str:
        return "scripted"

    def check(self) -> None:
        pass

    def expected(self, pct: int) -> Split:
        w = weights_for(pct, ["b"], ["g"])
        return Split(green_share(w, ["g"]), w)

    def apply(self, pct: int) -> None:
        self.applied.append(pct)
        if self.fail_apply:
            self.weights = {"b": 9, "g": 0}  # half way, then the balancer went away
            raise TrafficError("connection lost")
        self.weights = weights_for(pct, ["b"], ["g"])

    def read(self) -> Split:
        if self.revert_once and self.applied:  # a restart reverted the first change
            self.revert_once = False
            return Split(0.0, {"b": 1, "g": 0})
        return Split(green_share(self.weights, ["g"]), dict(self.weights))

    def counters(self) -> dict[str, EnvCounters]:
        self.counts["blue"] += self.per_tick[0]
        self.counts["green"] += self.per_tick[1]
        return {env: EnvCounters(n, 0) for env, n in self.counts.items()}

    def close(self) -> None:
        pass


def test_shift_reapplies_once_when_the_read_back_reverted() -> None:
    lb = Scripted(revert_once=True)
    result = shift(lb, 10, observe=False)
    assert lb.applied == [10, 10]
    assert result.after == Split(10.0, {"b": 9, "g": 1})


def test_shift_reports_the_real_state_of_a_half_applied_change() -> None:
    real = r"connection lost; the balancer now holds: green 0\.0 % \(b=9, g=0\)"
    with pytest.raises(TrafficError, match=real):
        shift(Scripted(fail_apply=True), 10, observe=False)


def test_observe_confirms_a_matching_split_quickly() -> None:
    clock = Clock()
    seen = observe_split(Scripted(per_tick=(45, 5)), 10, 2, 30, clock, clock.sleep)
    assert seen.seen is Seen.CONFIRMED
    assert seen.green_percent == pytest.approx(10)
    assert seen.seconds < 0.1


def test_observe_reports_traffic_that_never_moved() -> None:
    clock = Clock()
    seen = observe_split(Scripted(per_tick=(50, 0)), 10, 2, 5, clock, clock.sleep)
    assert seen.seen is Seen.MISMATCH
    assert seen.green_percent == 0
    assert clock.now >= 5


def test_observe_without_traffic_gives_up_after_the_idle_time() -> None:
    clock = Clock()
    seen = observe_split(Scripted(per_tick=(0, 0)), 10, 2, 30, clock, clock.sleep)
    assert seen.seen is Seen.NO_TRAFFIC
    assert clock.now < 3


def test_shift_raises_when_the_served_split_stays_off_target() -> None:
    clock = Clock()
    with pytest.raises(TrafficError, match=r"served 0\.0 % of \d+ requests to green"):
        shift(Scripted(per_tick=(50, 0)), 10, confirm_timeout=1, clock=clock, sleep=clock.sleep)


def test_nginx_file_round_trips_and_marks_empty_sides_down(tmp_path: Path) -> None:
    settings = NginxSettings(upstream_file=tmp_path / "up.conf", servers={
        "blue1": "127.0.0.1:8001", "green1": "127.0.0.1:8002"}, directives=["keepalive 16"])
    lb = NginxBalancer(settings, ["blue1"], ["green1"])
    text = lb.render(0)
    assert "server 127.0.0.1:8002 down;  # cutover:green1" in text
    assert "    keepalive 16;" in text
    settings.upstream_file.write_text(lb.render(30))
    assert lb.read() == Split(30.0, {"blue1": 7, "green1": 3})


def test_nginx_first_shift_writes_the_file_nginx_includes(tmp_path: Path) -> None:
    """Before the first shift there is no file (and nginx cannot start without it): the shift
    writes it; a sticky, routed file holds the maps and reads back what it routes."""
    settings = NginxSettings(upstream_file=tmp_path / "up.conf", servers={
        "blue1": "127.0.0.1:8001", "green1": "127.0.0.1:8002"},
        test_command=["true"], reload_command=["true"])
    lb = NginxBalancer(settings, ["blue1"], ["green1"], sticky_cookie="colour", match_header="X-Staff")
    result = shift(lb, 0, match=Match(header="X-Staff", value="1"), observe=False)
    assert result.before is None
    assert result.after == Split(0.0, {"blue1": 1, "green1": 0})
    text = settings.upstream_file.read_text()
    assert '"~^1$" app_green;  # cutover:match 1' in text  # a regex: exact, case included
    assert "green app_blue;  # cutover:sticky" in text  # green at 0 %: its cookie leads to blue
    assert lb.matching() == "1"
    shift(lb, 50, observe=False)
    assert lb.matching() is None
    assert "green app_green;  # cutover:sticky" in settings.upstream_file.read_text()


def test_nginx_directives_cannot_smuggle_config(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="one directive per entry"):
        NginxSettings(upstream_file=tmp_path / "up.conf", servers={"b": "127.0.0.1:1"},
                      directives=["keepalive 1; } server { listen 80"])


@pytest.mark.parametrize("line", ["server 6.6.6.6:80 weight=1000", "state /var/lib/nginx/up.state",
                                  "upstream other", "proxy_pass http://6.6.6.6"])
def test_nginx_directives_cannot_add_servers(tmp_path: Path, line: str) -> None:
    """A `server` among the directives would take traffic the read-back knows nothing of (with
    weight=1000, 99.9 % while Cutover reads green 50 %)."""
    with pytest.raises(ValueError, match="is not allowed here"):
        NginxSettings(upstream_file=tmp_path / "up.conf", servers={"b": "127.0.0.1:1"}, directives=[line])


def test_nginx_read_back_refuses_a_server_it_did_not_write(tmp_path: Path) -> None:
    settings = NginxSettings(upstream_file=tmp_path / "up.conf", servers={
        "blue1": "127.0.0.1:8001", "green1": "127.0.0.1:8002"})
    lb = NginxBalancer(settings, ["blue1"], ["green1"])
    text = lb.render(50).replace("}\n", "    server 6.6.6.6:80 weight=1000;\n}\n")
    settings.upstream_file.write_text(text)
    with pytest.raises(TrafficError, match="a server Cutover did not write"):
        lb.read()


class RecordingApi:
    """Answers `show servers state` from its own table of weights and servers in maintenance,
    and records every `set weight` and `set server ... state`."""

    def __init__(self, weights: dict[str, int], maint: set[str] | None = None) -> None:
        self.weights, self.maint = weights, set(maint or ())
        self.sets: list[str] = []
        self.states: list[str] = []

    def execute(self, command: str) -> str:
        if command == "show servers state app":
            rows = [f"3 app {n} {s} 127.0.0.1 2 {1 if s in self.maint else 0} {w}"
                    for n, (s, w) in enumerate(self.weights.items())]
            return "\n".join(["1", "# be_id be_name srv_id srv_name srv_addr ...", *rows])
        verb, _, rest = command.partition(" app/")
        server, _, value = rest.partition(" ")
        if verb == "set server":
            self.states.append(f"{server} {value}")
            (self.maint.add if value == "state maint" else self.maint.discard)(server)
            return ""
        assert verb == "set weight", command
        self.weights[server] = int(value)
        self.sets.append(server)
        assert any(self.weights.values()), f"every weight 0 after setting {server}: HAProxy answers 503"
        return ""


def recording_haproxy(tmp_path: Path, api: RecordingApi, *, sticky: bool = False) -> HAProxyBalancer:
    lb = HAProxyBalancer(HAProxySettings(socket=tmp_path / "s"), ["blue1", "blue2"], ["green1"],
                         sticky=sticky)
    lb.api = api  # type: ignore[assignment]
    return lb


@pytest.mark.parametrize(("start", "target", "first"), [
    ({"blue1": 9, "blue2": 9, "green1": 1}, 0, "green1"),  # a rollback: green loses weight first
    ({"blue1": 0, "blue2": 0, "green1": 1}, 0, "blue1"),  # from 100 %: blue back before green goes
    ({"blue1": 1, "blue2": 1, "green1": 0}, 100, "green1"),
])
def test_haproxy_weights_never_all_zero_and_rollbacks_drop_green_first(
        tmp_path: Path, start: dict[str, int], target: int, first: str) -> None:
    api = RecordingApi(dict(start))
    recording_haproxy(tmp_path, api).apply(target)
    assert api.sets[0] == first
    assert green_share(api.weights, ["green1"]) == target


@pytest.mark.parametrize("sticky", [True, False])
def test_haproxy_lifts_the_maintenance_a_sticky_stage_left_but_not_somebody_elses(
        tmp_path: Path, sticky: bool) -> None:
    """A sticky rollback leaves green at weight 0 in maintenance; the next shift, sticky or not
    (stickiness switched off since), takes it out. blue2, in maintenance with its weight, was
    taken out by an operator: it keeps its weight and stays out."""
    api = RecordingApi({"blue1": 1, "blue2": 1, "green1": 0}, maint={"green1", "blue2"})
    lb = recording_haproxy(tmp_path, api, sticky=sticky)
    lb.apply(50)
    assert api.maint == {"blue2"}
    assert api.states == ["green1 state ready"]
    assert lb.read().green_percent == 50
    lb.apply(0)
    assert api.maint == ({"green1", "blue2"} if sticky else {"blue2"})


class Broken(Scripted):
    """A balancer whose check fails (HAProxy reloaded without the cookie lines) and, when
    asked, whose match cannot be cleared (its ACL file is gone)."""

    def __init__(self, match_fails: bool = False) -> None:
        super().__init__()
        self.match_fails = match_fails

    def check(self) -> None:
        raise BadTrafficInput("traffic.sticky: backend 'app' keeps no client on server 'g'")

    def route_matching(self, match: Match | None) -> None:
        if self.match_fails:
            raise TrafficError("HAProxy refused `clear acl /etc/haproxy/m.acl`: Unknown ACL")


def test_a_shift_to_blue_goes_ahead_whatever_the_check_says() -> None:
    lb = Broken()
    lb.weights = {"b": 5, "g": 5}
    with pytest.raises(BadTrafficInput):  # any other share waits for a clean check
        shift(lb, 10, observe=False)
    result = shift(lb, 0, observe=False)
    assert lb.weights == {"b": 1, "g": 0}
    assert result.overlooked is not None
    assert "keeps no client" in result.overlooked


def test_a_match_that_cannot_be_cleared_still_leaves_green_at_0_and_says_so() -> None:
    lb = Broken(match_fails=True)
    lb.weights = {"b": 5, "g": 5}
    with pytest.raises(TrafficError, match="green's weights are at 0"):
        shift(lb, 0, observe=False)
    assert lb.weights == {"b": 1, "g": 0}
