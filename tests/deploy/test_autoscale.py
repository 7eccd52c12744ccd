"""The autoscaler without Docker: the policy as stack.json holds it, the HPA-like decision, the
metrics arithmetic, and the loop against a recording scaler (what it logs, what it holds)."""

from __future__ import annotations

import io
import json
import re
import socket
import time
from pathlib import Path

import httpx
import pytest

from modelport.deploy.autoscale import (
    LABEL,
    Autoscale,
    Autoscaler,
    BackendStats,
    Decision,
    GatewayMetrics,
    Scrape,
    SwarmScaler,
    command,
    decide,
    describe,
    label_text,
    load_policies,
    observe,
    parse_metrics,
    policies,
    scale_target,
    status_of,
)
from modelport.errors import ModelportError
from tests.helpers import run_in_process

POLICY = Autoscale.from_json({"min": 1, "max": 8, "target": {"in_flight": 4}, "down_window": 60})


def run(policy: Autoscale, current: int, loads: list[tuple[float, float | None]]) -> list[Decision]:
    """The decisions for ``loads`` (time, observed), each applied before the next, as the loop does."""
    history: list[tuple[float, int]] = []
    decisions = []
    for now, observed in loads:
        d = decide(policy, current, observed, history, now)
        if d.recommendation is not None:
            history.append((now, d.recommendation))
        decisions.append(d)
        current = d.desired
    return decisions


# -- the decision ----------------------------------------------------------------------------------

def test_load_scales_up_at_once_to_ceil_of_the_load_over_the_target() -> None:
    d = decide(POLICY, 1, 32.0, [], 0.0)
    assert (d.desired, d.kind) == (8, "up")
    assert d.reason == "in_flight 32/replica, target 4: 8 replica(s)"
    assert decide(POLICY, 2, 13.0, [], 0.0).desired == 4  # 13 / 4 = 3.25: ceil


def test_the_count_is_clamped_to_max_and_says_so() -> None:
    d = decide(POLICY, 4, 100.0, [], 0.0)
    assert (d.desired, d.recommendation) == (8, 8)
    assert "25 replica(s), clamped to max 8" in d.reason
    assert decide(POLICY, 8, 100.0, [], 0.0).kind == "steady"  # at max: nothing more to do


def test_no_change_within_the_tolerance() -> None:
    for observed in (14.5, 16.0, 17.6):  # 4 replicas: 3.6 to 4.4 per replica is within 10 % of 4
        d = decide(POLICY, 4, observed, [], 0.0)
        assert (d.desired, d.kind) == (4, "steady"), d
        assert "within 10%" in d.reason
    assert decide(POLICY, 4, 18.0, [], 0.0).desired == 5  # 4.5 per replica: out of it
    assert decide(POLICY, 4, 12.0, [(0.0, 4)], 0.0).kind == "held"  # 3 per replica: down, but the window holds


def test_a_wavering_load_does_not_flap() -> None:
    # Around 4 replicas' worth, then dips: the count goes up once and stays within the down-window.
    loads = [(t, 16.0 + (3.0 if t % 4 else -3.0)) for t in range(0, 40, 2)]
    counts = [d.desired for d in run(POLICY, 4, loads)]
    assert counts == [4] + [5] * (len(loads) - 1), counts


def test_scale_down_waits_for_the_down_window_then_goes_to_min() -> None:
    loads = [(float(t), 32.0) for t in range(0, 10)] + [(float(t), 0.0) for t in range(10, 80)]
    decisions = run(POLICY, 1, loads)
    by_time = {t: d for (t, _), d in zip(loads, decisions, strict=True)}
    assert by_time[0].desired == 8
    # The last recommendation of 8 was at t=9: held while it is in the 60 s window.
    assert all(by_time[t].desired == 8 and by_time[t].kind == "held" for t in range(10, 70)), by_time[69]
    assert "held at 8 by the 60s down-window" in by_time[10].reason
    assert (by_time[70].desired, by_time[70].kind) == (1, "down")
    assert all(d.desired == 1 for t, d in by_time.items() if t >= 70)


