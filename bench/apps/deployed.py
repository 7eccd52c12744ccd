"""The 'deployed service' table's servers, run by the harness: ``python deployed.py MODE PORT MODEL_PKL``.

MODE is ``container`` (the model's image alone, ``docker run`` in the foreground) or ``service-N``
(``modelport run`` with N replicas behind its HAProxy gateway, removed again on SIGTERM). The model is saved to
the store in MODELPORT_HOME and its image built first when missing, on MODELPORT_BENCH_BASE_IMAGE (default
python:3.11-slim); the gateway uses MODELPORT_PROXY_IMAGE (default haproxy:2.6).
"""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import sys
import uuid

import modelport
from modelport import defaults
from modelport.deploy import containers
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
    if mode == "container":
        docker = shutil.which("docker", path="/usr/bin") or "docker"
        os.execv(docker, [docker, "run", "--rm", "--name", f"bench-container-{uuid.uuid4().hex[:6]}",
                          "-p", f"127.0.0.1:{port}:8080", image])
    replicas = int(mode.removeprefix("service-"))
    name = f"bench-service-{uuid.uuid4().hex[:6]}"
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})  # until the service is removed
    try:
        containers.run(image, port=port, name=name, replicas=replicas, progress=print,
                       proxy_image=os.environ.get("MODELPORT_PROXY_IMAGE", defaults.PROXY_IMAGE))
        print(f"{name}: {replicas} replica(s) on port {port}", flush=True)
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
    finally:
        if containers.containers(name):
            containers.remove(name, force=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
