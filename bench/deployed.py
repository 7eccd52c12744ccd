"""The 'deployed service' table: the same model and load as table 1, served by `modelport serve` directly, by
its container directly, and by a `modelport run` service through the HAProxy gateway with 1 and 2 replicas."""

from __future__ import annotations

from bench.suite import Suite
from bench.systems.deployed import Deployed, ServeDirect
from bench.tabular import train_linear

DEPLOYED = Suite(
    key="deployed",
    title="Deployed service: the same LinearRegression, directly and through the service's proxy",
    prepare=train_linear,
    systems=(
        ServeDirect(),
        Deployed("container", "the model's image (`modelport build`), `docker run -p`, reached directly"),
        Deployed("service-1", "`modelport run --replicas 1`: HAProxy gateway container → 1 model container"),
        Deployed("service-2", "`modelport run --replicas 2`: HAProxy gateway container → 2 model containers"),
    ),
    baseline="serve-direct",
)
