"""`make bench`: Bastion under gunicorn + TLS against bare Flask, and the numbers issue 2/3 set.

Run: ``.venv/bin/python -m bench.run [--rounds 3] [--seconds 5] [--profiles embedded,scaleout]``

For each profile (embedded: SQLite + in-process stores, 1 worker x 8 threads; scale-out:
PostgreSQL + Redis, 2 workers x 4 threads) it starts `bastion serve` with production
settings in a temporary instance folder (rate limits raised: all load comes from 127.0.0.x),
creates a user with `bastion users create`, and measures:

1. memory per gunicorn worker (RSS, USS from /proc/<pid>/smaps_rollup), idle and after
   serving N sign-ins at the real argon2 parameters (the first 20 one at a time, for the
   server-side sign-in time in the app's access log; the rest 4 at a time), and the floor
   under it: the RSS of a fresh interpreter that imports only the third-party modules a
   worker loads (bench/memory.py `import_floor`);
2. throughput and latency with wrk (``--latency``) of the signed-in home page and the login
   page, against the bare Flask app (bench/bare_app.py: the same templates, no controls)
   under the same gunicorn layout and certificate, in alternating rounds; per round req/s,
   p50, p99 and bastion/bare, then the median of the per-round ratios. With several
   workers, a run where wrk's keep-alive connections all sat on one worker (one GIL for
   the whole load: bare Flask measured 1,500 req/s so against 4,700 split) is run again
   (up to 5 times); each round shows the workers' CPU split, and a round still one-sided
   is left out of the median;
3. the login flood (issue 3): a paced probe times the signed-in home page while idle and
   while 48 source addresses flood POST /auth/login with failed sign-ins; p99 ratio, 5xx;
4. (scale-out) Redis commands and round trips per signed-in page, on a private
   redis-server so other clients of the shared one can't pollute the count.

Then the argon2id verify time (bench/hash_params.py's measurement) and a summary table. The
output is saved to bench/results/ (gitignored) as text and JSON. The machine's load average
is printed alongside: on a shared 2-core machine every number here moves with it.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import http.client
import json
import os
import platform
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bastion.core.logging import BATCH_SECONDS
from bench import memory, redis_count, servers, spy, wrk
from bench.client import SESSION_COOKIE, Client, ClientError, sign_in
from bench.flood import COOKIE_ENV
from bench.servers import Bastion, Profile

RESULTS = Path(__file__).resolve().parent / "results"
USER_EMAIL = "bench@example.com"
USER_NAME = "Bench User"
PAGES = (("home", "/"), ("login", "/auth/login"))

# Targets (issue 2 "Tests", issue 3 "The hashing CPU must not become the DoS lever").
TARGET_RATIO = {"embedded": 0.5, "scaleout": 0.4}
TARGET_ROUND_TRIPS = 2.0
TARGET_RSS_MIB = 70.0
TARGET_VERIFY_MS = 25.0
TARGET_FLOOD_P99_RATIO = 2.0


# ----------------------------------------------------------------------------- output
@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    summary: list[tuple[str, str, str, bool | None]] = field(default_factory=list)

    def out(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        cells = [[str(h) for h in headers], *[[_cell(v) for v in row] for row in rows]]
        widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
        for n, row in enumerate(cells):
            line = "  ".join(
                value.ljust(widths[i]) if i == 0 else value.rjust(widths[i])
                for i, value in enumerate(row)
            )
            self.out(line.rstrip())
            if n == 0:
                self.out("  ".join("-" * w for w in widths))

    def section(self, title: str) -> None:
        self.out()
        self.out(f"== {title}  [{load_average()}]")

    def target(self, metric: str, measured: str, target: str, passed: bool | None) -> None:
        self.summary.append((metric, measured, target, passed))


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def revision() -> str:
    """The commit the working tree is at, and whether it has uncommitted changes."""
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() or "unknown"


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load avg {one:.2f} {five:.2f} {fifteen:.2f}"


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (the value below which `pct`% of the samples fall)."""
    ordered = sorted(v for v in values if v == v)  # drop NaN (failed requests)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# ------------------------------------------------------------------- access log reader
@dataclass
class AccessLog:
    """The app's JSON access lines (stderr of `bastion serve`), read incrementally."""

    path: Path
    offset: int = 0

    @staticmethod
    def settle() -> None:
        """Wait until the workers have written the lines they hold (core/logging.py)."""
        time.sleep(BATCH_SECONDS + 0.2)

    def skip(self) -> None:
        self.settle()
        self.offset = self.path.stat().st_size

    def read(self) -> list[dict[str, Any]]:
        self.settle()
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        entries = []
        for line in data[:end].splitlines():
            if line.startswith(b"{"):
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("event") == "request":
                    entries.append(entry)
        return entries


