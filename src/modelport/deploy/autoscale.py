"""Autoscaling a Swarm stack's models: a small control loop that reads the gateway's Prometheus
metrics and sets each model's replica count through the Docker API on a manager.

Per model, an ``autoscale`` policy (stack.json's ``models[].autoscale``)::

    {"min": 1, "max": 8, "target": {"in_flight": 4}, "up_window": 0, "down_window": 60, "tolerance": 0.1}

``target`` is per replica: ``in_flight`` (requests the gateway has open to the model's serving slot,
the mean of the samples taken since the last pass: one instantaneous sample swings with every burst)
or ``rps`` (requests per second it forwards there, since the last pass). The decision is the Kubernetes HPA's: desired =
ceil(current × observed / target), nothing within ``tolerance`` of the target, clamped to [min, max];
it goes up to the lowest recommendation of the last ``up_window`` seconds (0: at once) and down only
to the highest of the last ``down_window`` seconds, so a pause in the load does not remove replicas
that the next burst needs.

The loop (``Autoscaler``) runs in the stack as ``modelport stack autoscale`` (``command`` gives its
arguments) on a manager node, the manager's Docker socket mounted; it needs the ``docker`` extra. It
scales the model's serving slot, ``{stack}_{model}-{slot}``, and holds while a release runs both
slots. Each decision that changes something is one JSON line on stdout; one that changes the replica
count also sets the service's label ``io.modelport.autoscale`` (``status_of`` reads it back for
``stack ps``), in the same service update: a label per change of state (steady, held) would update
the service at every swing of the load. A failed scrape or Docker
call is logged once and the replicas are held; the count never leaves [min, max].
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import math
import os
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TextIO

import httpx

from modelport.deploy.proxy import MAX_REPLICAS, PORT, SLOTS
from modelport.errors import ModelportError

LABEL = "io.modelport.autoscale"
METRICS = ("in_flight", "rps")
METRICS_PATH = "/proxy/metrics?scope=backend"  # the backends only: a tenth of the whole export
SESSIONS = "haproxy_backend_current_sessions"
REQUESTS = "haproxy_backend_http_requests_total"
_FIELDS = ("min", "max", "target", "up_window", "down_window", "tolerance")
# In the stack network: with endpoint_mode dnsrr the service's name resolves to every gateway task.
GATEWAY_URL = f"http://gateway:{PORT}"


# -- the policy ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Autoscale:
    """How one model scales: ``target`` of ``metric`` per replica, within [min, max]."""

    min: int
    max: int
    metric: str  # "in_flight" or "rps"
    target: float
    up_window: float = 0.0  # seconds: scale up to the lowest recommendation of this window
    down_window: float = 60.0  # seconds: scale down only to the highest recommendation of this window
    tolerance: float = 0.1  # no change while observed/target is within 1 ± tolerance

    @classmethod
    def from_json(cls, data: Any, model: str = "") -> Autoscale:
        where = f"{model}: autoscale" if model else "autoscale"
        if not isinstance(data, Mapping):
            raise ModelportError(f"{where} must be an object such as "
                                 '{"min": 1, "max": 4, "target": {"in_flight": 4}}, not ' + json.dumps(data))
        if unknown := sorted(set(data) - set(_FIELDS)):
            raise ModelportError(f"{where}: unknown field(s) {', '.join(unknown)} (known: {', '.join(_FIELDS)})")
        for required in ("min", "max", "target"):
            if required not in data:
                raise ModelportError(f"{where}: {required} is missing")
        low, high = _count(data["min"], f"{where}.min"), _count(data["max"], f"{where}.max")
        if low > high:
            raise ModelportError(f"{where}: min {low} is above max {high}")
        metric, target = _target(data["target"], f"{where}.target")
        return cls(low, high, metric, target,
                   up_window=_number(data.get("up_window", 0.0), f"{where}.up_window", "seconds, 0 or more"),
                   down_window=_number(data.get("down_window", 60.0), f"{where}.down_window", "seconds, 0 or more"),
                   tolerance=_tolerance(data.get("tolerance", 0.1), f"{where}.tolerance"))

    def to_json(self) -> dict[str, Any]:
        return {"min": self.min, "max": self.max, "target": {self.metric: self.target}, "up_window": self.up_window,
                "down_window": self.down_window, "tolerance": self.tolerance}

    def clamp(self, count: int) -> int:
        return max(self.min, min(self.max, count))

    def summary(self) -> str:
        """``1-3, in_flight 4/replica, down 60s``: the policy as ``stack ps`` shows it."""
        windows = [f"{side} {window:g}s" for side, window in (("up", self.up_window), ("down", self.down_window))
                   if window]
        return ", ".join([f"{self.min}-{self.max}", f"{self.metric} {self.target:g}/replica", *windows])


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_REPLICAS:
        raise ModelportError(f"{where} {json.dumps(value)}: a whole number of replicas from 1 to {MAX_REPLICAS}")
    return value


def _number(value: Any, where: str, what: str) -> float:
    if not _is_number(value) or value < 0:
        raise ModelportError(f"{where} {json.dumps(value)}: {what}")
    return float(value)


def _tolerance(value: Any, where: str) -> float:
    if not _is_number(value) or not 0 <= value < 1:
        raise ModelportError(f"{where} {json.dumps(value)}: a fraction from 0 to below 1 (0.1: 10 %)")
    return float(value)


def _target(value: Any, where: str) -> tuple[str, float]:
    example = '{"in_flight": 4} (requests in flight per replica) or {"rps": 20} (requests per second per replica)'
    if not isinstance(value, Mapping) or len(value) != 1 or next(iter(value)) not in METRICS:
        raise ModelportError(f"{where} {json.dumps(value)}: one metric and its value per replica, {example}")
    metric, number = next(iter(value.items()))
    if not _is_number(number) or number <= 0:
        raise ModelportError(f"{where}.{metric} {json.dumps(number)}: a number above 0, per replica")
    return metric, float(number)


def policies(data: Any) -> dict[str, Autoscale]:
    """Model → policy from a stack.json (its models' ``autoscale``) or from an object ``{model: policy}``."""
    if isinstance(data, Mapping) and isinstance(data.get("models"), list):  # a stack.json
        data = {m["name"]: m["autoscale"] for m in data["models"] if isinstance(m, Mapping) and m.get("autoscale")}
    if not isinstance(data, Mapping):
        raise ModelportError('An autoscale policy is an object {"MODEL": {"min": ..., "max": ..., "target": ...}} '
                             "or a stack.json")
    if not data:
        raise ModelportError("No model has an autoscale policy: nothing to scale")
    return {str(model): Autoscale.from_json(policy, str(model)) for model, policy in data.items()}


def scale_target(text: str, *, in_flight: float | None = None, rps: float | None = None,
                 up_window: float | None = None, down_window: float | None = None,
                 tolerance: float | None = None) -> int | dict[str, Any]:
    """What ``stack scale MODEL REPLICAS`` asks for: a count (``3``), or a policy (``1:3`` with a target,
    ``--in-flight 4`` or ``--rps 20``, and optionally the windows and tolerance), checked here."""
    options = {"up_window": up_window, "down_window": down_window, "tolerance": tolerance}
    low, colon, high = text.partition(":")
    if not colon:
        if not text.strip().isascii() or not text.strip().isdigit():
            raise ModelportError(f"Invalid replica count {text!r}: a number of replicas (3), or MIN:MAX to autoscale "
                                 "between (1:3 --in-flight 4)")
        given = [f"--{k.replace('_', '-')}" for k, v in {"in_flight": in_flight, "rps": rps, **options}.items()
                 if v is not None]
        if given:
            raise ModelportError(f"{', '.join(given)} go with MIN:MAX (autoscaling), not a replica count: "
                                 f"e.g. 1:{text.strip()} --in-flight 4")
        return int(text)
    try:
        bounds = int(low), int(high)
    except ValueError:
        raise ModelportError(f"Invalid replica range {text!r}: MIN:MAX, whole numbers (1:3)") from None
    if (in_flight is None) == (rps is None):
        raise ModelportError(f"Autoscaling between {text}: give one target per replica, --in-flight N (requests in "
                             "flight) or --rps N (requests per second)")
    target = {"in_flight": in_flight} if in_flight is not None else {"rps": rps}
    policy = {"min": bounds[0], "max": bounds[1], "target": target,
              **{k: v for k, v in options.items() if v is not None}}
    return Autoscale.from_json(policy).to_json()


def load_policies(text: str) -> dict[str, Autoscale]:
    """``--policy``: JSON itself, or the path of a file holding it (a stack.json works)."""
    source = text
    if not text.lstrip().startswith("{"):
        path = Path(text)
        if not path.is_file():
            raise ModelportError(f"--policy {text!r}: neither JSON nor a file")
        source = path.read_text()
    try:
        data = json.loads(source)
    except json.JSONDecodeError as e:
        raise ModelportError(f"--policy: not valid JSON ({e})") from None
    return policies(data)


EVERY = 2.0  # seconds between two decisions, by default (SwarmSettings.autoscale_every)


def command(stack: str, models: Mapping[str, Any], every: float = EVERY, gateway: str = GATEWAY_URL) -> list[str] | None:
    """The arguments of a stack's autoscaler service (the control image, whose entrypoint is
    ``modelport``), from each model's ``autoscale`` (``{name: policy or None}``); None when no model
    has one. A bad policy is refused here, when the stack file is written, not in the running loop."""
    wanted = {name: policy for name, policy in models.items() if policy}
    if not wanted:
        return None
    checked = {name: p.to_json() for name, p in policies(wanted).items()}
    return ["stack", "autoscale", "--stack", stack, "--gateway", gateway, "--every", f"{every:g}",
            "--policy", json.dumps(checked, separators=(",", ":"))]


# -- the decision ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Decision:
    """What to do with one model's replicas, and why. ``kind``: ``up``, ``down``, ``steady`` (the
    recommendation is the current count), ``held`` (a stabilisation window keeps the current count),
    ``bounds`` (outside [min, max]), ``hold`` (no metrics, a release under way: nothing is decided)."""

    current: int
    desired: int
    kind: str
    reason: str
    observed: float | None = None  # the model's total of the metric
    recommendation: int | None = None  # before the stabilisation windows

    @property
    def changes(self) -> bool:
        return self.desired != self.current


def decide(policy: Autoscale, current: int, observed: float | None, history: Sequence[tuple[float, int]],
           now: float) -> Decision:
    """The replicas ``policy`` wants, given ``observed`` (the model's total in-flight requests or
    req/s; None when unknown), ``current`` replicas and ``history``, the earlier recommendations as
    (time, replicas). Pure: the caller records ``recommendation`` in the history."""
    if current != policy.clamp(current):
        desired = policy.clamp(current)
        return Decision(current, desired, "bounds", f"{current} replica(s) is outside [{policy.min}, {policy.max}]",
                        observed)
    if observed is None:
        return Decision(current, current, "hold", "no metrics: holding")
    per_replica = observed / current
    what = f"{policy.metric} {per_replica:.3g}/replica, target {policy.target:g}"
    if abs(per_replica / policy.target - 1) <= policy.tolerance + 1e-9:  # 4.4 is within 10 % of 4
        return _stabilised(policy, current, current, history, now, observed, f"{what}: within {policy.tolerance:.0%}")
    wanted = math.ceil(round(observed / policy.target, 6))  # round: 8.0000001 is 8, not 9
    said = f"{what}: {wanted} replica(s)"
    if wanted != policy.clamp(wanted):
        said += f", clamped to {'max' if wanted > policy.max else 'min'} {policy.clamp(wanted)}"
    return _stabilised(policy, current, policy.clamp(wanted), history, now, observed, said)


def _stabilised(policy: Autoscale, current: int, recommendation: int, history: Sequence[tuple[float, int]],
                now: float, observed: float, said: str) -> Decision:
    """Up to the lowest recommendation of the up-window, down to the highest of the down-window."""
    up = min([r for t, r in history if now - t <= policy.up_window] + [recommendation])
    down = max([r for t, r in history if now - t <= policy.down_window] + [recommendation])
    desired = up if current < up else down if current > down else current
    kind = "up" if desired > current else "down" if desired < current else \
        "steady" if recommendation == current else "held"
    if desired != recommendation:
        side = "up" if recommendation > desired else "down"
        window = policy.up_window if side == "up" else policy.down_window
        said += f"; {'held at ' if desired == current else ''}{desired} by the {window:g}s {side}-window"
    return Decision(current, desired, kind, said, observed, recommendation)


# -- the metrics: the gateway's Prometheus exporter ------------------------------------------------

@dataclass(frozen=True)
class BackendStats:
    sessions: float  # open now (in flight)
    requests: float  # HTTP requests since the proxy started (a counter)


@dataclass(frozen=True)
class Scrape:
    time: float  # time.monotonic() when read
    backends: dict[str, BackendStats]  # summed over the gateways read
    sources: frozenset[str] = frozenset()  # the gateways' addresses: a rate needs the same ones twice


def parse_metrics(text: str) -> dict[str, BackendStats]:
    """Each backend's current sessions and HTTP request count from HAProxy's Prometheus text."""
    from prometheus_client.parser import text_string_to_metric_families

    sessions: dict[str, float] = {}
    requests: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            target = {SESSIONS: sessions, REQUESTS: requests}.get(sample.name)
            if target is not None and "proxy" in sample.labels:
                target[sample.labels["proxy"]] = sample.value
    return {name: BackendStats(sessions.get(name, 0.0), requests.get(name, 0.0)) for name in sessions | requests}


class GatewayMetrics:
    """Scrapes the stack's gateway: every address its name resolves to (``http://tasks.gateway:8080``
    in Swarm: each gateway replica), each backend's figures summed over them. A single connection to
    the service's name would read one replica, a different one now and then."""

    def __init__(self, urls: Sequence[str], timeout: float = 2.0, clock: Callable[[], float] = time.monotonic,
                 client: httpx.Client | None = None) -> None:
        if not urls:
            raise ModelportError("The autoscaler needs the gateway's URL (--gateway http://tasks.gateway:8080)")
        self.urls = [httpx.URL(u) for u in urls]
        self.clock = clock
        self._client = client or httpx.Client(timeout=timeout)

    def _addresses(self, url: httpx.URL) -> list[httpx.URL]:
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(url.host)
            return [url]
        port = url.port or (443 if url.scheme == "https" else 80)
        try:  # IPv4: Docker's networks are, and "localhost" may also give a ::1 nobody listens on
            found = socket.getaddrinfo(url.host, port, family=socket.AF_INET, type=socket.SOCK_STREAM)
        except OSError as e:
            raise ModelportError(f"Cannot resolve the gateway {url.host}: {e}") from None
        return [url.copy_with(host=address) for address in dict.fromkeys(str(info[4][0]) for info in found)]

    def scrape(self) -> Scrape:
        total: dict[str, BackendStats] = {}
        sources = [address for url in self.urls for address in self._addresses(url)]
        for source in sources:
            try:
                answer = self._client.get(source.join(METRICS_PATH))
                answer.raise_for_status()
            except httpx.HTTPError as e:
                raise ModelportError(f"Cannot read the gateway's metrics at {source.join(METRICS_PATH)}: {e}") from None
            for name, stats in parse_metrics(answer.text).items():
                was = total.get(name, BackendStats(0.0, 0.0))
                total[name] = BackendStats(was.sessions + stats.sessions, was.requests + stats.requests)
        return Scrape(self.clock(), total, frozenset(str(s) for s in sources))

    def close(self) -> None:
        self._client.close()


def observe(metric: str, backend: str, now: Scrape, before: Scrape | None,
            samples: Sequence[Scrape] = ()) -> float | None:
    """The model's ``metric`` on ``backend`` (its serving slot's): in-flight requests, the mean of
    ``samples`` (those taken since the last pass) and now; or req/s since ``before``. None when the
    gateway has no such backend or no rate can be had yet."""
    stats = now.backends.get(backend)
    if stats is None:
        return None
    if metric == "in_flight":
        seen = [s.backends[backend].sessions for s in samples if backend in s.backends] + [stats.sessions]
        return sum(seen) / len(seen)
    previous = before.backends.get(backend) if before else None
    elapsed = now.time - before.time if before else 0.0
    if previous is None or elapsed <= 0 or now.sources != before.sources:  # a gateway more or less: no rate
        return None
    if stats.requests < previous.requests:  # a restarted proxy: its counter starts again
        return None
    return (stats.requests - previous.requests) / elapsed


# -- the scaler: the Swarm services, through the Docker API on a manager ---------------------------

class Scaler(Protocol):
    def replicas(self, model: str) -> dict[str, int]: ...

    def apply(self, model: str, slot: str, decision: Decision, when: str) -> None: ...


def label_text(decision: Decision, when: str) -> str:
    """The service label: the last decision, compact."""
    return json.dumps({"desired": decision.desired, "current": decision.current, "kind": decision.kind,
                       "reason": decision.reason, "time": when}, separators=(",", ":"))


def status_of(labels: Mapping[str, str] | None) -> dict[str, Any] | None:
    """A service's last autoscale decision (its label), for ``stack ps``; None if it has none."""
    text = (labels or {}).get(LABEL)
    if not text:
        return None
    try:
        status = json.loads(text)
    except json.JSONDecodeError:
        return None
    return status if isinstance(status, dict) else None


def describe(status: Mapping[str, Any] | None) -> str:
    """One cell of ``stack ps``: ``→ 5 at 14:02:11Z (in_flight 8/replica, target 4: 5 replica(s))``."""
    if not status:
        return "-"
    return f"{status.get('kind')} → {status.get('desired')} at {status.get('time')} ({status.get('reason')})"


class SwarmScaler:
    """A stack's model services in Swarm: ``{stack}_{model}-{slot}``, replicated."""

    def __init__(self, client: Any, stack: str) -> None:
        self.client = client
        self.stack = stack

    def service_name(self, model: str, slot: str) -> str:
        return f"{self.stack}_{model}-{slot}"

    def check(self) -> None:
        """Stop at once when the engine is no Swarm manager: the service is placed or mounted wrong."""
        swarm = self.client.info().get("Swarm") or {}
        if not swarm.get("ControlAvailable"):
            where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
            raise ModelportError(f"The Docker Engine at {where} is not a Swarm manager (its swarm "
                                 f"state: {swarm.get('LocalNodeState') or 'unknown'}): run the autoscaler on a manager "
                                 "(placement node.role == manager) with that manager's socket mounted")

    def _service(self, model: str, slot: str) -> Any | None:
        import docker.errors

        try:
            return self.client.services.get(self.service_name(model, slot))
        except docker.errors.NotFound:
            return None

    def replicas(self, model: str) -> dict[str, int]:
        """Each slot's replica count, for the slots whose service exists and runs replicas."""
        found = {}
        for slot in SLOTS:
            service = self._service(model, slot)
            count = service and service.attrs["Spec"].get("Mode", {}).get("Replicated", {}).get("Replicas")
            if count:
                found[slot] = int(count)
        return found

    def apply(self, model: str, slot: str, decision: Decision, when: str) -> None:
        """The decision's replica count and its label, in one update of the service. The update carries
        the version read: one that raced another change is refused by the manager, and tried again at
        the next pass on what is there then."""
        from modelport.deploy.swarm import set_replicas

        service = self._service(model, slot)
        if service is None:
            raise ModelportError(f"No service {self.service_name(model, slot)} to scale")
        labels = {**(service.attrs["Spec"].get("Labels") or {}), LABEL: label_text(decision, when)}
        set_replicas(self.client, service.id, decision.desired, labels)


# -- the loop ----------------------------------------------------------------------------------------

@dataclass
class _Model:
    policy: Autoscale
    history: deque[tuple[float, int]] = field(default_factory=deque)
    last: tuple[str, int] | None = None  # (kind, desired) last logged
    summarised: float = -math.inf
    error: str | None = None  # the failure last logged, while it lasts


def _why_no_metrics(backend: str, scrape: Scrape | None) -> str:
    if scrape is None:
        return "the gateway's metrics cannot be read: holding"
    if backend not in scrape.backends:
        return f"the gateway has no backend {backend}: holding"
    return "no request rate yet (a first scrape, or the gateways changed): holding"


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Autoscaler:
    """One pass (``step``) scrapes the gateway once and decides for every model; ``run`` repeats it.
    Logged, one JSON line each: a change of replicas, a change of what the model's state is (steady,
    held, a failed scrape...), and a summary per model every ``summary_every`` seconds."""

    def __init__(self, policies: Mapping[str, Autoscale], metrics: GatewayMetrics, scaler: Scaler, *,
                 out: TextIO | None = None, summary_every: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.models = {name: _Model(p) for name, p in policies.items()}
        self.metrics, self.scaler = metrics, scaler
        self.out = out or sys.stdout
        self.summary_every = summary_every
        self.clock, self.wall = clock, wall
        self._before: Scrape | None = None
        self._samples: list[Scrape] = []  # taken since the last pass: in-flight is their mean
        self._scrape_failing = False

    def sample(self) -> None:
        """One more scrape for the next pass's in-flight mean (a failed one is left out)."""
        with contextlib.suppress(ModelportError):
            self._samples.append(self.metrics.scrape())

    def step(self) -> dict[str, Decision]:
        scrape = self._scrape()
        samples, self._samples = self._samples, []
        decisions = {}
        for name, model in self.models.items():
            try:
                decisions[name] = self._step_model(name, model, scrape, samples)
                model.error = None
            except Exception as e:  # noqa: BLE001 (the Docker API's errors vary: any one is logged, the loop holds)
                error = f"{type(e).__name__}: {e}"
                if error != model.error:  # once while it lasts, not every pass
                    self._log(name, "error", reason=error)
                model.error, model.last = error, None  # the state is logged again once it recovers
        if scrape is not None:
            self._before = scrape
        return decisions

    def _scrape(self) -> Scrape | None:
        try:
            scrape = self.metrics.scrape()
        except ModelportError as e:
            if not self._scrape_failing:  # once per outage
                self._log(None, "error", reason=str(e))
            self._scrape_failing = True
            return None
        if self._scrape_failing:
            self._log(None, "recovered", reason="the gateway's metrics are read again")
        self._scrape_failing = False
        return scrape

    def _step_model(self, name: str, model: _Model, scrape: Scrape | None, samples: Sequence[Scrape] = ()) -> Decision:
        now = self.clock()
        slots = self.scaler.replicas(name)
        if len(slots) != 1:
            reason = "no running service" if not slots else f"a release is under way ({', '.join(slots)}): holding"
            decision = Decision(sum(slots.values()), sum(slots.values()), "hold", reason)
            self._report(name, "", model, decision, now)
            return decision
        (slot, current), = slots.items()
        backend = f"{name}-{slot}"
        observed = observe(model.policy.metric, backend, scrape, self._before, samples) if scrape else None
        window = max(model.policy.up_window, model.policy.down_window)
        while model.history and now - model.history[0][0] > window:
            model.history.popleft()
        decision = decide(model.policy, current, observed, list(model.history), now)
        if decision.kind == "hold":
            decision = replace(decision, reason=_why_no_metrics(backend, scrape))
        if decision.recommendation is not None:
            model.history.append((now, decision.recommendation))
        if decision.changes:  # a change of state only (steady, held) is logged, not labelled
            self.scaler.apply(name, slot, decision, _utc(self.wall()))
        self._report(name, slot, model, decision, now)
        return decision

    def _report(self, name: str, slot: str, model: _Model, decision: Decision, now: float) -> None:
        changed = (decision.kind, decision.desired) != model.last
        if decision.changes or changed:
            event = "scale" if decision.changes else "state"
        elif now - model.summarised >= self.summary_every:
            event = "summary"
        else:
            return
        model.last, model.summarised = (decision.kind, decision.desired), now
        self._log(name, event, slot=slot or None, **{k: v for k, v in asdict(decision).items() if v is not None})

    def _log(self, model: str | None, event: str, **fields: Any) -> None:
        line = {"time": _utc(self.wall()), "event": event, **({"model": model} if model else {}), **fields}
        self.out.write(json.dumps(line, separators=(",", ":")) + "\n")
        self.out.flush()

    def run(self, every: float, stop: threading.Event | None = None, passes: int | None = None,
            samples: int = 4) -> None:
        """``step`` every ``every`` seconds until ``stop`` is set (or after ``passes`` passes), with
        ``samples`` - 1 more scrapes spread between two passes (in-flight is the mean of them all)."""
        stop = stop or threading.Event()
        done = 0
        while not stop.is_set() and (passes is None or done < passes):
            started = self.clock()
            self.step()
            done += 1
            for i in range(1, max(1, samples)):
                if stop.wait(max(0.0, started + every * i / samples - self.clock())):
                    return
                self.sample()
            stop.wait(max(0.0, every - (self.clock() - started)))