def test_the_down_window_steps_down_through_its_highest_recommendations() -> None:
    policy = Autoscale.from_json({"min": 1, "max": 8, "target": {"in_flight": 4}, "down_window": 10})
    loads = [(0.0, 32.0), (5.0, 16.0), (20.0, 0.0)]
    # t=5: wants 4, held at 8 (t=0 in window); t=20: both out of it, straight to min.
    assert [d.desired for d in run(policy, 1, loads)] == [8, 8, 1]
    loads = [(0.0, 32.0), (5.0, 16.0), (12.0, 0.0), (16.0, 0.0)]
    assert [d.desired for d in run(policy, 1, loads)] == [8, 8, 4, 1]  # t=12: the 4 of t=5 is the highest


def test_an_up_window_ignores_a_short_spike() -> None:
    policy = Autoscale.from_json({"min": 1, "max": 8, "target": {"in_flight": 4}, "up_window": 5, "down_window": 0})
    loads = [(0.0, 4.0), (2.0, 32.0), (4.0, 4.0), (6.0, 32.0), (8.0, 32.0), (12.0, 32.0)]
    # The spike at t=2 is held (t=0 recommended 1); from t=8..12 every recommendation in the window is 8.
    counts = [d.desired for d in run(policy, 1, loads)]
    assert counts[:4] == [1, 1, 1, 1] and counts[-1] == 8, counts


def test_min_is_respected_without_load() -> None:
    policy = Autoscale.from_json({"min": 2, "max": 4, "target": {"rps": 10}, "down_window": 0})
    d = decide(policy, 4, 0.0, [], 0.0)
    assert (d.desired, d.kind) == (2, "down") and "clamped to min 2" in d.reason


def test_a_count_outside_the_bounds_is_brought_back_even_without_metrics() -> None:
    assert (decide(POLICY, 12, None, [], 0.0).desired, decide(POLICY, 12, None, [], 0.0).kind) == (8, "bounds")
    assert decide(POLICY, 0, 50.0, [], 0.0).desired == 1
    held = decide(POLICY, 3, None, [], 0.0)
    assert (held.desired, held.kind, held.recommendation) == (3, "hold", None)


# -- the policy ---------------------------------------------------------------------------------

def test_a_policy_round_trips_and_has_hpa_like_defaults() -> None:
    p = Autoscale.from_json({"min": 1, "max": 16, "target": {"rps": 2.5}})
    assert (p.metric, p.target, p.up_window, p.down_window, p.tolerance) == ("rps", 2.5, 0.0, 60.0, 0.1)
    assert Autoscale.from_json(p.to_json()) == p


@pytest.mark.parametrize(("data", "message"), [
    ([1, 8], "lin: autoscale must be an object"),
    ({"min": 1, "max": 8}, "lin: autoscale: target is missing"),
    ({"min": 1, "max": 8, "target": {"in_flight": 4}, "cooldown": 5}, "unknown field(s) cooldown (known: min, max"),
    ({"min": 0, "max": 8, "target": {"in_flight": 4}}, "lin: autoscale.min 0: a whole number of replicas from 1 to 16"),
    ({"min": 1, "max": 17, "target": {"in_flight": 4}}, "lin: autoscale.max 17: a whole number of replicas from 1 to 16"),
    ({"min": 1.5, "max": 8, "target": {"in_flight": 4}}, "autoscale.min 1.5"),
    ({"min": True, "max": 8, "target": {"in_flight": 4}}, "autoscale.min true"),
    ({"min": 5, "max": 2, "target": {"in_flight": 4}}, "lin: autoscale: min 5 is above max 2"),
    ({"min": 1, "max": 8, "target": {"cpu": 50}}, 'autoscale.target {"cpu": 50}: one metric and its value per replica'),
    ({"min": 1, "max": 8, "target": {"in_flight": 4, "rps": 2}}, "one metric and its value per replica"),
    ({"min": 1, "max": 8, "target": 4}, "autoscale.target 4: one metric"),
    ({"min": 1, "max": 8, "target": {"rps": 0}}, "autoscale.target.rps 0: a number above 0, per replica"),
    ({"min": 1, "max": 8, "target": {"rps": "5"}}, 'autoscale.target.rps "5"'),
    ({"min": 1, "max": 8, "target": {"in_flight": 4}, "down_window": -1}, "autoscale.down_window -1: seconds, 0 or more"),
    ({"min": 1, "max": 8, "target": {"in_flight": 4}, "tolerance": 10}, "autoscale.tolerance 10: a fraction from 0 to below 1"),
])
def test_bad_policies_are_refused_with_what_is_wrong(data: object, message: str) -> None:
    with pytest.raises(ModelportError) as e:
        Autoscale.from_json(data, "lin")
    assert message in str(e.value)


