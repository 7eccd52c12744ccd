"""The load generator: wrk with a Lua script that POSTs one JSON body, and the parsing of its report."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError

# wrk's `done` hook runs once after the run, with exact counters: printing them
# as JSON beats parsing the human summary ("1.23ms", "12.3k").
LUA = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[{body}]==]

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,'
    .. '"p50_us":%f,"p99_us":%f}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # responses >= 400 (wrk's "non-2xx or 3xx") + socket errors
    requests: int


def check_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise BenchError("wrk is not installed: apt-get install -y wrk")
    return wrk


def write_script(body: object, path: Path) -> Path:
    text = json.dumps(body, separators=(",", ":"))
    if "]==]" in text:
        raise BenchError("request body cannot be embedded in the Lua script")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(LUA.format(body=text))
    return path


def wrk(url: str, script: Path, connections: int, seconds: float, threads: int = 2) -> Load:
    argv = [
        check_wrk(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish: {' '.join(argv)}") from None
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-500:]}")
    return parse(done.stdout)


def parse(stdout: str) -> Load:
    line = next((ln for ln in stdout.splitlines() if ln.startswith("BENCH ")), None)
    if line is None:
        raise BenchError(f"no BENCH line in wrk output:\n{stdout[-1000:]}")
    r = json.loads(line.removeprefix("BENCH "))
    errors = r["status"] + r["connect"] + r["read"] + r["write"] + r["timeout"]
    return Load(
        rps=r["requests"] / (r["duration_us"] / 1e6),
        p50_ms=r["p50_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
        errors=errors,
        requests=r["requests"],
    )
