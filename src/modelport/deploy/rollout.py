"""One rollout engine, whatever runs the replicas: start the candidate in the idle slot beside the
serving one, wait until the proxy checks every replica healthy, shift traffic, drain the old slot and
retire it. A candidate that fails is explained and removed; the serving release keeps its traffic.

An orchestrator provides ``Replicas`` (the Docker Engine in deploy/containers.py); the proxy and its
Runtime API are the same gateway everywhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from modelport.deploy.proxy import Runtime, Server, other
from modelport.errors import ModelportError
from modelport.progress import Progress

DRAIN_TIMEOUT = 30.0


class Replicas(Protocol):
    """What an orchestrator does for the engine. A replica is named by an id; all replicas of a slot
    answer to the slot's alias on the service's network, where the proxy finds them."""

    def start(self, slot: str, spec: Any, count: int) -> list[str]:
        """Start ``count`` replicas of ``spec`` (the orchestrator's description of a release) in ``slot``."""

    def members(self, slot: str, *, running: bool = True) -> list[str]:
        """The slot's replicas (only the running ones, or all), oldest first."""

    def address(self, replica: str) -> str | None:
        """The replica's address on the service's network (None until it has one)."""

    def failure(self, replicas: list[str]) -> str | None:
        """Why one of these replicas cannot serve (it exited, it restarts...), or None."""

    def explain(self, replicas: list[str]) -> str:
        """What the orchestrator knows of these replicas, for a person: state, exit code, last log lines."""

    def remove(self, replicas: list[str]) -> None:
        """Stop and remove these replicas."""

    # Optional: ``reported_ready(replicas) -> set[str]``, those of ``replicas`` whose server said it is
    # ready (wait_ready then tells the proxy at once).


def wait_ready(replicas: Replicas, runtime: Runtime, slot: str, started: list[str], timeout: float) -> None:
    """Return once the proxy checks every one of ``started`` UP in ``slot``; fail as soon as one fails.

    An orchestrator that can tell when a replica's server said it is ready (``reported_ready``: its
    ``Startup:`` line, logged once its models answered the warm-up prediction) gets it into the proxy at
    once (``Runtime.set_health``) rather than at the proxy's next two checks; until a report, the proxy
    is looked at seldom: each look is a ``docker exec`` into it, CPU the replicas' start needs."""
    deadline = time.monotonic() + timeout
    reported = getattr(replicas, "reported_ready", None)
    problem, next_look, seen, ready = "", 0.0, set(), set()
    known: dict[str, Server] = {}  # replica → its server in the proxy, as last looked at

    def all_up() -> bool:
        return all(r in known and known[r].status == "UP" for r in started)

    while True:
        if reported is not None and (awaited := [r for r in started if r not in ready]):
            ready = ready | reported(awaited)  # a report stays (its log line does): not read again
        try:  # a server the proxy showed already: told without another look (a failure: look again)
            for replica in ready:
                if (server := known.get(replica)) is not None and server.status != "UP":
                    runtime.set_health(server, "up")
                    server.status = "UP"
        except ModelportError:
            known.clear()
        if all_up():
            return
        if time.monotonic() < next_look and ready <= seen:
            time.sleep(0.05)  # a report is a log read, cheap: looked for often
            continue
        seen = ready
        if why := replicas.failure(started):
            raise ModelportError(why)
        addresses = {replicas.address(r): r for r in started}
        try:
            servers = [s for s in runtime.servers(slot) if s.address in addresses]
            for s in servers:  # it answers its readiness endpoint: the check the proxy would make next
                if s.status != "UP" and addresses[s.address] in ready:
                    runtime.set_health(s, "up")
                    s.status = "UP"
            known = {addresses[s.address]: s for s in servers}
            rising = any("/" in s.status for s in servers)  # "DOWN 1/2": a check passed, UP at the next one
            problem = ""
        except ModelportError as e:  # the proxy is still starting
            known, rising, problem = {}, False, str(e)
        if None not in addresses and all_up():
            return
        if time.monotonic() > deadline:
            up = sum(1 for r in started if r in known and known[r].status == "UP")
            raise ModelportError(f"{up} of {len(started)} replica(s) were not checked healthy by the proxy after "
                                 f"{timeout:.0f}s{': ' + problem if problem else ''}\n{replicas.explain(started)}")
        # Often once a replica is about to be UP (the proxy checks a starting one every 100 ms) or said it is
        # ready (its address may not be in the proxy yet); else seldom, more so while reports are awaited.
        wait = 0.05 if rising or ready else 1.0 if reported is not None else 0.25
        next_look = time.monotonic() + wait


def drain(servers: Callable[[], list[Server]], timeout: float = DRAIN_TIMEOUT) -> None:
    """Wait until the requests in flight on ``servers()`` are answered (bounded: a stuck client must not
    block a release; each replica's graceful stop still lets its requests finish)."""
    deadline = time.monotonic() + timeout
    while any(s.sessions for s in servers()) and time.monotonic() < deadline:
        time.sleep(0.1)


def switch(replicas: Replicas, runtime: Runtime, to: str, progress: Progress) -> None:
    """All traffic to ``to``; then the other slot drains and is retired."""
    runtime.set_share(to, 100)
    old = other(to)
    progress("Traffic switched; draining and removing the previous release")
    drain(lambda: runtime.servers(old))
    replicas.remove(replicas.members(old, running=False))


def release(replicas: Replicas, runtime: Runtime, *, slot: str, spec: Any, count: int, canary: int | None,
            wait: float, progress: Progress) -> None:
    """Start ``spec`` in ``slot`` (the idle one) and give it ``canary`` percent of the traffic, or all of it."""
    started = replicas.start(slot, spec, count)
    try:
        wait_ready(replicas, runtime, slot, started, wait)
    except BaseException:
        replicas.remove(started)
        raise
    if canary is not None:
        runtime.set_share(slot, canary)
        progress(f"Canary: {canary}% of requests go to the new release")
        return
    switch(replicas, runtime, slot, progress)


def scale(replicas: Replicas, runtime: Runtime, *, slot: str, spec: Any, count: int, wait: float,
          progress: Progress) -> None:
    """Bring ``slot`` to ``count`` running replicas. New ones get traffic once checked healthy; leaving
    ones are drained first (newest first), so no request fails either way."""
    running = replicas.members(slot)
    if count > len(running):
        progress(f"Starting {count - len(running)} replica(s)")
        started = replicas.start(slot, spec, count - len(running))
        try:
            wait_ready(replicas, runtime, slot, started, wait)
        except BaseException:
            replicas.remove(started)
            raise
        return
    leaving = running[count:]
    if not leaving:
        return
    addresses = {replicas.address(r) for r in leaving}
    servers = [s for s in runtime.servers(slot) if s.address in addresses]
    for s in servers:
        runtime.set_state(s, "drain")
    progress(f"Draining and removing {len(leaving)} replica(s)")
    drain(lambda: [s for s in runtime.servers(slot) if s.address in addresses])
    replicas.remove(leaving)
    # Ready again once DNS has taken the address away: the server slot is then free for a later replica.
    deadline = time.monotonic() + 10
    while any(s.address in addresses for s in runtime.servers(slot)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for s in servers:
        runtime.set_state(s, "ready")
