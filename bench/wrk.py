"""Run Debian's wrk against 127.0.0.1 (bounded in time) and parse its ``--latency`` report."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

from bench.servers import LOOPBACK

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
_PERCENTILE = re.compile(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


class WrkError(RuntimeError):
    """wrk is missing or failed."""


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx_3xx: int
    socket_errors: int
    raw: str


def binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise WrkError("wrk is not installed (make bench installs it: apt-get install -y wrk)")
    return found


def parse(output: str) -> WrkResult:
    percentiles = {p: float(v) * _UNITS[u] for p, v, u in _PERCENTILE.findall(output)}
    rps = _RPS.search(output)
    total = _TOTAL.search(output)
    if rps is None or total is None or "50" not in percentiles or "99" not in percentiles:
        raise WrkError(f"cannot parse wrk output:\n{output}")
    non_2xx = _NON_2XX.search(output)
    sockets = _SOCKET.search(output)
    return WrkResult(
        rps=float(rps.group(1)),
        p50_ms=percentiles["50"],
        p99_ms=percentiles["99"],
        requests=int(total.group(1)),
        non_2xx_3xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in sockets.groups()) if sockets else 0,
        raw=output,
    )


def run(
    port: int,
    path: str,
    *,
    seconds: float,
    connections: int,
    threads: int,
    headers: dict[str, str] | None = None,
) -> WrkResult:
    """Load https://127.0.0.1:`port``path` for `seconds` and return the parsed report."""
    argv = [
        binary(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--timeout",
        "10s",
        "--latency",
    ]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    argv.append(f"https://{LOOPBACK}:{port}{path}")
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + 30, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"wrk did not finish within {seconds + 30:.0f}s") from exc
    if done.returncode != 0:
        raise WrkError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return parse(done.stdout)
