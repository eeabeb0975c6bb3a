"""gunicorn workers from /proc: which they are, and their RSS, PSS and USS in MiB."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROC = Path("/proc")

# Run in the server's environment: the app a worker loads, then the names of every module
# it brought in that is not Bastion's own.
_LIST_THIRD_PARTY = """
import json, sys
import gunicorn.workers.gthread
import bastion.serving.wsgi
print(json.dumps([n for n in sys.modules if n.partition(".")[0] not in ("bastion", "__main__")]))
"""
# Run in a fresh interpreter: import those modules alone, then report RSS (kB) and misses.
_IMPORT_ALONE = """
import importlib, json, sys
missed = []
for name in json.load(sys.stdin):
    try:
        importlib.import_module(name)
    except Exception:
        missed.append(name)
rss = next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmRSS:"))
print(json.dumps({"rss_kb": int(rss), "modules": len(sys.modules), "missed": missed}))
"""


@dataclass(frozen=True)
class Usage:
    pid: int
    rss_mib: float
    pss_mib: float
    uss_mib: float


def children(pid: int) -> list[int]:
    """The direct children of `pid` (the kernel's list, else a scan of /proc/*/stat)."""
    found: list[int] = []
    task_dir = PROC / str(pid) / "task"
    try:
        for task in task_dir.iterdir():
            text = (task / "children").read_text()
            found.extend(int(part) for part in text.split())
        return sorted(set(found))
    except OSError:
        pass
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = stat_fields(int(entry.name))
        except OSError:
            continue
        if int(fields[1]) == pid:  # field 4 of /proc/<pid>/stat: the parent's pid
            found.append(int(entry.name))
    return sorted(found)


def stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat from field 3 (state) on: the command name before it, in
    parentheses, may contain spaces."""
    stat = (PROC / str(pid) / "stat").read_text()
    return stat[stat.rfind(")") + 2 :].split()


def cmdline(pid: int) -> str:
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def worker_pids(master: int) -> list[int]:
    """gunicorn workers of `master`; the HTTP redirector (another gunicorn) is left out."""
    return [pid for pid in children(master) if "redirect_conf" not in cmdline(pid)]


def usage(pid: int) -> Usage:
    """RSS, PSS and USS (Private_Clean + Private_Dirty) from /proc/<pid>/smaps_rollup."""
    values: dict[str, int] = {}
    for line in (PROC / str(pid) / "smaps_rollup").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
            values[parts[0][:-1]] = int(parts[1])  # kB
    uss = values.get("Private_Clean", 0) + values.get("Private_Dirty", 0)
    return Usage(
        pid=pid,
        rss_mib=values.get("Rss", 0) / 1024,
        pss_mib=values.get("Pss", 0) / 1024,
        uss_mib=uss / 1024,
    )


def workers_usage(master: int) -> list[Usage]:
    return [usage(pid) for pid in worker_pids(master)]


@dataclass(frozen=True)
class ImportFloor:
    rss_mib: float
    modules: int
    missed: list[str]


def import_floor(python: Path, env: Mapping[str, str], cwd: Path) -> ImportFloor:
    """RSS of a fresh interpreter that only imports the third-party modules a worker loads.

    No Bastion code, no app, no connections, no gunicorn arbiter: the floor that the chosen
    libraries alone put under every worker's RSS, measured in the same run as the workers.
    """
    names = _last_json_line(python, _LIST_THIRD_PARTY, cwd, env=env)
    found = _last_json_line(python, _IMPORT_ALONE, cwd, stdin=json.dumps(names))
    return ImportFloor(found["rss_kb"] / 1024, found["modules"], found["missed"])


def _last_json_line(
    python: Path, code: str, cwd: Path, env: Mapping[str, str] | None = None, stdin: str = ""
) -> Any:
    """Run `code` in `python`; the JSON on its last line of output."""
    done = subprocess.run(
        [str(python), "-c", code],
        input=stdin,
        env=None if env is None else dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])
