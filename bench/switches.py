"""Where the GIL changes hands: context switches per request in the workers, by cause.

Run: ``.venv/bin/python -m bench.switches [--profiles embedded,scaleout] [--path /]``

Why this exists: in-process (bench/profile_app.py) a signed-in page costs the app ~1.0 ms of
CPU, yet under wrk the same app code costs its thread ~1.5-1.8 ms (thread CPU time measured
around ``Flask.wsgi_app`` in the worker), and bare Flask grows the same way from a smaller
base. The difference is what the threads do to each other: each time a request thread
lets the GIL go (a system call, an SQLite step, zlib) while other request threads wait,
the GIL may change hands, and every hand-off costs scheduler work and cold caches.

For each profile it starts `bastion serve` and the bare Flask reference under the same
layout, loads each with wrk, and records the workers' ``sched:sched_switch`` events with
Linux perf (DWARF call stacks: libpython has no frame pointers). Each switch is put down
to the C function that let the GIL go (the frame after ``PyEval_RestoreThread``), grouped
into the causes below, and divided by the requests served. Needs ``perf`` and permission
to trace (root, or ``kernel.perf_event_paranoid`` <= 1); it says so and stops otherwise.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from bench import memory, servers, wrk
from bench.client import SESSION_COOKIE, sign_in
from bench.run import USER_EMAIL, USER_NAME, new_password, profile_stores

# The C function that released the GIL (the frame after PyEval_RestoreThread) -> a cause.
CAUSES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("SQLite (sqlite3: execute, step, fetch, bind)", re.compile(r"sqlite|^stmt_|^bind_param")),
    ("TLS reads and writes (_ssl)", re.compile(r"^_ssl__")),
    ("socket modes and waits (gunicorn, redis-py)", re.compile(r"setblocking|^sock_|select$")),
    ("gunicorn's poller (epoll)", re.compile(r"epoll")),
    ("zlib (itsdangerous, per CSRF token)", re.compile(r"^zlib_")),
    ("os.urandom (secrets)", re.compile(r"urandom|getrandom")),
    ("lock and queue waits", re.compile(r"acquire|_queue_|PyThread_")),
    ("file writes and reads (log lines, heartbeat)", re.compile(r"^_Py_write|^_Py_read|utime")),
)
FORCED = "switch interval ran out (forced hand-off)"
OTHER_WAIT = "other GIL waits (e.g. psycopg's C code)"
NOT_GIL = "not a GIL wait (preempted, idle poll, ...)"
# Taking the GIL back after a release, or giving it up (the woken waiter may take the core).
GIL_CALLS = ("PyEval_RestoreThread", "PyEval_SaveThread", "PyEval_AcquireThread")
LINE = re.compile(r"^\s*[0-9a-f]+ (\S+)")
OFFSET = re.compile(r"\+0x[0-9a-f]+$")


def cause_of(frames: Sequence[str]) -> str:
    """The cause of one switch from its call stack (innermost frame first)."""
    for index, frame in enumerate(frames):
        if frame in GIL_CALLS:
            released_by = next((f for f in frames[index + 1 :] if f != "internal_setblocking"), "")
            for label, pattern in CAUSES:
                if pattern.search(released_by):
                    return label
            return OTHER_WAIT
        if (
            frame in ("take_gil", "drop_gil")
            and "_PyEval_EvalFrameDefault" in frames[index + 1 : index + 3]
        ):
            return FORCED
    return NOT_GIL


def count_causes(perf_script: str) -> Counter[str]:
    """Switches per cause in ``perf script`` output (one blank-line separated event each)."""
    causes: Counter[str] = Counter()
    for event in perf_script.split("\n\n"):
        lines = event.strip().splitlines()
        if not lines or "sched_switch" not in lines[0]:
            continue
        frames = []
        for line in lines[1:]:
            match = LINE.match(line)
            if match:
                frames.append(OFFSET.sub("", match.group(1)))
        causes[cause_of(frames)] += 1
    return causes


def perf_ready() -> str | None:
    """None if perf can trace other processes' scheduler events here, else why not."""
    if shutil.which("perf") is None:
        return "perf is not installed (Debian: linux-perf)"
    probe = subprocess.run(
        ["perf", "record", "-q", "-e", "sched:sched_switch", "-o", "/dev/null", "--", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        return f"perf cannot record sched_switch here: {probe.stderr.strip()[:300]}"
    return None


def record(
    pids: list[int], port: int, path: str, headers: dict[str, str] | None, seconds: float
) -> tuple[Counter[str], int]:
    """Switch causes of `pids` while wrk loads `path` for `seconds`; and the requests served."""
    wrk.run(port, path, seconds=1, connections=16, threads=2, headers=headers)  # warm up
    with tempfile.TemporaryDirectory(prefix="bastion-switches-") as folder:
        data = Path(folder) / "perf.data"
        perf = subprocess.Popen(
            [
                *("perf", "record", "-q", "-e", "sched:sched_switch"),
                *("--call-graph", "dwarf,16384", "-p", ",".join(map(str, pids))),
                *("-o", str(data), "--", "sleep", f"{seconds:g}"),
            ],
            stdout=subprocess.DEVNULL,
        )
        time.sleep(0.2)  # perf attached before the load starts
        result = wrk.run(port, path, seconds=seconds, connections=16, threads=2, headers=headers)
        perf.wait(timeout=seconds + 60)
        script = subprocess.run(
            ["perf", "script", "-i", str(data)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    return count_causes(script.stdout), result.requests


def print_table(rows: dict[str, tuple[Counter[str], int]]) -> None:
    labels = [label for label, _ in CAUSES] + [FORCED, OTHER_WAIT, NOT_GIL]
    names = list(rows)
    print(f"{'context switches per request':48s}" + "".join(f"{n:>12s}" for n in names))
    for label in labels:
        cells = "".join(f"{rows[n][0][label] / max(rows[n][1], 1):12.2f}" for n in names)
        print(f"{label:48s}{cells}")
    totals = "".join(f"{sum(rows[n][0].values()) / max(rows[n][1], 1):12.2f}" for n in names)
    print(f"{'total':48s}{totals}")
    print(f"{'requests recorded':48s}" + "".join(f"{rows[n][1]:12d}" for n in names))


def measure_profile(name: str, workdir: Path, path: str, seconds: float) -> None:
    with profile_stores(name, workdir / name) as profile:
        password = new_password()
        server = servers.start_bastion(workdir / name, profile, "bastion")
        bare = None
        try:
            server.create_user(USER_EMAIL, USER_NAME, password)
            context = servers.client_context(server.cafile)
            cookie = sign_in(server.port, context, USER_EMAIL, password)
            headers = {"Cookie": f"{SESSION_COOKIE}={cookie}"} if path == "/" else None
            bare = servers.start_bare(
                workdir / f"{name}-bare", profile, server.cafile, server.keyfile, "bare"
            )
            rows = {
                "bare Flask": record(
                    memory.worker_pids(bare.process.pid), bare.port, path, None, seconds
                ),
                "Bastion": record(
                    memory.worker_pids(server.process.pid), server.port, path, headers, seconds
                ),
            }
        finally:
            server.stop()
            if bare is not None:
                bare.stop()
    print(f"\n== {profile.label}: GET {path} under wrk -c16, {seconds:g} s each")
    print_table(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="context switches per request, by cause")
    parser.add_argument("--profiles", default="embedded,scaleout")
    parser.add_argument("--path", default="/")
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args(argv)
    problem = perf_ready()
    if problem:
        print(f"bench.switches: {problem}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bastion-switches-") as folder:
        for name in args.profiles.split(","):
            measure_profile(name.strip(), Path(folder), args.path, args.seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
