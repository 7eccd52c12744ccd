"""The README's tutorial flow run as written: every `$ command` of its console block, compared with the output the
README shows (issue 12: a newcomer following the README gets what it shows)."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.helpers import free_port, run_in_process

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = "## The tutorial's flow: CSV → train → serve → curl"
MODELPORT = f"{sys.executable} -m modelport"  # the `modelport` of the README's lines: this interpreter's


def console_steps(title: str) -> list[tuple[str, list[str]]]:
    """(command, the output lines shown under it) for each `$ ` line of the section's console block."""
    section = (ROOT / "README.md").read_text().split(title, 1)[1]
    block = section.split("```console\n", 1)[1].split("```", 1)[0]
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif line:
            steps[-1][1].append(line)
    return steps


def normalised(lines: list[str]) -> list[str]:
    # The worker count is one per core of the machine serving.
    return [re.sub(r"Starting \d+ workers?", "Starting N workers", line.rstrip()) for line in lines]


def argv_of(command: str, port: int) -> list[str]:
    argv = shlex.split(command.replace("8080", str(port)))
    return [sys.executable, "-m", "modelport", *argv[1:]] if argv[0] == "modelport" else argv


@pytest.mark.long
def test_the_tutorial_flow_gives_what_the_readme_shows(home: Path) -> None:
    steps = console_steps(TUTORIAL)
    assert [shlex.split(c)[0] for c, _ in steps][:3] == ["head", "modelport", "modelport"]
    port = free_port()
    server: subprocess.Popen[str] | None = None
    try:
        for command, shown in steps:
            expected = normalised([line.replace("8080", str(port)) for line in shown])
            argv = argv_of(command, port)
            if argv[3:5] == ["serve", "houses"]:
                argv += ["--port", str(port)]
                server = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                          start_new_session=True)
                lines = read_lines(server, len(expected), timeout=180)
                assert normalised(lines) == expected, command
                continue
            run = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300, env=os.environ)
            assert run.returncode == 0, f"{command}\n{run.stderr}"
            assert normalised(run.stdout.splitlines()) == expected, command
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)


def read_lines(proc: subprocess.Popen[str], n: int, timeout: float) -> list[str]:
    """The first ``n`` lines ``proc`` prints (the serve banner comes once the server answers)."""
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        while len(lines) < n and (line := proc.stdout.readline()):
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    assert len(lines) == n, f"after {timeout:.0f}s the server printed only {lines}"
    return lines


def as_shell(command: str) -> str:
    """A README line for bash, its `modelport` (also after `&&`) this interpreter's."""
    return re.sub(r"(^|&& )modelport ", rf"\g<1>{MODELPORT} ", command)