# A run counts as one-sided when one worker did less than this share of the workers' CPU:
# each keep-alive connection stays with the worker that accepted it, and which worker that
# is depends on which woke first. Balanced, each of two does about half.
ONE_SIDED_SHARE = 0.2
ONE_SIDED_RETRIES = 5


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` so far, from /proc/<pid>/stat."""
    fields = memory.stat_fields(pid)  # utime and stime: fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class SplitRun:
    result: wrk.WrkResult
    smallest_share: float  # the least busy worker's share of the workers' CPU (1.0: one)
    runs: int


def run_split_evenly(master: int, run: Callable[[], wrk.WrkResult]) -> SplitRun:
    """`run()`, again (up to ONE_SIDED_RETRIES times) while one worker sat it out."""
    workers = memory.worker_pids(master)
    runs = 0
    while True:
        runs += 1
        before = [cpu_seconds(pid) for pid in workers]
        result = run()
        used = [cpu_seconds(pid) - start for pid, start in zip(workers, before, strict=True)]
        share = min(used) / sum(used) if len(used) > 1 and sum(used) > 0 else 1.0
        if share >= ONE_SIDED_SHARE or runs > ONE_SIDED_RETRIES:
            return SplitRun(result, share, runs)


def statuses(entries: list[dict[str, Any]], method: str, path: str) -> Counter[int]:
    return Counter(
        int(e["status"]) for e in entries if e.get("method") == method and e.get("path") == path
    )


# ----------------------------------------------------------------------------- helpers
def new_password() -> str:
    return "bench " + secrets.token_urlsafe(18)


def run_parallel(count: int, concurrency: int, task: Callable[[int], None]) -> None:
    lock = threading.Lock()
    todo = iter(range(count))

    def worker() -> None:
        while True:
            with lock:
                n = next(todo, None)
            if n is None:
                return
            task(n)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)


def one_login(server: Bastion, password: str, tries: int = 20) -> tuple[int, int]:
    """Sign in once as a fresh browser; retry 503s (hashing guard). Return (status, 503s)."""
    context = servers.client_context(server.cafile)
    busy = 0
    for _ in range(tries):
        client = Client(server.port, context)
        try:
            answer = client.login(USER_EMAIL, password)
        finally:
            client.close()
        if answer.status != 503:
            return answer.status, busy
        busy += 1
        time.sleep(0.05)
    return 503, busy


# ------------------------------------------------------------------------ 1. memory
def bench_memory_and_logins(
    report: Report, profile: Profile, server: Bastion, password: str, logins: int
) -> dict[str, Any]:
    report.section(f"{profile.name}: memory per worker and sign-ins")
    idle = memory.workers_usage(server.process.pid)
    log = AccessLog(server.process.stderr_path)
    log.skip()
    sequential = min(20, logins)
    codes: Counter[int | str] = Counter()
    busy_total = 0
    lock = threading.Lock()

    def login(_: int) -> None:
        nonlocal busy_total
        try:
            status, busy = one_login(server, password)
        except (OSError, http.client.HTTPException, ClientError) as exc:
            with lock:
                codes[f"error {type(exc).__name__}"] += 1
            return
        with lock:
            codes[status] += 1
            busy_total += busy

    started = time.monotonic()
    run_parallel(sequential, 1, login)
    run_parallel(logins - sequential, 4, login)
    elapsed = time.monotonic() - started
    time.sleep(0.5)
    after = memory.workers_usage(server.process.pid)
    entries = [
        e
        for e in log.read()
        if e.get("method") == "POST" and e.get("path") == "/auth/login" and e.get("status") == 303
    ]
    server_ms = [float(e["ms"]) for e in entries[:sequential]]
    report.out(
        f"{logins} sign-ins in {elapsed:.1f}s: answers {dict(codes)}, "
        f"503 (hash guard) retried {busy_total}x"
    )
    rows = []
    for before in idle:
        late = next((u for u in after if u.pid == before.pid), None)
        rows.append(
            [
                before.pid,
                before.rss_mib,
                before.uss_mib,
                late.rss_mib if late else "gone",
                late.uss_mib if late else "gone",
            ]
        )
    report.table(["worker pid", "RSS idle", "USS idle", "RSS after", "USS after"], rows)
    report.out("(MiB; after = after the sign-ins above)")
    median_ms = statistics.median(server_ms) if server_ms else float("nan")
    report.out(
        f"POST /auth/login server time (app access log, {len(server_ms)} sequential sign-ins): "
        f"median {median_ms:.1f} ms, min {min(server_ms, default=float('nan')):.1f} ms"
    )
    floor = memory.import_floor(servers.BIN / "python", server.env, server.instance.parent)
    report.out(
        f"floor: a fresh interpreter importing only the {floor.modules} third-party modules a "
        f"worker loads (no Bastion code, no app): RSS {floor.rss_mib:.1f} MiB"
        + (f"; could not import {floor.missed}" if floor.missed else "")
    )
    report.target(
        f"{profile.name}: RSS of the worker's libraries imported alone (floor)",
        f"{floor.rss_mib:.1f} MiB",
        "- (the floor under the above)",
        None,
    )
    rss_after = max((u.rss_mib for u in after), default=float("nan"))
    growth = max(
        (u.rss_mib - b.rss_mib for u in after for b in idle if u.pid == b.pid),
        default=float("nan"),
    )
    ok = codes.get(303, 0) == logins
    report.target(
        f"{profile.name}: RSS per worker after {logins} sign-ins",
        f"{rss_after:.1f} MiB (+{growth:.1f} vs idle)"
        + ("" if ok else f" ({codes.get(303, 0)} ok)"),
        f"<= {TARGET_RSS_MIB:.0f} MiB",
        rss_after <= TARGET_RSS_MIB and ok,
    )
    return {
        "idle": [u.__dict__ for u in idle],
        "after": [u.__dict__ for u in after],
        "logins": dict(codes),
        "busy_retries": busy_total,
        "login_server_ms": server_ms,
        "login_server_median_ms": median_ms,
        "import_floor": floor.__dict__,
    }


# -------------------------------------------------------------------- 2. throughput
def bench_throughput(
    report: Report,
    profile: Profile,
    server: Bastion,
    bare: servers.Bare,
    cookie: str,
    args: argparse.Namespace,
) -> dict[str, Any]:
    report.section(
        f"{profile.name}: throughput vs bare Flask (wrk -t{args.wrk_threads} "
        f"-c{args.connections} -d{args.seconds:g}s, {args.rounds} rounds)"
    )
    log = AccessLog(server.process.stderr_path)
    results: dict[str, Any] = {}

    def load(port: int, path: str, seconds: float) -> wrk.WrkResult:
        headers = {"Cookie": f"{SESSION_COOKIE}={cookie}"} if path == "/" else None
        return wrk.run(
            port,
            path,
            seconds=seconds,
            connections=args.connections,
            threads=args.wrk_threads,
            headers=headers,
        )

    same = compare_pages(report, server, bare, cookie)
    for _, path in PAGES:  # warm up both servers (templates, pools, TLS contexts)
        load(bare.port, path, args.warmup)
        load(server.port, path, args.warmup)
    for page, path in PAGES:
        rows = []
        ratios = []
        odd: Counter[int] = Counter()
        bare_errors = 0
        per_round = []
        reruns: list[str] = []
        comparable: list[float] = []  # the rounds where both spread the load over all workers
        for n in range(args.rounds):
            order = ("bare", "bastion") if n % 2 == 0 else ("bastion", "bare")
            measured: dict[str, SplitRun] = {}
            for which in order:
                target = server if which == "bastion" else bare
                if which == "bastion":
                    log.skip()
                measured[which] = run_split_evenly(
                    target.process.pid, functools.partial(load, target.port, path, args.seconds)
                )
                if which == "bastion":
                    seen = statuses(log.read(), "GET", path)
                    odd.update({s: c for s, c in seen.items() if s != 200})
            b, a = measured["bare"].result, measured["bastion"].result
            ratio = a.rps / b.rps if b.rps else float("nan")
            ratios.append(ratio)
            split = "/".join(f"{measured[w].smallest_share:.0%}" for w in ("bare", "bastion"))
            rows.append(
                [n + 1, b.rps, b.p50_ms, b.p99_ms, a.rps, a.p50_ms, a.p99_ms, f"{ratio:.2f}"]
                + ([split] if profile.workers > 1 else [])
            )
            for which, taken in measured.items():
                if taken.runs > 1:
                    reruns.append(f"round {n + 1}: {which} ran {taken.runs} times")
            if all(taken.smallest_share >= ONE_SIDED_SHARE for taken in measured.values()):
                comparable.append(ratio)
            per_round.append(
                {
                    "bare": {k: v for k, v in b.__dict__.items() if k != "raw"},
                    "bastion": {k: v for k, v in a.__dict__.items() if k != "raw"},
                    "ratio": ratio,
                    "smallest_worker_share": {
                        w: measured[w].smallest_share for w in ("bare", "bastion")
                    },
                    "runs": {w: measured[w].runs for w in ("bare", "bastion")},
                    "load": os.getloadavg(),
                }
            )
            bare_errors += b.non_2xx_3xx + b.socket_errors
            errors = b.non_2xx_3xx + b.socket_errors + a.non_2xx_3xx + a.socket_errors
            if errors:
                report.out(
                    f"  round {n + 1}: wrk saw non-2xx/3xx or socket errors: bare "
                    f"{b.non_2xx_3xx + b.socket_errors}, bastion {a.non_2xx_3xx + a.socket_errors}"
                )
        report.out(f"{page} page GET {path}")
        report.table(
            [
                "round",
                "bare req/s",
                "p50 ms",
                "p99 ms",
                "bastion req/s",
                "p50 ms",
                "p99 ms",
                "ratio",
            ]
            + (["least busy worker's CPU share bare/bastion"] if profile.workers > 1 else []),
            rows,
        )
        if reruns:
            report.out(
                f"  one-sided runs (a worker did under {ONE_SIDED_SHARE:.0%} of the work) were "
                f"run again: {'; '.join(reruns)}"
            )
        if comparable and len(comparable) < len(ratios):
            report.out(
                f"  {len(ratios) - len(comparable)} round(s) stayed one-sided: the median "
                "leaves them out"
            )
        median = statistics.median(comparable or ratios)
        report.out(f"median bastion/bare: {median:.2f}  (target >= {TARGET_RATIO[profile.name]})")
        if odd:
            report.out(f"  bastion answered non-200: {dict(odd)}  <- check the cookie/limits")
        if bare_errors:
            report.out(f"  bare Flask answered {bare_errors} errors: its rounds are not valid")
        report.out(f"  [{load_average()}]")
        problems = [
            text
            for text, bad in (
                ("bastion non-200", odd),
                ("bare errors", bare_errors),
                ("pages differ", not same[page]),
                ("every round one-sided", not comparable),
            )
            if bad
        ]
        report.target(
            f"{profile.name}: {page} page req/s vs bare Flask",
            f"{median:.2f}x" + (f" INVALID: {', '.join(problems)}" if problems else ""),
            f">= {TARGET_RATIO[profile.name]}x",
            median >= TARGET_RATIO[profile.name] and not problems,
        )
        results[page] = {"rounds": per_round, "median_ratio": median, "non_200": dict(odd)}
    if args.profile_seconds > 0:
        results["profile"] = {
            page: profile_workers(report, profile, server, load, args, page, path)
            for page, path in PAGES
        }
    return results


_TOKEN_VALUE = re.compile(r'(<input[^>]*name="csrf_token"[^>]*value=")[^"]*(")')
_NONCE = re.compile(r'(nonce=")[^"]*(")')


def _normalised(body: bytes) -> list[str]:
    text = body.decode("utf-8", "replace")
    return _NONCE.sub(r"\1\2", _TOKEN_VALUE.sub(r"\1\2", text)).splitlines()


def compare_pages(
    report: Report, server: Bastion, bare: servers.Bare, cookie: str
) -> dict[str, bool]:
    """Check that bare Flask serves the very page Bastion does (CSRF tokens aside)."""
    context = servers.client_context(server.cafile)
    same: dict[str, bool] = {}
    for page, path in PAGES:
        bodies = []
        for port in (server.port, bare.port):
            client = Client(port, context)
            if path == "/":
                client.cookies[SESSION_COOKIE] = cookie
            try:
                answer = client.request("GET", path)
            finally:
                client.close()
            bodies.append((answer.status, answer.body))
        (status_a, body_a), (status_b, body_b) = bodies
        diff = list(
            difflib.unified_diff(
                _normalised(body_a), _normalised(body_b), "bastion", "bare", n=0, lineterm=""
            )
        )
        same[page] = status_a == status_b == 200 and not diff
        verdict = "same HTML" if same[page] else "DIFFERENT"
        report.out(
            f"{page} page: bastion {status_a} {len(body_a)} B, bare {status_b} {len(body_b)} B "
            f"-> {verdict} (CSRF token values aside)"
        )
        for line in diff[:12]:
            report.out(f"    {line[:150]}")
    return same


def profile_workers(
    report: Report,
    profile: Profile,
    server: Bastion,
    load: Callable[[int, str, float], wrk.WrkResult],
    args: argparse.Namespace,
    page: str,
    path: str,
) -> dict[str, Any]:
    """py-spy on every worker during one more wrk run of `path`."""
    if spy.binary() is None:
        report.out("(no py-spy: install requirements-dev.lock for a profile of the workers)")
        return {}
    pids = memory.worker_pids(server.process.pid)
    folder = RESULTS / args.stamp
    name = f"{profile.name}-{page}"
    recorders = spy.record(pids, args.profile_seconds, folder, name)
    time.sleep(0.5)  # let py-spy attach
    during = load(server.port, path, args.profile_seconds)
    errors = spy.wait(recorders, args.profile_seconds + 60)
    if errors or not recorders:
        report.out(f"py-spy failed: {errors[0] if errors else 'not started'}")
        return {"errors": errors}
    summary = spy.summarise([folder / f"{name}-{pid}.txt" for pid in pids], top=12)
    if not summary.samples:
        report.out("py-spy recorded no samples")
        return {}
    report.out()
    report.out(
        f"where the workers' CPU goes: py-spy, {summary.samples} on-CPU samples over "
        f"{args.profile_seconds:g}s of wrk on GET {path} ({during.rps:.0f} req/s while "
        f"sampled); raw stacks in bench/results/{args.stamp}/{name}-<pid>.txt"
    )
    report.table(
        ["layer (a sample counts in every layer on its stack)", "CPU share"],
        [[label, f"{share:.1%}"] for label, share in summary.layers],
    )
    report.out()
    report.table(
        ["hottest functions (inclusive, request wrappers left out)", "CPU share"],
        [[frame[:110], f"{share:.1%}"] for frame, share in summary.hottest],
    )
    report.out()
    report.table(
        ["hottest leaf functions (self)", "CPU share"],
        [[frame[:110], f"{share:.1%}"] for frame, share in summary.leaves[:10]],
    )
    return {
        "samples": summary.samples,
        "layers": summary.layers,
        "hottest": summary.hottest,
        "leaves": summary.leaves,
    }


# ------------------------------------------------------------------------- 3. flood
def _python_module(argv: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def bench_flood(
    report: Report, profile: Profile, server: Bastion, cookie: str, args: argparse.Namespace
) -> dict[str, Any]:
    report.section(
        f"{profile.name}: signed-in home page during a login flood "
        f"({args.flood_sources} source addresses"
        f"{', a new TLS connection per attempt' if args.flood_reconnect else ''})"
    )
    env = servers.clean_environ(**{COOKIE_ENV: cookie})
    common = ["--port", str(server.port), "--cafile", str(server.cafile)]
    probe_argv = [
        "bench.flood",
        "probe",
        *common,
        "--seconds",
        str(args.flood_seconds),
        "--rate",
        str(args.probe_rate),
    ]
    log = AccessLog(server.process.stderr_path)
    idle_ms: list[float] = []
    flood_ms: list[float] = []
    server_home: list[float] = []
    server_post: list[float] = []
    probe_status: Counter[str] = Counter()
    flood_status: Counter[str] = Counter()
    rows = []
    floods = []
    spied: list[Path] = []
    for n in range(args.flood_rounds):
        idle = _python_module(probe_argv, env, args.flood_seconds + 60)
        ramp = 2.0
        flooder = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.flood",
                "flood",
                *common,
                "--seconds",
                str(ramp + args.flood_seconds + 0.5),
                "--sources",
                str(args.flood_sources),
                *(["--reconnect"] if args.flood_reconnect else []),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        recorders: list[subprocess.Popen[bytes]] = []
        try:
            time.sleep(ramp)
            log.skip()
            if n == args.flood_rounds - 1 and args.profile_seconds > 0:
                pids = memory.worker_pids(server.process.pid)
                folder = RESULTS / args.stamp
                recorders = spy.record(
                    pids, args.flood_seconds - 1, folder, f"{profile.name}-flood", idle=True
                )
                spied = [folder / f"{profile.name}-flood-{pid}.txt" for pid in pids]
            during = _python_module(probe_argv, env, args.flood_seconds + 60)
            entries = log.read()
            spy_errors = spy.wait(recorders, args.flood_seconds + 60)
            out, err = flooder.communicate(timeout=args.flood_seconds + 90)
        finally:
            if flooder.poll() is None:
                flooder.kill()
                flooder.wait(timeout=15)
        if flooder.returncode != 0:
            raise RuntimeError(f"flood failed: {err.strip()[-2000:]}")
        flood = json.loads(out)
        flood["probe_cpu_seconds"] = during.get("cpu_seconds")
        floods.append(flood)
        idle_ms.extend(idle["latencies_ms"])
        flood_ms.extend(during["latencies_ms"])
        home_ms = [float(e["ms"]) for e in entries if e["method"] == "GET" and e["path"] == "/"]
        post_ms = [
            float(e["ms"]) for e in entries if e["method"] == "POST" and e["path"] == "/auth/login"
        ]
        server_home.extend(home_ms)
        server_post.extend(post_ms)
        probe_status.update({f"idle {k}": v for k, v in idle["statuses"].items()})
        probe_status.update({f"flood {k}": v for k, v in during["statuses"].items()})
        flood_status.update(flood["statuses"])
        rows.append(
            [
                n + 1,
                percentile(idle["latencies_ms"], 50),
                percentile(idle["latencies_ms"], 99),
                percentile(during["latencies_ms"], 50),
                percentile(during["latencies_ms"], 99),
                percentile(home_ms, 99),
                flood["rate"],
                percentile(post_ms, 50),
                flood["statuses"].get("503 hash guard", 0),
            ]
        )
    report.out(
        f"probe: GET / signed in, {args.probe_rate:g} req/s from 2 connections, "
        f"{args.flood_seconds:g}s per phase; flood: failed sign-ins, "
        + ("a new connection per attempt" if args.flood_reconnect else "one keep-alive connection")
        + " per address, as fast as answered"
    )
    report.table(
        [
            "round",
            "idle p50",
            "idle p99",
            "flood p50",
            "flood p99",
            "(in app p99)",
            "flood POST/s",
            "POST in app p50",
            "guard 503s",
        ],
        rows,
    )
    report.out(
        "(ms; p50/p99 are what the probe waited; 'in app' = the app's own time for the same "
        "requests, from its access log: the difference is queueing in front of the app)"
    )
    idle_p99, flood_p99 = percentile(idle_ms, 99), percentile(flood_ms, 99)
    ratio = flood_p99 / idle_p99 if idle_p99 else float("nan")
    report.out(
        f"all rounds: idle p99 {idle_p99:.1f} ms ({len(idle_ms)} samples), "
        f"flood p99 {flood_p99:.1f} ms ({len(flood_ms)} samples) -> {ratio:.2f}x"
    )
    report.out(f"probe answers: {dict(sorted(probe_status.items()))}")
    report.out(f"flood answers: {dict(sorted(flood_status.items()))}")
    report.out(
        "  (401: refused sign-in; 429: rate limit; '503 hash guard': the hashing-concurrency "
        "guard's fast refusal, Retry-After: 1 - both expected for the flood)"
    )
    client_cpu = sum(f["cpu_seconds"] for f in floods) / sum(f["seconds"] for f in floods)
    report.out(
        f"the flood generator itself used {client_cpu:.0%} of a core on this machine "
        "(an attacker's CPU would not be the server's)"
    )
    profile_data: dict[str, Any] = {}
    if spied:
        if spy_errors:
            report.out(f"py-spy failed: {spy_errors[0]}")
        else:
            summary = spy.summarise(spied, spy.FLOOD_LAYERS, only=spy.REQUEST)
            report.out()
            report.out(
                f"where the request threads' time goes during the flood (py-spy --idle, "
                f"{summary.samples} samples of gunicorn's request threads, last round):"
            )
            report.table(
                ["layer (wall time, waits included)", "share"],
                [[label, f"{share:.1%}"] for label, share in summary.layers],
            )
            profile_data = {"samples": summary.samples, "layers": summary.layers}
    probe_5xx = sum(v for k, v in probe_status.items() if k.split()[1].startswith("5"))
    probe_errors = sum(v for k, v in probe_status.items() if k.split()[1] == "error")
    flood_5xx = sum(
        v for k, v in flood_status.items() if k.startswith("5") and k != "503 hash guard"
    )
    report.target(
        f"{profile.name}: home p99 during login flood vs idle",
        f"{ratio:.2f}x ({idle_p99:.0f} -> {flood_p99:.0f} ms)",
        f"<= {TARGET_FLOOD_P99_RATIO:.0f}x",
        ratio <= TARGET_FLOOD_P99_RATIO,
    )
    guard = flood_status.get("503 hash guard", 0)
    too_many = flood_status.get("429", 0)
    report.target(
        f"{profile.name}: 5xx during flood (probe + flood, guard 503s excluded)",
        f"{probe_5xx + flood_5xx} (guard 503: {guard}, 429: {too_many})",
        "0",
        probe_5xx + flood_5xx == 0,
    )
    report.target(
        f"{profile.name}: probe requests with no answer (idle + flood)",
        str(probe_errors),
        "0",
        probe_errors == 0,
    )
    return {
        "idle_p99_ms": idle_p99,
        "flood_p99_ms": flood_p99,
        "ratio": ratio,
        "server_home_p99_ms": percentile(server_home, 99),
        "server_post_p50_ms": percentile(server_post, 50),
        "rounds": rows,
        "probe_statuses": dict(probe_status),
        "flood_statuses": dict(flood_status),
        "floods": floods,
        "profile": profile_data,
    }


# --------------------------------------------------------------------- 4. Redis count
def bench_redis(
    report: Report,
    workdir: Path,
    profile: Profile,
    password: str,
    requests: int,
    extra_env: dict[str, str],
) -> dict[str, Any] | None:
    report.section("scaleout: Redis traffic per request (private redis-server, MONITOR)")
    private = servers.start_private_redis(workdir / "redis")
    if private is None:
        report.out("no /usr/bin/redis-server: Redis round trips not measured")
        report.target("scaleout: Redis round trips per signed-in page", "n/a", "<= 2", None)
        return None
    try:
        counted = Profile(
            "scaleout",
            profile.workers,
            profile.threads,
            database_url=profile.database_url,
            redis_url=private.url,
            redis_prefix=profile.redis_prefix,
            keys=profile.keys,
        )
        server = servers.start_bastion(
            workdir / "bastion-redis", counted, "bastion-redis", **extra_env
        )
        try:
            context = servers.client_context(server.cafile)
            cookie = sign_in(server.port, context, USER_EMAIL, password)
            results: dict[str, Any] = {}
            rows = []
            for page, path in PAGES:
                client = Client(server.port, context)
                if path == "/":
                    client.cookies[SESSION_COOKIE] = cookie
                bad: Counter[int] = Counter()

                def send(
                    client: Client = client, path: str = path, bad: Counter[int] = bad
                ) -> None:
                    if path != "/":
                        client.cookies.clear()  # a new visitor each time
                    answer = client.request("GET", path)
                    if answer.status != 200:
                        bad[answer.status] += 1

                for _ in range(20):
                    send()
                count = redis_count.count(private.port, requests, send)
                client.close()
                breakdown = ", ".join(f"{k} {v:.2f}" for k, v in count.breakdown.items())
                rows.append(
                    [
                        f"{page} GET {path}",
                        count.round_trips_per_request,
                        count.commands_per_request,
                    ]
                )
                problems = f"; non-200 {dict(bad)}" if bad else ""
                report.out(f"{page}: per request {breakdown}{problems}")
                results[page] = count.__dict__
            report.table(["page", "round trips/request", "commands/request (INFO)"], rows)
            report.out(
                "(INFO counts the commands a Lua script runs too: the rate limit's one EVALSHA "
                "round trip executes ~4 more)"
            )
            trips = results["home"]["round_trips_per_request"]
            report.target(
                "scaleout: Redis round trips per signed-in page",
                f"{trips:.2f} ({results['home']['commands_per_request']:.1f} commands)",
                f"<= {TARGET_ROUND_TRIPS:.0f}",
                trips <= TARGET_ROUND_TRIPS,
            )
            return results
        finally:
            server.stop()
    finally:
        private.stop()


# ----------------------------------------------------------------------- 5. argon2
def bench_verify(report: Report, runs: int) -> dict[str, Any]:
    from bastion.security import passwords
    from bench import hash_params

    report.section(f"argon2id verify at the app's parameters ({runs} runs, in this process)")
    params = passwords.OWASP_PARAMETERS
    result = hash_params.measure("OWASP minimum (the app's)", params, runs)
    passwords.configure(params)
    stored = passwords.hash_password("correct horse battery staple")
    cpu = []
    for _ in range(runs):
        start = time.thread_time()
        passwords.verify_password(stored, "wrong horse battery staple")
        cpu.append((time.thread_time() - start) * 1000)
    cpu_ms = statistics.median(cpu)
    report.out(
        f"m={params.memory_cost} KiB t={params.time_cost} p={params.parallelism}: "
        f"wall median {result.median_ms:.1f} ms "
        f"(min {result.min_ms:.1f}, max {result.max_ms:.1f}); "
        f"CPU time median {cpu_ms:.1f} ms"
    )
    report.out("(wall time includes waiting for a core: compare it with the load average)")
    report.target(
        "argon2id verify (median wall; CPU)",
        f"{result.median_ms:.1f} ms; {cpu_ms:.1f} ms",
        f"<= {TARGET_VERIFY_MS:.0f} ms",
        result.median_ms <= TARGET_VERIFY_MS,
    )
    return {"wall_median_ms": result.median_ms, "min_ms": result.min_ms, "cpu_median_ms": cpu_ms}


# ---------------------------------------------------------------------------- driver
@contextmanager
def profile_stores(name: str, workdir: Path) -> Iterator[Profile]:
    if name == "embedded":
        yield Profile("embedded", workers=1, threads=8)
        return
    prefix = f"bench-{secrets.token_hex(4)}:"
    with servers.pg_schema() as schema:
        try:
            yield Profile(
                "scaleout",
                workers=2,
                threads=4,
                database_url=servers.pg_url(schema),
                redis_url=servers.REDIS_URL,
                redis_prefix=prefix,
                keys=servers.write_keys(workdir / "keys"),
            )
        finally:
            servers.delete_redis_keys(servers.REDIS_URL, prefix)


def bench_profile(
    report: Report, name: str, workdir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with profile_stores(name, workdir / name) as profile:
        report.section(f"profile {profile.label}")
        password = new_password()
        server = servers.start_bastion(workdir / name, profile, "bastion", **args.extra_env)
        try:
            server.create_user(USER_EMAIL, USER_NAME, password)
            results["memory"] = bench_memory_and_logins(
                report, profile, server, password, args.logins
            )
            context = servers.client_context(server.cafile)
            cookie = sign_in(server.port, context, USER_EMAIL, password)
            if not args.skip_throughput:
                bare = servers.start_bare(
                    workdir / f"{name}-bare", profile, server.cafile, server.keyfile, "bare"
                )
                try:
                    bare_idle = memory.workers_usage(bare.process.pid)
                    report.out(
                        "bare Flask reference, idle workers: "
                        + ", ".join(
                            f"RSS {u.rss_mib:.1f} / USS {u.uss_mib:.1f} MiB" for u in bare_idle
                        )
                    )
                    results["bare_memory"] = [u.__dict__ for u in bare_idle]
                    results["throughput"] = bench_throughput(
                        report, profile, server, bare, cookie, args
                    )
                finally:
                    bare.stop()
            if not args.skip_flood:
                results["flood"] = bench_flood(report, profile, server, cookie, args)
        finally:
            server.stop()
        if name == "scaleout" and not args.skip_redis:
            results["redis"] = bench_redis(
                report,
                workdir / "redis-count",
                profile,
                password,
                args.redis_requests,
                args.extra_env,
            )
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Bastion benchmarks (make bench)")
    parser.add_argument("--profiles", default="embedded,scaleout")
    parser.add_argument("--rounds", type=int, default=3, help="bare/bastion rounds (>= 3)")
    parser.add_argument("--seconds", type=float, default=5.0, help="wrk duration per run")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--logins", type=int, default=50)
    parser.add_argument("--flood-seconds", type=float, default=10.0)
    parser.add_argument("--flood-rounds", type=int, default=2)
    parser.add_argument("--flood-sources", type=int, default=48)
    parser.add_argument(
        "--flood-reconnect",
        action="store_true",
        help="the flood opens a new TLS connection for every attempt (not the default)",
    )
    parser.add_argument("--probe-rate", type=float, default=40.0)
    parser.add_argument("--redis-requests", type=int, default=200)
    parser.add_argument("--verify-runs", type=int, default=20)
    parser.add_argument(
        "--profile-seconds",
        type=float,
        default=5.0,
        help="py-spy the workers during one more wrk run of each page (0: skip)",
    )
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-flood", action="store_true")
    parser.add_argument("--skip-redis", action="store_true")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="BASTION_X=VALUE",
        help="extra setting for every bastion server (experiments, e.g. hashing guard tuning)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    args.extra_env = {}
    for item in args.server_env:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("BASTION_"):
            parser.error(f"--server-env wants BASTION_NAME=VALUE, not {item!r}")
        args.extra_env[key] = value
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk.binary()  # fail early, before any server starts
    report = Report()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    args.stamp = stamp
    started = time.monotonic()
    report.out(f"Bastion bench {stamp}: {os.cpu_count()} CPUs, Python {platform.python_version()}")
    report.out(f"code: {revision()}")
    report.out(f"start: {load_average()}  (other work on this machine skews every number)")
    if args.extra_env:
        report.out(f"extra server settings: {args.extra_env}")
    report.data["args"] = vars(args)
    report.data["revision"] = revision()
    report.data["load_start"] = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="bastion-bench-"))
    exit_code = 0
    try:
        for name in [p.strip() for p in args.profiles.split(",") if p.strip()]:
            report.data[name] = bench_profile(report, name, workdir, args)
        report.data["verify"] = bench_verify(report, args.verify_runs)
    except Exception as exc:  # report what was measured so far, and why it stopped
        report.out(f"\nbench aborted: {type(exc).__name__}: {exc}")
        report.out(traceback.format_exc().rstrip())
        report.out(f"server output kept in {workdir}")
        args.keep = True
        exit_code = 2
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    report.section(f"summary ({time.monotonic() - started:.0f}s)")
    report.table(
        ["metric", "measured", "target", "result"],
        [
            [m, v, t, "n/a" if ok is None else ("PASS" if ok else "FAIL")]
            for m, v, t, ok in report.summary
        ],
    )
    report.data["summary"] = report.summary
    report.data["load_end"] = os.getloadavg()
    report.out(f"end: {load_average()}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stamp}.txt").write_text("\n".join(report.lines) + "\n", encoding="utf-8")
    (RESULTS / f"{stamp}.json").write_text(
        json.dumps(report.data, indent=2, default=str) + "\n", encoding="utf-8"
    )
    print(f"saved bench/results/{stamp}.txt and .json")
    return exit_code


if __name__ == "__main__":
    raise SystemExit(main())
