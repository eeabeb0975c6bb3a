"""Process-level tuning for the servers: the Server header, heap behaviour, parent death.

Everything here is best effort and guarded: on a platform without the feature the call
returns False and the server runs as before.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Mapping

# How every refusal to start begins (`bastion serve`, gunicorn's on_starting): one line.
REFUSAL = "bastion: refusing to start: "

# The environment variable that tells the redirector which process to die with.
PARENT_PID_ENV = "BASTION_SERVE_PID"

# What gunicorn writes in its `Server:` header instead of "gunicorn". gunicorn adds that
# header itself, after the application's headers, so the app cannot remove it; the neutral
# value gives scanners no product or version to match against CVE lists (ASVS 13.4.6).
SERVER_HEADER = "webserver"

# glibc <malloc.h>: mallopt(M_MMAP_THRESHOLD, bytes).
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 * 1024

# <sys/prctl.h>: prctl(PR_SET_PDEATHSIG, signal).
_PR_SET_PDEATHSIG = 1


def neutral_server_header() -> None:
    """Make gunicorn announce `Server: webserver` instead of its product name.

    gunicorn builds the header from the module global ``gunicorn.http.wsgi.SERVER`` for
    each response (HTTP/1 and HTTP/2), and ``SERVER_SOFTWARE`` (with the version) for the
    WSGI environ; setting both here, in the master before it forks, covers every worker.
    """
    import gunicorn.http.wsgi

    gunicorn.http.wsgi.SERVER = SERVER_HEADER
    gunicorn.http.wsgi.SERVER_SOFTWARE = SERVER_HEADER


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    # musl and other C libraries have no (or a no-op) mallopt; only glibc has this symbol.
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    return libc


def limit_heap_growth(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Serve every allocation of `threshold` bytes or more from its own mmap (glibc only).

    argon2id allocates a 19 MiB block per hash. glibc mmaps blocks that big, but after the
    first one is freed it raises its *dynamic* mmap threshold above 19 MiB, so every later
    hash is carved from the heap (one per thread arena) and that memory stays resident
    after ``free()``: a worker with 8 threads grows by up to 8 x 19 MiB and never shrinks.
    Setting M_MMAP_THRESHOLD explicitly turns the dynamic adjustment off: the buffer is
    mmapped for each hash and returned to the OS by ``munmap`` as soon as it is freed.
    """
    libc = _glibc()
    if libc is None:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold) == 1)


HUGEPAGE_TUNABLE = "glibc.malloc.hugetlb=1:glibc.malloc.arena_max=1"


def with_hugepage_tunable(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` plus Bastion's GLIBC_TUNABLES for gunicorn, unless the operator set it.

    - ``glibc.malloc.hugetlb=1``: the price of `limit_heap_growth` is that every hash maps a
      fresh 19 MiB block and faults in ~4,900 small pages (measured here: +10-13 ms of
      system CPU per verify, on top of ~25 ms). With this tunable (glibc >= 2.35; ignored
      elsewhere) malloc asks for transparent huge pages on what it maps (madvise), so the
      same block takes ~10 faults: +3 ms. Memory is still returned at free().
    - ``glibc.malloc.arena_max=1``: one malloc arena for all request threads instead of one
      per thread, each growing its own fragments; the GIL serialises most allocations
      anyway and argon2's block is mmapped outside the arenas. make bench: RSS per worker
      after 50 sign-ins 71.1-71.7 -> 69.8 MiB.

    It must be in the environment before the process starts, hence set by `bastion serve`
    for the gunicorn it execs.
    """
    env = dict(environ)
    env.setdefault("GLIBC_TUNABLES", HUGEPAGE_TUNABLE)
    return env


def die_with_parent(parent_pid: int, sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to send `sig` to this process when its parent exits (PR_SET_PDEATHSIG).

    Used by the redirector, whose parent becomes the main gunicorn master through exec:
    however that master ends (SIGTERM, SIGINT, a crash, SIGKILL), the redirector follows.
    If the parent is already gone (it died before we asked), exit at once.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return False
    prctl.restype = ctypes.c_int
    if prctl(ctypes.c_int(_PR_SET_PDEATHSIG), ctypes.c_ulong(sig), 0, 0, 0) != 0:
        return False
    if os.getppid() != parent_pid:
        raise SystemExit(0)
    return True


__all__ = [
    "PARENT_PID_ENV",
    "REFUSAL",
    "SERVER_HEADER",
    "die_with_parent",
    "limit_heap_growth",
    "neutral_server_header",
    "with_hugepage_tunable",
]