def run_line(command: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run a README line in ``cwd``; it must succeed."""
    run = subprocess.run(["bash", "-c", as_shell(command)], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, f"{command}\n{run.stdout}\n{run.stderr}"
    return run


def run_modelport_line(command: str, cwd: Path) -> None:
    """A README line of ``modelport`` commands (``a && b``: one after the other, each must succeed), run in
    ``cwd`` by the real entry point in this process: the tutorial's flow and the fresh venv's test run the
    installed command in processes of their own; these lines only read and write the store and files."""
    parts = command.split(" && ")
    assert all(p.startswith("modelport ") for p in parts) and not set("|;<>$`") & set(command), command
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        for part in parts:
            run = run_in_process(*shlex.split(part)[1:], check=False)
            assert run.returncode == 0, f"{command}\n{run.stdout}\n{run.stderr}"


def fenced_blocks(title: str, language: str) -> list[str]:
    """The ```language blocks of the README section that starts with ``title``."""
    section = (ROOT / "README.md").read_text().split(title, 1)[1].split("\n## ", 1)[0]
    return [part.split("```", 1)[0] for part in section.split(f"```{language}\n")[1:]]


def test_the_model_store_section_runs_as_written(home: Path, tmp_path: Path) -> None:
    """Its first bash block, line by line, then its Python example, after the tutorial's `train`."""
    train, _ = console_steps(TUTORIAL)[1]
    commands = [train] + [line.split("  #", 1)[0].strip()
                          for line in fenced_blocks("## The model store", "bash")[0].splitlines() if line.strip()]
    work = tmp_path / "work"  # a directory like the repository's root (examples/), so exports land here
    work.mkdir()
    (work / "examples").symlink_to(ROOT / "examples")
    for command in commands:
        run_modelport_line(command, work)
    (python,) = fenced_blocks("## The model store", "python")
    with pytest.MonkeyPatch.context() as patch:  # as a script run in that directory would
        patch.chdir(work)
        exec(compile(python, "README.md (The model store)", "exec"), {"__name__": "__main__"})


def test_the_kubernetes_section_runs_as_written(home: Path, tmp_path: Path) -> None:
    """Its `modelport k8s` and `helm lint|template` lines in order, with houses:1 and houses:2 in the
    store (what they are does not matter to these commands). Not run here: `modelport build` (the Containers section's, tested with
    the images) and the lines marked as needing a cluster (`kubectl`, `helm install`): no machine of
    this project has one."""
    import numpy as np
    from sklearn.linear_model import LinearRegression

    import modelport as mp
    from tests.k8s.validation import helm

    x = np.random.default_rng(0).normal(size=(40, 4))
    for scale in (1, 2):
        mp.save_model(LinearRegression().fit(x, x.sum(axis=1) * scale), "houses")
    work = tmp_path / "work"
    work.mkdir()
    lines = [line.split("  #", 1) for line in fenced_blocks("## Kubernetes and KServe", "bash")[0].splitlines() if line]
    skipped = [cmd for cmd, *note in lines if "needs a" in "".join(note)]
    assert {cmd.split()[0] for cmd in skipped} == {"modelport", "kubectl", "helm"}  # build, apply, install
    for command in [cmd.strip() for cmd, *note in lines if "needs a" not in "".join(note)]:
        if command.startswith("helm "):
            helm(*shlex.split(command)[1:], cwd=work)
            continue
        run_modelport_line(command, work)
    assert (work / "k8s" / "deployment.yaml").is_file() and (work / "kserve" / "inferenceservice-canary.yaml").is_file()


@pytest.mark.docker
@pytest.mark.timeout(1500)
def test_the_containers_section_runs_as_written(home: Path, tmp_path: Path) -> None:
    """Its bash block line by line on the real engine, with the defaults users get: `python:3.11-slim` is
    this machine's stand-in under the official name (nothing can be pulled here; the proxy image is the
    suite's, MODELPORT_PROXY_IMAGE). The only change to a line: the published port is a free one.
    `logs -f` follows until stopped: it runs until it has printed a line. After the lines whose comments
    promise something, the answers show it."""
    import docker
    import httpx

    from tests.conftest import TEST_BASE_IMAGE

    client = docker.from_env()
    tagged = not client.images.list(name="python:3.11-slim")
    if tagged:
        client.images.get(TEST_BASE_IMAGE).tag("python", "3.11-slim")
    port = free_port()
    train, _ = console_steps(TUTORIAL)[1]
    work = tmp_path / "work"
    work.mkdir()
    (work / "examples").symlink_to(ROOT / "examples")

    def sh(command: str) -> subprocess.CompletedProcess[str]:
        return run_line(command.replace("8080", str(port)), work, timeout=900)

    def versions(n: int = 40) -> set[str]:
        with httpx.Client(timeout=10) as http:
            answers = [http.post(f"http://127.0.0.1:{port}/predict", json={"features": [120.5, 4, 12, 3.2]})
                       for _ in range(n)]
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200][:3]
        return {a.headers["x-model-version"] for a in answers}

    checks = {  # the line as the README writes it: what its comment says
        "modelport build houses:1 --context-only ctx/": lambda: (work / "ctx" / "Dockerfile").is_file(),
        "modelport build houses:1 --warmup warmup.json": lambda: "MODELPORT_WARMUP=/opt/modelport-warmup/warmup.json"
                                                                 in client.images.get("modelport/houses:1").attrs["Config"]["Env"],
        "modelport run houses:1 --port 8080 --cpus 1 --memory 512m": lambda: versions() == {"1"},
        "modelport scale houses 2": lambda: [r["role"] for r in json.loads(sh("modelport ps --json").stdout)
                                             if r["service"] == "houses"].count("model") == 2,
        "modelport deploy houses:2 --replace houses --canary 10": lambda: versions(200) == {"1", "2"},
        "modelport promote houses": lambda: versions() == {"2"},
        "modelport rollback houses": lambda: versions() == {"1"},
        "modelport deploy houses:2 --replace houses": lambda: versions() == {"2"},
        "modelport ps": lambda: "houses-v" in sh("modelport ps").stdout,
    }
    block = fenced_blocks("## Containers", "bash")[0]
    lines = [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]
    try:
        sh(train)
        sh(train)  # houses:2
        for command in lines:
            if command.endswith(" -f"):
                follow = subprocess.Popen(["bash", "-c", as_shell(command)], cwd=work, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True, start_new_session=True)
                try:
                    assert read_lines(follow, 1, timeout=60)
                finally:
                    os.killpg(follow.pid, signal.SIGTERM)
                    follow.wait(30)
                continue
            sh(command)
            if command in checks:
                assert checks.pop(command)(), command
        assert not checks, f"the README no longer has {list(checks)}"
        assert not client.containers.list(all=True, filters={"label": "io.modelport.service=houses"})  # rm --force
    finally:
        subprocess.run(["bash", "-c", f"{MODELPORT} rm --force houses"], capture_output=True, timeout=300)
        for image in client.images.list(name="modelport/houses"):
            client.images.remove(image.id, force=True)
        if tagged:
            client.images.remove("python:3.11-slim")


def test_the_test_command_refuses_an_externally_managed_python(tmp_path: Path) -> None:
    """The README: the test command pip-installs into the first `python3` on PATH, and refuses an externally
    managed system Python (PEP 668) with what to do instead, before installing anything. Debian's own
    /usr/bin/python3 is one (the machines this project's CI runs on are Debian)."""
    system = Path("/usr/bin/python3")
    managed = subprocess.run([str(system), "-c", "import os, sysconfig; print(os.path.exists(os.path.join("
                              "sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED')))"],
                             capture_output=True, text=True).stdout.strip() if system.exists() else ""
    if managed != "True":
        pytest.skip("no externally managed system Python at /usr/bin/python3 on this machine")
    (tmp_path / "python3").symlink_to(system)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    run = subprocess.run(["bash", "scripts/test.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "is an externally managed Python; create a venv first" in run.stderr
    assert "python3 -m venv .venv && . .venv/bin/activate && bash scripts/test.sh" in run.stderr
    assert "Installing" not in run.stdout  # refused before anything was installed
