"""Sampling profiles of running gunicorn workers with py-spy (requirements-dev), summarised.

``record`` attaches ``py-spy record --format raw`` (collapsed stacks, ``--nonblocking`` so
the worker is never paused) to each worker for a few seconds: on-CPU samples only by
default (where the CPU goes), or every thread's samples with ``idle=True`` (where the
*time* goes: waits on locks, semaphores and sockets included). ``summarise`` turns the
stacks into "share of the samples whose stack passes through X" for the layers a request
crosses, and lists the hottest functions.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layer:
    """A label and the frame patterns a stack must all contain to count towards it."""

    label: str
    patterns: tuple[str, ...]
    outside_app: bool = False  # count only stacks that are not inside the Flask app call


APP_CALL = r"Flask\.wsgi_app "
REQUEST = r"handle_request \(gunicorn/"

# Where a served page's CPU goes. A sample counts towards every layer its stack passes
# through, so the layers overlap (the app call contains the indented ones).
PAGE_LAYERS: tuple[Layer, ...] = (
    Layer("gunicorn + TLS outside the app (poller, parsing, writes)", (r"\(gunicorn/",), True),
    Layer("  of which TLS (ssl.py)", (r"\(ssl\.py:",), True),
    Layer("Flask app call (everything in the app)", (APP_CALL,)),
    Layer("  per-IP rate limits (enforce_ip_limits: limits + store)", (r"enforce_ip_limits ",)),
    Layer("  session load (store get; SQL: with its owner's row)", (r"SessionManager\.load ",)),
    Layer("  user reload (Bastion's user_loader)", (r"_init_login\.<locals>\.load_user ",)),
    Layer("  CSRF (origin check + Flask-WTF)", (r"\(flask_wtf/|bastion/security/csrf\.py",)),
    Layer("  access policy (incl. the lazy session + user load)", (r"enforce_policy ",)),
    Layer("  template rendering (Jinja)", (r"render_template ",)),
    Layer("  security headers", (r"SecurityHeaders\.apply ",)),
    Layer("  session save", (r"save_session ",)),
    Layer("  access log (structlog + logging)", (r"end_request \(bastion/core/request_log",)),
    Layer("  SQLAlchemy (all)", (r"\(sqlalchemy/",)),
    Layer("  redis-py (all)", (r"\(redis/",)),
    Layer("  psycopg (all)", (r"\(psycopg/",)),
    Layer("  os.urandom (secrets: ids, nonces, tokens)", (r"randbytes |token_bytes ",)),
    Layer("argon2 (password hashing)", (r"\(argon2/",)),
    Layer("limits' in-memory expiry timer thread", (r"_MemoryStorage__expire_events",)),
)

# Where a request thread's wall time goes during the login flood (idle samples included).
FLOOD_LAYERS: tuple[Layer, ...] = (
    Layer("POST /auth/login (the flood)", (r"login \(bastion/accounts/views\.py",)),
    Layer("  hashing (slot wait + argon2 on the guard's threads)", (r"HashGuard\.run ",)),
    Layer("    of which waiting for a slot (hash guard semaphore)", (r"HashGuard\.slot ",)),
    Layer("  rate limits (Flask-Limiter/limits)", (r"\((flask_limiter|limits)/",)),
    Layer(
        "    of which starting limits' expiry Timer thread",
        (r"\(limits/", r"Thread\.start "),
    ),
    Layer("  SQL (SQLAlchemy: session, user, audit, lockout)", (r"\(sqlalchemy/",)),
    Layer("GET / (the signed-in page)", (r"home \(bastion/web/views\.py|enforce_policy ",)),
    Layer("TLS (ssl.py)", (r"\(ssl\.py:",)),
    Layer("access log (structlog + logging)", (r"end_request \(bastion/core/request_log",)),
)

# Wrappers every request passes through: left out of the "hottest functions" list.
_SKIP_HOT = re.compile(
    r"\((threading\.py|concurrent/futures/|gunicorn/workers/|bastion/serving/worker\.py)"
    r"|^(Flask\.(__call__|wsgi_app|full_dispatch_request|preprocess_request|finalize_request"
    r"|process_response|dispatch_request)|_ProxyLookup\.__get__|LocalProxy\.__init__) "
)


@dataclass(frozen=True)
class Summary:
    samples: int
    layers: list[tuple[str, float]]
    hottest: list[tuple[str, float]]
    leaves: list[tuple[str, float]]


def binary() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def record(
    pids: list[int], seconds: float, folder: Path, name: str, *, idle: bool = False
) -> list[subprocess.Popen[bytes]]:
    """Start py-spy on each pid for `seconds`; raw stacks go to folder/name-<pid>.txt."""
    tool = binary()
    if tool is None:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    procs = []
    for pid in pids:
        argv = [
            tool,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(seconds))),
            "--rate",
            "200",
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(folder / f"{name}-{pid}.txt"),
        ]
        if idle:
            argv.append("--idle")
        procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    return procs


def wait(procs: list[subprocess.Popen[bytes]], timeout: float) -> list[str]:
    """Wait for the recorders; return the error output of those that failed."""
    errors = []
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate(timeout=15)
        if proc.returncode != 0:
            errors.append(err.decode(errors="replace").strip()[-500:])
    return errors


def _frames(line: str) -> tuple[list[str], int] | None:
    """One collapsed stack; None for a torn line (--nonblocking may read a frame mid-write)."""
    stack, _, count = line.rstrip("\n").rpartition(" ")
    if not stack or not count.isascii() or not count.isdigit():
        return None
    return stack.split(";"), int(count)


def summarise(
    files: list[Path],
    layers: tuple[Layer, ...] = PAGE_LAYERS,
    *,
    only: str | None = None,
    top: int = 15,
) -> Summary:
    """Aggregate the raw stacks of `files`; with `only`, just stacks with a matching frame."""
    total = 0
    hits: Counter[str] = Counter()
    hottest: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    compiled = [(layer, [re.compile(p) for p in layer.patterns]) for layer in layers]
    app = re.compile(APP_CALL)
    keep = re.compile(only) if only else None
    for path in files:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            parsed = _frames(line)
            if parsed is None:
                continue
            frames, count = parsed
            if keep is not None and not any(keep.search(frame) for frame in frames):
                continue
            total += count
            in_app = any(app.search(frame) for frame in frames)
            for layer, patterns in compiled:
                if layer.outside_app and in_app:
                    continue
                if all(any(p.search(frame) for frame in frames) for p in patterns):
                    hits[layer.label] += count
            leaves[frames[-1]] += count
            for frame in set(frames):
                if not _SKIP_HOT.search(frame):
                    hottest[frame] += count
    if not total:
        return Summary(0, [], [], [])

    def share(counter: Counter[str], names: list[str]) -> list[tuple[str, float]]:
        return [(name, counter[name] / total) for name in names]

    return Summary(
        samples=total,
        layers=share(hits, [layer.label for layer in layers if hits[layer.label]]),
        hottest=share(hottest, [name for name, _ in hottest.most_common(top)]),
        leaves=share(leaves, [name for name, _ in leaves.most_common(top)]),
    )
