"""Keep a gateway's maps in step with the stack's truth: the keys map with the key store, and (on a
Swarm) the traffic and versions maps with what the stack file gives the keysync task. The control
sidecar of a Kubernetes gateway pod runs this against the HAProxy beside it; on a Swarm, each gateway
node's keysync task against that node's gateway (through a Unix socket in a volume they share). So a
key created or revoked in the database is accepted or refused by every gateway within about ``every``
seconds, with no reload, and a gateway made anew (a restarted or replaced task, which starts from its
image's maps) gets the keys, versions and traffic split back at the next pass."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from modelport.deploy.proxy import KEYS, Runtime
from modelport.errors import ModelportError
from modelport.keys import KeyStore

log = logging.getLogger("modelport.keysync")


def sync_once(store: KeyStore, runtime: Runtime, maps: Mapping[str, Mapping[str, str]] | None = None) -> list[str]:
    """Hand the proxy the active keys, and each of ``maps`` (file name → its entries) whole, where its
    map differs; → the names of the maps it changed."""
    # Compared with the proxy's own maps, not with what was last sent: a restarted proxy starts from
    # its files (empty in a ConfigMap) and gets them back at the next pass.
    changed = []
    for name, wanted in {**(maps or {}), KEYS: store.digests()}.items():
        if runtime.entries(name) != dict(wanted):
            runtime.set_keys(wanted) if name == KEYS else runtime.replace_map(name, wanted)
            changed.append(name)
    return changed


def sync_forever(store: KeyStore, runtime: Runtime, every: float = 1.0, stop: threading.Event | None = None,
                 maps: Mapping[str, Mapping[str, str]] | None = None, ready: Path | None = None) -> None:
    """``sync_once`` every ``every`` seconds until ``stop`` is set; an unreachable database or proxy
    is logged and tried again (the proxy keeps the maps it has meanwhile). ``ready``: a file made once
    a pass succeeded (a Swarm task's healthcheck: its gateway got these maps), and kept: a gateway
    restarting meanwhile must not make this task unhealthy, which Swarm would replace for nothing."""
    stop = stop or threading.Event()
    failing = False
    while not stop.is_set():
        try:
            if changed := sync_once(store, runtime, maps):
                log.info("%s updated", ", ".join(changed))
            failing = False
            if ready:
                ready.touch()
        except (SQLAlchemyError, ModelportError, OSError) as e:
            if not failing:  # once per outage, not every second
                log.warning("cannot sync the gateway's maps: %s", e)
            failing = True
        stop.wait(every)
