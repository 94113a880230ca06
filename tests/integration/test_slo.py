"""SLO sources against the lab's real HAProxy stats, Prometheus scraping the apps and the apps'
health URLs; then `cutover watch` rolling a 10 % stage back on its own when green breaks."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from config import load_settings
from config.settings import Settings
from config.slo import PrometheusSource as PrometheusSettings
from config.slo import SloCheck, SloSource
from controller.cli import app
from controller.daemon.watch import HAProxyStats, build_sources
from controller.lab.lab import Lab
from controller.lab.load import HttpLoad
from controller.slo.haproxy_source import HAProxySource
from controller.slo.judge import CheckState, Verdict, judge
from controller.slo.probe_source import HttpProbeSource
from controller.slo.prometheus_source import PrometheusSource
from controller.slo.readings import Measurement
from controller.slo.sync_sources import DriftSource, LagSource
from controller.state.journal import Journal
from controller.traffic.haproxy import HAProxyBalancer, RuntimeApi
from controller.traffic.shift import shift
from sync import logical
from tests.syncfixtures import DbPair
from tests.trafficfixtures import set_fault, set_server_fault

runner = CliRunner()


def slo(**fields: Any) -> SloCheck:
    return SloCheck.model_validate({"name": "c", "max": 1e9, **fields})


def test_haproxy_source_measures_each_environment_from_counter_deltas(
        lab: Lab, hap: HAProxyBalancer) -> None:
    shift(hap, 50, observe=False)
    set_fault(lab, "green", error_ratio=0.5, latency_ms=50)
    source = HAProxySource(HAProxyStats(RuntimeApi(lab.state.haproxy_socket, None, 2.0)), "app",
                           {"blue": lab.state.servers_of("blue"), "green": lab.state.servers_of("green")})
    checks = {m: slo(name=m, source="haproxy", metric=m)
              for m in ("error_ratio", "latency_ms", "request_rate")}
    with HttpLoad(lab.state.frontend_url, rate=300) as load:
        first = source.measure(checks["error_ratio"])
        assert first.error is not None  # one reading is no delta
        since: dict[str, float] = {}
        for name, c in checks.items():
            source.measure(c)
            since[name] = time.monotonic()
        time.sleep(2)
        got: dict[str, Measurement] = {}
        until: dict[str, float] = {}
        for name, c in checks.items():
            got[name] = source.measure(c)
            until[name] = time.monotonic()
    source.close()
    # HAProxy's rtime is a sliding average of 1024 responses; decoded, 2 s of +50 ms show whole.
    latency = got["latency_ms"]
    samples = load.report().samples

    def answered_by_green(check: str) -> int:
        """What the load saw green answer between the check's two readings: the source must
        count the same requests, whatever rate a busy machine managed to send."""
        return sum(1 for r in samples if r.env == "green" and r.status
                   and since[check] <= r.at + r.latency <= until[check])

    errors = got["error_ratio"]
    assert answered_by_green("error_ratio") > 50, "the load generator starved: too few requests"
    assert errors.green.value == pytest.approx(0.5, abs=0.15)
    assert errors.blue.value == 0
    assert errors.green.samples == pytest.approx(answered_by_green("error_ratio"), rel=0.1, abs=5)
    assert latency.green.value is not None
    assert latency.blue.value is not None
    assert latency.green.value >= latency.blue.value + 40, latency
    assert latency.green.margin < 10
    rate = got["request_rate"]
    seconds = until["request_rate"] - since["request_rate"]
    assert rate.green.value == pytest.approx(answered_by_green("request_rate") / seconds, rel=0.15)


def test_prometheus_source_fills_env_and_treats_empty_and_nan_as_no_data(
        lab: Lab, hap: HAProxyBalancer) -> None:
    settings = PrometheusSettings.model_validate({"url": lab.state.prometheus_url})
    source = PrometheusSource(settings)
    shift(hap, 50, observe=False)
    set_fault(lab, "green", error_ratio=0.5)
    ratio = slo(source="prometheus", query=(
        # `or vector(0)`: no 5xx series at all (blue) is zero errors, not an empty result.
        '(sum(rate(lab_app_requests_total{env="{env}",code=~"5.."}[5s])) or vector(0))'
        ' / sum(rate(lab_app_requests_total{env="{env}"}[5s]))'))
    counting = SloCheck.model_validate({
        **ratio.model_dump(), "metric": "error_ratio",
        "samples_query": 'sum(increase(lab_app_requests_total{env="{env}"}[5s]))'})
    with HttpLoad(lab.state.frontend_url, rate=300):
        # 300 requests a second, half to green: once Prometheus has scraped 5 s of them (a busy
        # host scrapes late), hundreds are behind each ratio, half failed.
        deadline = time.monotonic() + 30
        while True:
            got = source.measure(ratio)
            counted = source.measure(counting)
            assert got.error is None, got.error
            g = got.green.value
            if g is not None and abs(g - 0.5) < 0.15 and (counted.green.samples or 0) > 200:
                break
            assert time.monotonic() < deadline, \
                f"Prometheus never saw 5 s of green's errors: {got} {counted}"
            time.sleep(1)
    assert got.blue.value == 0
    assert counted.green.samples is not None
    assert counted.green.errors == pytest.approx(counted.green.samples / 2, rel=0.35)
    assert counted.blue.errors == 0
    empty = source.measure(slo(source="prometheus", query='lab_no_such_metric{env="{env}"}'))
    assert (empty.error, empty.green.value, empty.blue.value) == (None, None, None)
    nan = source.measure(slo(source="prometheus", query="0/0"))
    assert (nan.error, nan.green.value) == (None, None)
    bad = source.measure(slo(source="prometheus", query="sum(rate("))
    assert bad.error is not None
    assert "refused the query" in bad.error
    many = source.measure(slo(source="prometheus", query="lab_app_requests_total"))
    assert many.error is not None
    assert "aggregate it" in many.error
    down = PrometheusSource(PrometheusSettings.model_validate({"url": "http://127.0.0.1:1"}))
    assert "unreachable" in (down.measure(ratio).error or "")
    for s in (source, down):
        s.close()


def test_http_probe_reads_latency_and_fails_on_an_error_status(lab: Lab, hap: HAProxyBalancer) -> None:
    green1 = lab.state.servers_of("green")[0]
    probe = HttpProbeSource({env: [f"{lab.state.app_url(s)}/api/health" for s in lab.state.servers_of(env)]
                             for env in ("blue", "green")})
    check = slo(source="http")
    healthy = probe.measure(check)
    assert healthy.green.failed is None
    assert healthy.green.value is not None
    assert 0 < healthy.green.value < 2000
    set_fault(lab, "green", error_ratio=1.0)
    broken = probe.measure(check)
    assert broken.green.failed is not None
    assert "HTTP 500" in broken.green.failed
    assert broken.blue.failed is None
    set_fault(lab, "green")
    green2 = lab.state.servers_of("green")[1]
    set_server_fault(lab, green2, hang=True)
    started = time.monotonic()
    hung = probe.measure(slo(source="http", interval=1.0))
    assert time.monotonic() - started < 1.0  # within the check's interval, not the 2 s timeout
    assert hung.green.failed is not None
    assert f"{lab.state.app_url(green2)}/api/health: no answer" in hung.green.failed
    assert lab.state.app_url(green1) not in hung.green.failed
    probe.close()


@pytest.mark.parametrize("fault", [{"down_for": 8.0}, {"hang": True}])
def test_one_dead_or_hung_green_server_of_two_is_seen(
        lab: Lab, hap: HAProxyBalancer, fault: dict[str, Any]) -> None:
    """Refused connections and requests never answered are green's failures, named by server,
    although neither is a 5xx answer of a server."""
    shift(hap, 50, observe=False)
    green2 = lab.state.servers_of("green")[1]
    source = HAProxySource(HAProxyStats(RuntimeApi(lab.state.haproxy_socket, None, 2.0)), "app",
                           {"blue": lab.state.servers_of("blue"), "green": lab.state.servers_of("green")})
    errors = slo(source="haproxy", metric="error_ratio", max=0.01, failure_limit=3, interval=0.5)
    state, verdicts = CheckState(), list[Verdict]()
    # Many clients, as in production: the ones stuck on a hung server do not stop the rest.
    with HttpLoad(lab.state.frontend_url, rate=200, connections=256, timeout=10):
        source.measure(errors)
        time.sleep(1)
        assert judge(errors, source.measure(errors), state).outcome.value == "pass"
        set_server_fault(lab, green2, **fault)
        faulted = time.monotonic()
        while time.monotonic() - faulted < 6 and not (verdicts and verdicts[-1].breach):
            time.sleep(0.5)
            verdicts.append(judge(errors, source.measure(errors), state))
        detected = time.monotonic() - faulted
    back = time.monotonic() + 10
    while "down_for" in fault and time.monotonic() < back:  # let the dead server come back
        try:
            httpx.get(f"{lab.state.app_url(green2)}/api/health", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.2)
    set_server_fault(lab, green2)
    source.close()
    assert verdicts[-1].breach, verdicts
    assert detected < 4.0
    if "hang" in fault:
        assert any(green2 in v.reason for v in verdicts), [v.reason for v in verdicts]


def lab_settings(lab: Lab, tmp_path: Path, **over: Any) -> tuple[Settings, Path]:
    text = lab.state.config_file.read_text().replace(
        'path = "cutover-state.db"', f'path = "{tmp_path / "state.db"}"')
    text = text.replace('socket = "haproxy.sock"', f'socket = "{lab.state.haproxy_socket}"')
    config = tmp_path / "cutover.toml"
    config.write_text(text)
    return load_settings(config), config


class Webhook(ThreadingHTTPServer):
    """A chat webhook receiver: keeps every JSON body posted to it."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        super().__init__(("127.0.0.1", 0), _Receiver)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/T0KEN-in-the-url"


