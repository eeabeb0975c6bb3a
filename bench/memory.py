"""gunicorn workers from /proc: which they are, and their RSS, PSS and USS in MiB."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


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