def test_policies_come_from_a_stack_json_or_an_object(tmp_path: Path) -> None:
    stack = {"name": "demo", "models": [{"name": "lin", "autoscale": {"min": 1, "max": 4, "target": {"in_flight": 2}}},
                                        {"name": "forest"}]}
    assert policies(stack) == {"lin": Autoscale(1, 4, "in_flight", 2.0)}
    path = tmp_path / "stack.json"
    path.write_text(json.dumps(stack))
    assert load_policies(str(path)) == load_policies('{"lin": {"min": 1, "max": 4, "target": {"in_flight": 2}}}')
    with pytest.raises(ModelportError, match="No model has an autoscale policy"):
        policies({"name": "demo", "models": [{"name": "forest"}]})
    with pytest.raises(ModelportError, match="neither JSON nor a file"):
        load_policies(str(tmp_path / "missing.json"))
    with pytest.raises(ModelportError, match="not valid JSON"):
        load_policies("{lin: 1}")


def test_the_stack_json_of_a_model_keeps_its_policy() -> None:
    from modelport.deploy.stack import ModelService

    data = {"name": "lin", "slots": {"blue": {"version": 1, "digest": "d", "image": "i", "context": "c"}},
            "serving": "blue", "autoscale": {"min": 1, "max": 4, "target": {"rps": 5}}}
    assert ModelService.from_json(data).autoscale == data["autoscale"]


def test_the_autoscaler_service_command_carries_the_checked_policies() -> None:
    argv = command("demo", {"lin": {"min": 1, "max": 4, "target": {"in_flight": 2}}, "forest": None})
    assert argv == ["stack", "autoscale", "--stack", "demo", "--gateway", "http://gateway:8080", "--every", "2",
                    "--policy", '{"lin":{"min":1,"max":4,"target":{"in_flight":2.0},"up_window":0.0,'
                    '"down_window":60.0,"tolerance":0.1}}']
    assert load_policies(argv[-1]) == {"lin": Autoscale(1, 4, "in_flight", 2.0)}
    assert command("demo", {"lin": None}) is None
    with pytest.raises(ModelportError, match="lin: autoscale.max 40"):
        command("demo", {"lin": {"min": 1, "max": 40, "target": {"in_flight": 2}}})


def test_stack_scale_takes_a_count_or_a_range_with_a_target() -> None:
    assert scale_target("3") == 3
    policy = scale_target("1:3", in_flight=4, down_window=10)
    assert policy == {"min": 1, "max": 3, "target": {"in_flight": 4.0}, "up_window": 0.0, "down_window": 10.0,
                      "tolerance": 0.1}
    assert Autoscale.from_json(policy).summary() == "1-3, in_flight 4/replica, down 10s"
    assert Autoscale.from_json(scale_target("2:8", rps=20, up_window=5, down_window=0)).summary() == \
        "2-8, rps 20/replica, up 5s"
    for text, options, message in [
            ("1:3", {}, "give one target per replica, --in-flight N"),
            ("1:3", {"in_flight": 4, "rps": 5}, "give one target per replica"),
            ("3", {"down_window": 5}, "--down-window go with MIN:MAX"),
            ("a:3", {"in_flight": 4}, "Invalid replica range 'a:3'"),
            ("three", {}, "Invalid replica count 'three'"),
            ("3:1", {"in_flight": 4}, "min 3 is above max 1"),
            ("1:3", {"in_flight": 4, "tolerance": 2}, "autoscale.tolerance 2")]:
        with pytest.raises(ModelportError, match=re.escape(message)):
            scale_target(text, **options)


def test_the_command_refuses_a_bad_policy_before_it_needs_docker() -> None:
    out = run_in_process("stack", "autoscale", "--stack", "demo", "--gateway", "http://gateway:8080",
                         "--policy", '{"lin": {"min": 3, "max": 2, "target": {"in_flight": 4}}}', check=False)
    assert out.returncode == 1
    assert "lin: autoscale: min 3 is above max 2" in out.stderr


