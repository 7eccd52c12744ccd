"""Honest readiness: a server answers at once, but is ready only once its models have loaded and answered a
warm-up prediction (serving/startup.py), with a deliberately slow model load on a real uvicorn socket."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from modelport.errors import ModelportError
from modelport.serving.app import create_app
from modelport.serving.runtime import ServeSpec, load_models
from modelport.serving.startup import Starting, read_warmup
from modelport.serving.timings import STAGES, Timings, parse_line, process_start
from modelport.store import ModelStore
from tests.fixtures_serving import small_models
from tests.helpers import free_port, run_cli, wait_until

LOAD_SECONDS = 2.0


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelStore]:
    store = small_models(tmp_path_factory.mktemp("warmup") / "home")
    yield store
    store.close()


class SlowServer:
    """``lin`` served by uvicorn in a thread behind ``Starting``: its load takes LOAD_SECONDS, and every
    call of its predictor is recorded (when, which rows) and takes 0.3 s."""

    def __init__(self, store: ModelStore, warmup: dict | None = None) -> None:
        import uvicorn

        self.calls: list[tuple[float, float, np.ndarray]] = []  # (started, ended, rows)
        self.failures: list[str] = []

        def build():
            time.sleep(LOAD_SECONDS)  # the slow load
            models = load_models([ServeSpec.parse("lin")], store)
            predictor = models.default.predictor
            predict = predictor.predict

            def recorded(x: np.ndarray) -> np.ndarray:
                started = time.time()
                time.sleep(0.3)
                y = predict(x)
                self.calls.append((started, time.time(), np.array(x)))
                return y

            predictor.predict = recorded
            return models, create_app(models)

        self.app = Starting(build, Timings(process_start()), warmup=warmup, on_failure=self.failures.append)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="info"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> SlowServer:
        self.started = time.time()
        self.thread.start()
        wait_until(lambda: self.server.started, bool, timeout=30, interval=0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def test_not_ready_until_the_slow_load_and_the_warm_up_prediction_are_done(store: ModelStore,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    from prometheus_client import REGISTRY

    def predicted_rows() -> float:  # this process's registry: other in-process tests may have served "lin" too
        return REGISTRY.get_sample_value("modelport_predicted_rows_total", {"model": "lin", "version": "1"}) or 0.0

    caplog.set_level("INFO", "modelport.server")
    before = predicted_rows()
    with SlowServer(store) as server, httpx.Client(base_url=server.url, timeout=5) as client:
        # Listening at once: alive, not ready, predictions refused with a retry hint (the proxy retries them).
        assert client.get("/v2/health/live").status_code == 200
        early = client.post("/predict", json={"features": [1, 2, 3, 4]})
        assert early.status_code == 503 and early.headers["retry-after"] == "1" and "starting" in early.json()["error"]
        answers: list[tuple[float, int]] = []
        deadline = time.monotonic() + 60
        while (not answers or answers[-1][1] != 200) and time.monotonic() < deadline:
            answers.append((time.time(), client.get("/v2/health/ready").status_code))
            time.sleep(0.01)
        ready_at = answers[-1][0]
        assert answers[-1][1] == 200 and {status for _, status in answers[:-1]} == {503}
        assert ready_at - server.started >= LOAD_SECONDS
        # The warm-up: one prediction on a row of zeros (from the signature), finished before the first ready.
        ((_, warmup_end, rows),) = server.calls
        assert rows.shape == (1, 4) and not rows.any() and warmup_end <= ready_at
        assert client.post("/predict", json={"features": [1, 2, 3, 4]}).status_code == 200
        assert "modelport_predicted_rows_total" in client.get("/metrics").text
        assert predicted_rows() - before == 1  # the warm-up is no client's prediction
    assert not server.failures
    (stages,) = [parse_line(r.getMessage()) for r in caplog.records if r.getMessage().startswith("Startup:")]
    assert list(stages) == ["process", *[s for s in STAGES if s != "worker"]]
    assert list(stages.values()) == sorted(stages.values())
    assert stages["loaded"] - stages["imports"] >= LOAD_SECONDS and stages["ready"] - stages["loaded"] >= 0.3


def test_a_given_warm_up_input_is_the_one_predicted(store: ModelStore, tmp_path: Path) -> None:
    body = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP64", "data": [1, 2, 3, 4, 5, 6, 7, 8]}]}
    (tmp_path / "warmup.json").write_text(json.dumps(body))
    with SlowServer(store, warmup={"lin": read_warmup(tmp_path / "warmup.json")}) as server:
        wait_until(lambda: httpx.get(server.url + "/v2/health/ready").status_code, lambda s: s == 200, timeout=60,
                   interval=0.02)
        ((_, _, rows),) = server.calls
        assert rows.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]


def test_a_warm_up_that_fails_stops_the_start_and_says_why(store: ModelStore, tmp_path: Path) -> None:
    body = {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]}  # 3 of 4 features
    (tmp_path / "warmup.json").write_text(json.dumps(body))
    with SlowServer(store, warmup={"lin": read_warmup(tmp_path / "warmup.json")}) as server:
        wait_until(lambda: server.failures, bool, timeout=60, interval=0.02)
        assert httpx.get(server.url + "/v2/health/ready").status_code == 503
    assert "warm-up prediction of 'lin'" in server.failures[0] and "4" in server.failures[0]


def test_a_warm_up_file_that_is_no_v2_request_is_refused(tmp_path: Path) -> None:
    (tmp_path / "warmup.json").write_text('{"features": [1, 2]}')
    with pytest.raises(ModelportError, match="not a v2 inference request"):
        read_warmup(tmp_path / "warmup.json")
    with pytest.raises(ModelportError, match="Cannot read the warm-up input"):
        read_warmup(tmp_path / "missing.json")


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_stops_with_the_reason_when_its_warm_up_fails(store: ModelStore, tmp_path: Path, workers: int) -> None:
    """The command: one process, or forked workers (one of which tells the supervisor why)."""
    body = {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]}
    (tmp_path / "warmup.json").write_text(json.dumps(body))
    out = run_cli("serve", "lin", "--port", str(free_port()), "--workers", str(workers), "--warmup",
                  str(tmp_path / "warmup.json"), env={"MODELPORT_HOME": str(store.home)}, check=False, timeout=120)
    assert out.returncode == 1, out.stderr
    assert "The warm-up prediction of 'lin' (--warmup) failed: Input 'input' has shape [1, 3]" in " ".join(out.stderr.split())


def test_the_check_an_image_build_runs_answers_the_given_warm_up_or_fails(store: ModelStore, tmp_path: Path) -> None:
    """``serve --check --warmup FILE`` (a ``build --warmup`` image's build step): the model loads and answers
    that request, or the check fails with the reason; MODELPORT_WARMUP (the image's ENV) is the same."""
    env = {"MODELPORT_HOME": str(store.home)}
    good = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP64", "data": [1, 2, 3, 4, 5, 6, 7, 8]}]}
    (tmp_path / "good.json").write_text(json.dumps(good))
    out = run_cli("serve", "lin", "--check", "--warmup", str(tmp_path / "good.json"), env=env, timeout=120)
    assert "lin: loaded, warm-up answered" in out.stdout
    bad = {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    out = run_cli("serve", "lin", "--check", env={**env, "MODELPORT_WARMUP": str(tmp_path / "bad.json")}, check=False,
                  timeout=120)
    assert out.returncode == 1 and "The warm-up prediction of 'lin' (--warmup) failed" in " ".join(out.stderr.split())
    out = run_cli("serve", "lin", "--check", "--warmup", f"other={tmp_path / 'good.json'}", env=env, check=False, timeout=120)
    assert out.returncode == 1 and "--warmup names 'other', which is not served here (served: lin)" in out.stderr
