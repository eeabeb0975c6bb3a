"""Redis traffic per request, counted on a private redis-server that only the app uses.

Two numbers:

- commands processed (``INFO stats`` total_commands_processed before/after, minus the
  INFO calls themselves, measured with an empty interval). Redis counts the commands a Lua
  script runs as well, so Flask-Limiter's one EVALSHA shows up as ~5 commands;
- round trips, from ``MONITOR``: each command a client sends is one round trip, except that
  a MULTI ... EXEC transaction (one redis-py pipeline write) is one, and commands a script
  runs (logged as ``[0 lua]``) are none.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.servers import LOOPBACK

_LINE = re.compile(r'^\+[\d.]+ \[\d+ ([^\]]+)\] "([^"]+)"')


def _command(sock: socket.socket, *args: str) -> bytes:
    payload = f"*{len(args)}\r\n".encode()
    for arg in args:
        data = arg.encode()
        payload += f"${len(data)}\r\n".encode() + data + b"\r\n"
    sock.sendall(payload)
    buffer = sock.recv(65536)
    if buffer.startswith(b"$"):  # bulk string: read until the announced length arrived
        header, _, rest = buffer.partition(b"\r\n")
        size = int(header[1:])
        while len(rest) < size + 2:
            more = sock.recv(65536)
            if not more:
                break
            rest += more
        return rest[:size]
    return buffer


def total_commands(sock: socket.socket) -> int:
    info = _command(sock, "INFO", "stats").decode()
    match = re.search(r"total_commands_processed:(\d+)", info)
    if match is None:
        raise RuntimeError("INFO stats has no total_commands_processed")
    return int(match.group(1))


@dataclass
class Monitor:
    """A MONITOR connection collecting (client, command) pairs in a thread."""

    port: int
    entries: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._sock = socket.create_connection((LOOPBACK, self.port), timeout=5)
        self._sock.sendall(b"MONITOR\r\n")
        self._buffer = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._sock.settimeout(0.2)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            self._buffer += chunk
            *lines, self._buffer = self._buffer.split(b"\r\n")
            for raw in lines:
                match = _LINE.match(raw.decode("utf-8", "replace"))
                if match:
                    self.entries.append((match.group(1), match.group(2).lower()))

    def stop(self) -> list[tuple[str, str]]:
        time.sleep(0.3)  # let the last lines arrive
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()
        return self.entries


def round_trips(entries: list[tuple[str, str]], exclude: set[str]) -> tuple[int, Counter[str]]:
    """Round trips and a per-command breakdown of the clients' own commands."""
    trips = 0
    kinds: Counter[str] = Counter()
    in_multi: dict[str, list[str]] = {}
    for client, command in entries:
        if client == "lua" or client in exclude:
            continue
        if command == "multi":
            in_multi[client] = []
            continue
        if client in in_multi:
            if command in {"exec", "discard"}:
                kinds["multi[" + ",".join(in_multi.pop(client)) + "]"] += 1
                trips += 1
            else:
                in_multi[client].append(command)
            continue
        kinds[command] += 1
        trips += 1
    return trips, kinds


@dataclass(frozen=True)
class RedisCount:
    requests: int
    commands_per_request: float
    round_trips_per_request: float
    breakdown: dict[str, float]


def count(port: int, requests: int, send: Callable[[], None]) -> RedisCount:
    """Call `send` `requests` times; count the Redis traffic it caused on the server."""
    with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
        mine = "{}:{}".format(*sock.getsockname()[:2])
        first = total_commands(sock)
        overhead = total_commands(sock) - first  # what one INFO call adds by itself
        monitor = Monitor(port)
        time.sleep(0.2)
        before = total_commands(sock)
        for _ in range(requests):
            send()
        after = total_commands(sock)
        entries = monitor.stop()
    commands = after - before - overhead
    trips, kinds = round_trips(entries, exclude={mine})
    return RedisCount(
        requests=requests,
        commands_per_request=commands / requests,
        round_trips_per_request=trips / requests,
        breakdown={name: n / requests for name, n in kinds.most_common()},
    )