class _Receiver(BaseHTTPRequestHandler):
    server: Webhook

    def do_POST(self) -> None:
        self.server.posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize(("fault", "breaching"), [
    ({"error_ratio": 0.5}, {"5xx-ratio", "app-5xx-ratio", "health"}),
    ({"latency_ms": 200}, {"latency"}),
])
@pytest.mark.check
def test_watch_rolls_back_a_10_percent_stage_when_green_breaks(
        lab: Lab, hap: HAProxyBalancer, tmp_path: Path, fault: dict[str, float],
        breaching: set[str], monkeypatch: pytest.MonkeyPatch) -> None:
    webhook = Webhook()
    monkeypatch.setenv("CUTOVER_NOTIFY__WEBHOOK", webhook.url)
    settings, config = lab_settings(lab, tmp_path)
    assert {c.source for c in settings.slo} >= {SloSource.HAPROXY, SloSource.PROMETHEUS, SloSource.HTTP}
    # Prometheus's 5 s windows still hold what an earlier test's faults did: let them pass.
    sources = build_sources(settings)
    prometheus = sources[SloSource.PROMETHEUS]
    app_errors = next(c for c in settings.slo if c.source is SloSource.PROMETHEUS)
    quiet_by = time.monotonic() + 20
    while (prometheus.measure(app_errors).green.value or 0) > 0 and time.monotonic() < quiet_by:
        time.sleep(0.5)
    for source in sources.values():
        source.close()
    with HttpLoad(lab.state.frontend_url, rate=500) as load:
        shift(hap, 10)
        time.sleep(1)
        set_fault(lab, "green", **fault)
        faulted = time.monotonic()
        result = runner.invoke(app, ["watch", "--duration", "60", "--json", "--config", str(config)])
        seconds = time.monotonic() - faulted
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert data["breach"]["check"] in breaching
    assert data["breach"]["breach"] is True
    assert data["rollback"]["after"]["green_percent"] == 0
    assert hap.read().green_percent == 0
    assert seconds < 15, f"rollback took {seconds:.1f}s"
    assert load.report().by_env()["green"] > 0
    journal = Journal(tmp_path / "state.db")
    kinds = [e.kind for e in journal.events()]
    assert kinds == ["breach", "rollback"]
    recorded = journal.events("rollback")[0].data
    journal.close()
    assert recorded["verdict"]["check"] == data["breach"]["check"]
    assert recorded["verdict"]["green"] is not None
    assert recorded["result"]["after"]["green_percent"] == 0
    webhook.shutdown()
    assert [p["event"] for p in webhook.posts] == ["breach", "rollback"]
    assert webhook.posts[1]["text"].startswith("[cutover lab] rolled traffic back to blue after "
                                               + data["breach"]["check"])
    assert "T0KEN" not in result.output


