"""The 'deployed service' table's servers, run by the harness: ``python deployed.py MODE PORT MODEL_PKL``.

MODE is ``container`` (the model's image alone, ``docker run`` in the foreground) or ``service-N``
(``modelport run`` with N replicas behind its HAProxy gateway, removed again on SIGTERM). Once it answers, the
front container's address on its Docker network (``http://IP:PORT``) goes to the file BENCH_ADDRESS_FILE names,
for the rows that bypass the userland proxy of the published port. The model is saved to
the store in MODELPORT_HOME and its image built first when missing, on MODELPORT_BENCH_BASE_IMAGE (default
python:3.11-slim); the gateway uses MODELPORT_PROXY_IMAGE (default haproxy:2.6).
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import uuid

import modelport
from modelport import defaults
from modelport.container import engine
from modelport.deploy import containers, proxy
from modelport.errors import NotFoundError

MODEL = "bench-linear"


def main(mode: str, port: int, model_pkl: str) -> None:
    store = modelport.get_store()
    try:
        store.list_versions(MODEL)
    except NotFoundError:
        with open(model_pkl, "rb") as f:
            modelport.save_model(pickle.load(f), MODEL)
    base = os.environ.get("MODELPORT_BENCH_BASE_IMAGE", "python:3.11-slim")
    image, _, _ = containers.resolve_image(f"{MODEL}:1", base_image=base, store=store, progress=print)
    sys.stdout.flush()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})  # until what runs is removed
    if mode == "container":
        name = f"bench-container-{uuid.uuid4().hex[:6]}"
        container = engine.client().containers.run(image, name=name, detach=True,
                                                   ports={"8080/tcp": ("127.0.0.1", port)})
        try:
            container.reload()
            announce(f"http://{engine.address(container)}:8080")
            print(f"{name}: on port {port}", flush=True)
            while signal.sigtimedwait({signal.SIGTERM, signal.SIGINT}, 1.0) is None:
                container.reload()
                if container.status != "running":  # died: say why and end, so the harness stops waiting
                    sys.exit(f"{name} {container.status}:\n{container.logs(tail=30).decode(errors='replace')}")
        finally:
            container.remove(force=True)
        return
    replicas = int(mode.removeprefix("service-"))
    name = f"bench-service-{uuid.uuid4().hex[:6]}"
    try:
        containers.run(image, port=port, name=name, replicas=replicas, progress=print,
                       proxy_image=os.environ.get("MODELPORT_PROXY_IMAGE", defaults.PROXY_IMAGE))
        (gateway,) = containers.containers(name, role="gateway")
        announce(f"http://{engine.address(gateway, containers.network_name(name))}:{proxy.PORT}")
        print(f"{name}: {replicas} replica(s) on port {port}", flush=True)
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
    finally:
        if containers.containers(name):
            containers.remove(name, force=True)


def announce(url: str) -> None:
    path = os.environ.get("BENCH_ADDRESS_FILE")
    if path:
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            f.write(url)
        os.replace(tmp, path)  # whole or absent: the harness polls for it


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