# -- the metrics ---------------------------------------------------------------------------------

EXPORT = """# HELP haproxy_backend_current_sessions Current number of active sessions.
# TYPE haproxy_backend_current_sessions gauge
haproxy_backend_current_sessions{proxy="lin-blue"} 7
haproxy_backend_current_sessions{proxy="lin-green"} 0
# HELP haproxy_backend_http_requests_total Total number of HTTP requests received.
# TYPE haproxy_backend_http_requests_total counter
haproxy_backend_http_requests_total{proxy="lin-blue"} 120
haproxy_backend_http_requests_total{proxy="lin-green"} 3
haproxy_server_current_sessions{proxy="lin-blue",server="r1"} 7
"""


def test_the_exporters_text_gives_each_backends_sessions_and_requests() -> None:
    assert parse_metrics(EXPORT) == {"lin-blue": BackendStats(7, 120), "lin-green": BackendStats(0, 3)}


def test_in_flight_is_the_sessions_now_and_rps_the_rate_between_scrapes() -> None:
    before = Scrape(10.0, {"lin-blue": BackendStats(2, 100)})
    now = Scrape(12.0, {"lin-blue": BackendStats(7, 150)})
    assert observe("in_flight", "lin-blue", now, None) == 7
    assert observe("rps", "lin-blue", now, before) == 25.0
    assert observe("rps", "lin-blue", now, None) is None  # the first scrape: no rate yet
    assert observe("rps", "lin-blue", before, now) is None  # a counter reset (the proxy restarted)
    assert observe("in_flight", "lin-green", now, before) is None  # no such backend
    other = Scrape(12.0, {"lin-blue": BackendStats(7, 150)}, frozenset({"10.0.0.2", "10.0.0.3"}))
    assert observe("rps", "lin-blue", other, before) is None  # another set of gateways: their sums differ


def test_every_address_of_the_gateways_name_is_read_and_summed(monkeypatch: pytest.MonkeyPatch) -> None:
    exports = {"10.0.0.2": EXPORT, "10.0.0.3": EXPORT.replace("} 7", "} 1")}
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port, **_: [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in exports] if host == "tasks.gateway" else [])
    seen = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, text=exports[request.url.host])

    metrics = GatewayMetrics(["http://tasks.gateway:8080"], client=httpx.Client(transport=httpx.MockTransport(answer)))
    scrape = metrics.scrape()
    assert seen == ["http://10.0.0.2:8080/proxy/metrics?scope=backend", "http://10.0.0.3:8080/proxy/metrics?scope=backend"]
    assert scrape.backends["lin-blue"] == BackendStats(8, 240)
    assert scrape.sources == {"http://10.0.0.2:8080", "http://10.0.0.3:8080"}
    assert GatewayMetrics(["http://127.0.0.1:9"])._addresses(httpx.URL("http://127.0.0.1:9")) == [httpx.URL("http://127.0.0.1:9")]


# -- the loop ------------------------------------------------------------------------------------

class FakeMetrics:
    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self.sessions: float | None = 0.0  # None: the scrape fails

    def scrape(self) -> Scrape:
        if self.sessions is None:
            raise ModelportError("Cannot read the gateway's metrics at http://gateway:8080: connection refused")
        return Scrape(self.clock[0], {"lin-blue": BackendStats(self.sessions, 0)})


class RecordingScaler:
    def __init__(self, slots: dict[str, int]) -> None:
        self.slots = slots
        self.applied: list[tuple[str, Decision]] = []

    def replicas(self, model: str) -> dict[str, int]:
        return dict(self.slots)

    def apply(self, model: str, slot: str, decision: Decision, when: str) -> None:
        self.applied.append((slot, decision))
        self.slots[slot] = decision.desired


def loop(policy: Autoscale, slots: dict[str, int]) -> tuple[Autoscaler, FakeMetrics, RecordingScaler, list[float], io.StringIO]:
    clock, out = [0.0], io.StringIO()
    metrics, scaler = FakeMetrics(clock), RecordingScaler(slots)
    scaler_loop = Autoscaler({"lin": policy}, metrics, scaler, out=out, summary_every=30, clock=lambda: clock[0],
                             wall=lambda: 1_800_000_000 + clock[0])
    return scaler_loop, metrics, scaler, clock, out


