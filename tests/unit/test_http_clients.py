"""Cutover's HTTP clients (the webhook, URL hooks, the http traffic driver, the Prometheus and
probe sources) against httpx.MockTransport: what each sends, and what each makes of failures
and malformed answers, with no server. The real servers' side is in tests/integration."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from config.operations import Hook, HookPoint, NotifyEvent, NotifySettings
from config.slo import PrometheusSource as PrometheusSettings
from config.slo import SloCheck
from config.traffic import HttpDriverSettings
from controller.daemon.hooks import run_hooks
from controller.daemon.notify import Notifier
from controller.daemon.phases import Observations, Phase, State, decide
from controller.daemon.plan import Mode, Plan, Stage
from controller.daemon.record import Recorder as DecisionRecorder
from controller.slo.prometheus_source import PrometheusSource
from controller.state.journal import Journal
from controller.traffic.balancer import BadTrafficInput, TrafficError
from controller.traffic.httpapi import HttpBalancer

Handler = Callable[[httpx.Request], httpx.Response]
WEBHOOK = "https://hooks.example.com/services/T0/B0/very-secret-token"


class Recorder:
    """A MockTransport that answers with `handler` and keeps every request."""

    def __init__(self, handler: Handler) -> None:
        self.requests: list[httpx.Request] = []

        def record(request: httpx.Request) -> httpx.Response:
            self.requests.append(request)
            return handler(request)
        self.transport = httpx.MockTransport(record)


def refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


# -- the webhook ---------------------------------------------------------------------------

def test_a_notification_is_slack_text_plus_the_event_and_its_data() -> None:
    hook = Recorder(lambda r: httpx.Response(200))
    notifier = Notifier(NotifySettings(webhook=SecretStr(WEBHOOK)), "records-fhir", hook.transport)
    assert notifier.send(NotifyEvent.ROLLBACK, "rolled back", {"stage": 1})
    (request,) = hook.requests
    assert str(request.url) == WEBHOOK
    assert json.loads(request.content) == {"text": "[cutover records-fhir] rolled back",
                                           "event": "rollback", "data": {"stage": 1}}


def test_an_event_not_subscribed_to_is_not_sent() -> None:
    hook = Recorder(lambda r: httpx.Response(200))
    settings = NotifySettings(webhook=SecretStr(WEBHOOK), events=[NotifyEvent.ROLLBACK])
    assert not Notifier(settings, "s", hook.transport).send(NotifyEvent.PHASE, "x", {})
    assert hook.requests == []


def test_a_stage_reaching_its_gate_is_notified_once_with_what_it_waits_for(tmp_path: Path) -> None:
    hook = Recorder(lambda r: httpx.Response(200))
    plan = Plan(Mode.SHARED, (Stage(10, 1.0, gate="promote"), Stage(100, 1.0)))
    recorder = DecisionRecorder(Notifier(NotifySettings(webhook=SecretStr(WEBHOOK)), "s", hook.transport),
                                lambda _: None)
    store = Journal(tmp_path / "state.db")
    state = State(phase=Phase.SHIFTING, applied=True, bake_seconds=1.0)
    for _ in range(3):  # reached, then waiting: one notification
        obs = Observations(elapsed=1.0)
        d = decide(state, obs, plan)
        recorder.record(store, state, d, obs)
        state = d.state
    store.close()
    (request,) = hook.requests
    body = json.loads(request.content)
    assert body["event"] == "gate"
    assert "waiting at its gate for `cutover promote`" in body["text"]
    assert body["data"]["stage"] == 1


@pytest.mark.parametrize("handler", [lambda r: httpx.Response(500, text="boom"), refused],
                         ids=["HTTP 500", "refused"])
def test_a_failed_notification_is_logged_without_the_webhook_url(
        handler: Handler, caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier(NotifySettings(webhook=SecretStr(WEBHOOK)), "s", Recorder(handler).transport)
    with caplog.at_level(logging.DEBUG):
        assert not notifier.send(NotifyEvent.BREACH, "breach", {})
    assert "notification breach" in caplog.text
    assert "very-secret-token" not in caplog.text
    assert "hooks.example.com" not in caplog.text


# -- URL hooks -----------------------------------------------------------------------------

def url_hook(**fields: Any) -> Hook:
    return Hook.model_validate({"at": "before_switch", "url": "https://ci.example.com/gate", **fields})


def test_a_url_hook_posts_the_phase_as_json() -> None:
    gate = Recorder(lambda r: httpx.Response(204))
    (outcome,) = run_hooks([url_hook()], HookPoint.BEFORE_SWITCH, {"phase": "streaming"},
                           gate.transport)
    assert outcome.ok
    assert json.loads(gate.requests[0].content) == {"at": "before_switch", "phase": "streaming"}


@pytest.mark.parametrize(("handler", "detail"), [(lambda r: httpx.Response(503), "HTTP 503"),
                                                 (refused, "ConnectError")])
def test_a_url_hook_that_fails_says_how_and_stops_the_point(handler: Handler, detail: str) -> None:
    gate = Recorder(handler)
    outcomes = run_hooks([url_hook(), url_hook(name="second")], HookPoint.BEFORE_SWITCH, {},
                         gate.transport)
    assert [(o.ok, o.detail) for o in outcomes] == [(False, detail)]  # "hold": the second never ran


def test_a_url_hook_with_get_sends_no_body() -> None:
    gate = Recorder(lambda r: httpx.Response(200))
    run_hooks([url_hook(method="GET")], HookPoint.BEFORE_SWITCH, {"phase": "x"}, gate.transport)
    assert gate.requests[0].method == "GET"
    assert gate.requests[0].content == b""


# -- the http traffic driver -----------------------------------------------------------------

def control_plane(handler: Handler, **fields: Any) -> tuple[HttpBalancer, Recorder]:
    recorder = Recorder(handler)
    settings = HttpDriverSettings.model_validate({
        "url": "https://lb.example.com/weights", "token": "t0ken", "timeout": "1s", **fields})
    return HttpBalancer(settings, recorder.transport), recorder


def test_apply_sends_both_weights_with_the_token() -> None:
    lb, plane = control_plane(lambda r: httpx.Response(200))
    lb.apply(10)
    (request,) = plane.requests
    assert (request.method, json.loads(request.content)) == ("POST", {"blue": 90, "green": 10})
    assert request.headers["Authorization"] == "Bearer t0ken"


def test_a_readback_elsewhere_gets_no_token() -> None:
    lb, plane = control_plane(lambda r: httpx.Response(200, json={"blue": 50, "green": 50}),
                              readback_url="https://status.example.net/weights")
    split = lb.read()
    assert split is not None
    assert split.green_percent == 50
    assert "Authorization" not in plane.requests[0].headers


def test_a_refused_token_is_bad_input_naming_the_variable() -> None:
    lb, _ = control_plane(lambda r: httpx.Response(403))
    with pytest.raises(BadTrafficInput, match="CUTOVER_TRAFFIC__HTTP__TOKEN"):
        lb.apply(10)


@pytest.mark.parametrize("answer", [httpx.Response(200, text="<html>"), httpx.Response(200, json=[1]),
                                    httpx.Response(200, json={"green": "lots"})],
                         ids=["not JSON", "a list", "not a number"])
def test_a_malformed_readback_is_a_traffic_error_quoting_it(answer: httpx.Response) -> None:
    lb, _ = control_plane(lambda r: answer, readback_url="https://lb.example.com/weights")
    with pytest.raises(TrafficError, match="answered"):
        lb.read()


# -- the Prometheus source -----------------------------------------------------------------

def prometheus(answer: Callable[[str], Any]) -> PrometheusSource:
    """answer: the query -> the JSON body Prometheus would give."""
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=answer(request.url.params["query"]))
    return PrometheusSource(PrometheusSettings.model_validate({"url": "http://prometheus.example.com:9090"}),
                            httpx.MockTransport(handler))


def vector(*values: str) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector",
                                          "result": [{"metric": {}, "value": [0, v]} for v in values]}}


CHECK = SloCheck.model_validate({"name": "errors", "source": "prometheus", "max": 0.01,
                                 "query": 'rate(errors{env="{env}"}[1m])'})


def test_each_environment_gets_its_own_query() -> None:
    source = prometheus(lambda q: vector("0.5" if 'env="green"' in q else "0.25"))
    m = source.measure(CHECK)
    assert (m.green.value, m.blue.value, m.error) == (0.5, 0.25, None)


@pytest.mark.parametrize("body", [vector(), vector("NaN")], ids=["empty", "NaN"])
def test_no_series_and_nan_are_no_data_not_a_value(body: dict[str, Any]) -> None:
    m = prometheus(lambda q: body).measure(CHECK)
    assert (m.green.value, m.blue.value, m.error) == (None, None, None)


@pytest.mark.parametrize(("body", "message"), [
    (vector("1", "2"), "2 series"),
    ({"status": "error", "errorType": "bad_data", "error": "parse error"}, "parse error"),
    ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "matrix"),
    ([1, 2], "malformed"),
    ({"status": "success", "data": {"resultType": "vector", "result": [{"value": []}]}}, "malformed"),
    ({"status": "success", "data": {"resultType": "vector", "result": [{"value": [0, "x"]}]}},
     "malformed"),
], ids=["two series", "refused", "matrix", "a list", "no value", "not a number"])
def test_a_query_prometheus_cannot_answer_as_one_number_is_an_error_not_a_crash(
        body: Any, message: str) -> None:
    m = prometheus(lambda q: body).measure(CHECK)
    assert m.error is not None
    assert message in m.error
    assert m.green.value is None


def test_an_unreachable_prometheus_is_an_error_naming_it() -> None:
    source = PrometheusSource(PrometheusSettings.model_validate({"url": "http://prometheus.example.com:9090"}),
                              httpx.MockTransport(refused))
    m = source.measure(CHECK)
    assert m.error is not None
    assert "prometheus.example.com" in m.error
    assert m.green.value is None