def test_watch_dry_run_reports_the_breach_but_changes_nothing(
        lab: Lab, hap: HAProxyBalancer, tmp_path: Path) -> None:
    _, config = lab_settings(lab, tmp_path)
    with HttpLoad(lab.state.frontend_url, rate=300):
        shift(hap, 50)
        set_fault(lab, "green", error_ratio=1.0)
        result = runner.invoke(app, ["watch", "--dry-run", "--duration", "30", "--config", str(config)])
    assert result.exit_code == 1, result.output
    assert "breach" in result.output
    assert "dry run: nothing changed" in result.output
    assert hap.read().green_percent == 50
    assert not (tmp_path / "state.db").exists()


def test_watch_without_checks_or_with_a_missing_source_is_a_usage_error(
        lab: Lab, tmp_path: Path) -> None:
    config = tmp_path / "bare.toml"
    config.write_text('[traffic]\ndriver = "command"\n')
    result = runner.invoke(app, ["watch", "--config", str(config)])
    assert result.exit_code == 2
    assert "slo" in result.output
    assert "watching" not in result.output  # refused before it says what it would watch
    settings = Settings.model_validate({"slo": [{"name": "x", "source": "haproxy",
                                                  "metric": "error_ratio", "max": 0.1}]})
    with pytest.raises(Exception, match="traffic"):
        build_sources(settings)


