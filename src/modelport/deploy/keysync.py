"""Keep a gateway's keys map in step with the key store: the control sidecar of a Kubernetes
gateway pod runs this against the HAProxy beside it, so a key created or revoked in the database
is accepted or refused by every gateway replica within about ``every`` seconds, with no reload."""

from __future__ import annotations

import logging
import threading

from sqlalchemy.exc import SQLAlchemyError

from modelport.deploy.proxy import Runtime
from modelport.errors import ModelportError
from modelport.keys import KeyStore

log = logging.getLogger("modelport.keysync")


def sync_once(store: KeyStore, runtime: Runtime) -> bool:
    """Hand the proxy the active keys if its map differs from them; → whether it changed."""
    wanted = store.digests()
    # Compared with the proxy's own map, not with what was last sent: a restarted proxy starts from
    # its file (empty in a ConfigMap) and gets the keys back at the next pass.
    if runtime.keys() == wanted:
        return False
    runtime.set_keys(wanted)
    return True


def sync_forever(store: KeyStore, runtime: Runtime, every: float = 1.0, stop: threading.Event | None = None) -> None:
    """``sync_once`` every ``every`` seconds until ``stop`` is set; an unreachable database or proxy
    is logged and tried again (the proxy keeps the keys it has meanwhile)."""
    stop = stop or threading.Event()
    failing = False
    while not stop.is_set():
        try:
            if sync_once(store, runtime):
                log.info("keys map updated")
            failing = False
        except (SQLAlchemyError, ModelportError, OSError) as e:
            if not failing:  # once per outage, not every second
                log.warning("cannot sync the keys map: %s", e)
            failing = True
        stop.wait(every)