def lines(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_the_loop_scales_logs_changes_only_and_labels_each_scale() -> None:
    policy = Autoscale.from_json({"min": 1, "max": 4, "target": {"in_flight": 4}, "down_window": 10})
    autoscaler, metrics, scaler, clock, out = loop(policy, {"blue": 1})
    metrics.sessions = 12
    for t in range(0, 30, 2):  # load for 8 s, then none
        clock[0] = float(t)
        metrics.sessions = 12 if t < 8 else 0
        autoscaler.step()
    assert scaler.slots == {"blue": 1}
    # The service (its count and label) is updated at each scale only: steady and held are logged.
    assert [(slot, d.current, d.desired, d.kind) for slot, d in scaler.applied] == [
        ("blue", 1, 3, "up"), ("blue", 3, 1, "down")]
    logged = lines(out)
    assert [(e["event"], e["kind"], e["desired"]) for e in logged] == [
        ("scale", "up", 3), ("state", "steady", 3), ("state", "held", 3), ("scale", "down", 1), ("state", "steady", 1)]
    assert logged[0] == {"time": "2027-01-15T08:00:00Z", "event": "scale", "model": "lin", "slot": "blue", "current": 1,
                         "desired": 3, "kind": "up", "reason": "in_flight 12/replica, target 4: 3 replica(s)",
                         "observed": 12, "recommendation": 3}
    # The scale-down comes when the last recommendation of 3 (t=6) has left the 10 s window.
    assert [e["time"][-3:-1] for e in logged if e["kind"] == "down"] == ["18"]


def test_in_flight_is_the_mean_of_the_samples_since_the_last_pass_so_a_noisy_load_does_not_flap() -> None:
    """A load of 8 in flight on 2 replicas (target 4) sampled as 16, 0, 16, 0 between passes: each pass
    sees the mean, 8, and stays steady; deciding on the instantaneous sample would go up, then be held."""
    policy = Autoscale.from_json({"min": 1, "max": 4, "target": {"in_flight": 4}, "down_window": 10})
    autoscaler, metrics, scaler, clock, out = loop(policy, {"blue": 2})
    for t in range(0, 40, 2):
        for i, sessions in enumerate((16, 0, 16)):  # three samples between two passes, then the pass's own
            clock[0] = t + i * 0.5
            metrics.sessions = sessions
            autoscaler.sample()
        clock[0], metrics.sessions = t + 1.5, 0
        decision = autoscaler.step()["lin"]
        assert (decision.observed, decision.kind) == (8, "steady"), decision
    assert scaler.applied == [] and [e["event"] for e in lines(out)] == ["state", "summary"]
    assert observe("in_flight", "lin-blue", Scrape(0, {"lin-blue": BackendStats(6, 0)}), None,
                   [Scrape(0, {"lin-blue": BackendStats(2, 0)}), Scrape(0, {})]) == 4  # a sample without it: left out


def test_the_loop_samples_between_its_passes() -> None:
    policy = Autoscale.from_json({"min": 1, "max": 4, "target": {"in_flight": 4}})
    autoscaler, metrics, scaler, clock, out = loop(policy, {"blue": 1})
    scrapes = []
    real = metrics.scrape
    metrics.scrape = lambda: scrapes.append(1) or real()  # type: ignore[method-assign]
    autoscaler.clock = time.monotonic
    autoscaler.run(0.2, passes=2, samples=4)
    assert len(scrapes) == 8  # a pass and 3 samples, twice


def test_a_failed_scrape_is_logged_once_and_the_replicas_held() -> None:
    policy = Autoscale.from_json({"min": 1, "max": 4, "target": {"in_flight": 4}, "down_window": 0})
    autoscaler, metrics, scaler, clock, out = loop(policy, {"blue": 3})
    metrics.sessions = None
    for t in range(5):
        clock[0] = float(t)
        assert autoscaler.step()["lin"].desired == 3
    assert scaler.applied == [] and scaler.slots == {"blue": 3}
    logged = lines(out)
    assert [e["event"] for e in logged] == ["error", "state"]
    assert "connection refused" in logged[0]["reason"]
    assert logged[1]["reason"] == "the gateway's metrics cannot be read: holding"
    metrics.sessions = 0
    clock[0] = 5.0
    autoscaler.step()
    assert scaler.slots == {"blue": 1}
    assert [e["event"] for e in lines(out)[2:]] == ["recovered", "scale"]


def test_the_loop_holds_during_a_release_and_enforces_the_bounds_without_metrics() -> None:
    policy = Autoscale.from_json({"min": 2, "max": 4, "target": {"in_flight": 4}})
    autoscaler, metrics, scaler, clock, out = loop(policy, {"blue": 2, "green": 2})
    metrics.sessions = 100
    assert autoscaler.step()["lin"].kind == "hold"
    assert scaler.applied == [] and "a release is under way (blue, green)" in lines(out)[0]["reason"]
    scaler.slots = {"green": 9}  # scaled by hand past max, and the gateway unreadable
    metrics.sessions = None
    clock[0] = 2.0
    assert autoscaler.step()["lin"].desired == 4
    assert scaler.slots == {"green": 4}


def test_a_summary_line_comes_periodically_while_nothing_changes() -> None:
    policy = Autoscale.from_json({"min": 1, "max": 4, "target": {"in_flight": 4}})
    autoscaler, metrics, scaler, clock, out = loop(policy, {"blue": 1})
    metrics.sessions = 4
    for t in range(0, 70, 2):
        clock[0] = float(t)
        autoscaler.step()
    assert [e["event"] for e in lines(out)] == ["state", "summary", "summary"]  # t = 0, 30, 60


def test_a_failing_docker_call_is_logged_once_and_tried_again() -> None:
    policy = Autoscale.from_json({"min": 1, "max": 4, "target": {"in_flight": 4}})
    autoscaler, metrics, scaler, clock, out = loop(policy, {"blue": 1})
    calls = []

    def refuse(model: str, slot: str, decision: Decision, when: str) -> None:
        calls.append(decision.desired)
        raise RuntimeError("update out of sequence")

    scaler.apply = refuse  # type: ignore[method-assign]
    metrics.sessions = 16
    for t in range(3):
        clock[0] = 2.0 * t
        autoscaler.step()
    assert calls == [4, 4, 4]
    assert [e["event"] for e in lines(out)] == ["error"]  # once while it lasts
    assert lines(out)[0]["reason"] == "RuntimeError: update out of sequence"
    del scaler.apply  # the manager takes updates again
    clock[0] = 6.0
    autoscaler.step()
    assert scaler.slots == {"blue": 4} and [e["event"] for e in lines(out)] == ["error", "scale"]


def test_the_label_is_what_stack_ps_shows() -> None:
    d = Decision(1, 3, "up", "in_flight 12/replica, target 4: 3 replica(s)")
    text = label_text(d, "2026-12-03T14:02:11Z")
    assert text.startswith('{"desired":3,"current":1,"kind":"up",')  # compact: labels are shown whole
    status = status_of({LABEL: text, "com.docker.stack.namespace": "demo"})
    assert status == {"desired": 3, "current": 1, "kind": "up", "reason": d.reason, "time": "2026-12-03T14:02:11Z"}
    assert describe(status) == "up → 3 at 2026-12-03T14:02:11Z (in_flight 12/replica, target 4: 3 replica(s))"
    assert status_of({}) is None and status_of({LABEL: "not json"}) is None and describe(None) == "-"


class StubEngine:
    def __init__(self, swarm: dict) -> None:
        self.swarm = swarm

    def info(self) -> dict:
        return {"Swarm": self.swarm}


def test_the_scaler_refuses_an_engine_that_is_no_swarm_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    SwarmScaler(StubEngine({"LocalNodeState": "active", "ControlAvailable": True}), "demo").check()
    with pytest.raises(ModelportError) as e:
        SwarmScaler(StubEngine({"LocalNodeState": "active", "ControlAvailable": False}), "demo").check()  # a worker
    assert str(e.value) == ("The Docker Engine at unix:///var/run/docker.sock is not a Swarm manager (its swarm state: "
                            "active): run the autoscaler on a manager (placement node.role == manager) with that "
                            "manager's socket mounted")