def test_lag_and_drift_sources_read_the_sync(pair: DbPair) -> None:
    with pair.blue() as b:
        b.execute("CREATE TABLE t (id int PRIMARY KEY, v text);"
                  "INSERT INTO t SELECT i, 'v' FROM generate_series(1, 10000) i")
    settings = pair.settings()
    lag_check = slo(name="lag", source="lag", interval=1.0)
    drift_check = slo(name="drift", source="drift", interval=30.0)
    not_yet = LagSource(settings).measure(lag_check)
    assert not_yet.error is not None
    assert "lag not judged: no replication either way" in not_yet.error
    logical.start(settings)
    pair.wait_caught_up()
    pair.wait_caught_up()  # the first beat's lag includes the apply worker's start
    lag = LagSource(settings).measure(lag_check)
    assert lag.error is None
    assert lag.green.value is not None
    assert 0 <= lag.green.value < 2
    assert DriftSource(settings).measure(drift_check).green.value == 0
    with pair.green() as g:
        g.execute("ALTER SUBSCRIPTION cutover DISABLE")
        g.execute("DELETE FROM t WHERE id <= 20")  # 0.2 % lost on green
    drift = DriftSource(settings).measure(drift_check)
    assert drift.green.value == pytest.approx(0.002)
    verdict = judge(slo(name="drift", source="drift", max=0.001, failure_limit=1), drift, CheckState())
    assert verdict.breach
    time.sleep(1.5)  # the apply is off: the last applied beat only ages
    stalled = LagSource(settings).measure(lag_check)
    assert stalled.green.value is not None
    assert stalled.green.value > 0.4
