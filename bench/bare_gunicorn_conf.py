"""gunicorn configuration for the bare Flask reference (``-c python:bench.bare_gunicorn_conf``).

The same layout as ``bastion.serving.gunicorn_conf``: gthread workers, BENCH_WORKERS x
BENCH_THREADS, TLS from the same certificate and key with Bastion's TLS policy and its
per-worker context cache (so handshakes cost the same), no gunicorn access log.

``bastion/serving/tls.py`` is loaded from its file: importing ``bastion.serving`` would run
``bastion/__init__.py``, which imports the whole app into the master (and so into every
worker), and the reference's memory would no longer be bare Flask's.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any


def _load_tls() -> Any:
    package = importlib.util.find_spec("bastion")  # finds the folder, runs nothing
    if package is None or not package.submodule_search_locations:
        raise RuntimeError("the bastion package is not installed")
    path = Path(next(iter(package.submodule_search_locations))) / "serving" / "tls.py"
    spec = importlib.util.spec_from_file_location("bench_bastion_tls", path)
    if spec is None or spec.loader is None:
        raise RuntimeError("cannot load bastion/serving/tls.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tls = _load_tls()

wsgi_app = "bench.bare_app:app"
bind = [os.environ["BENCH_BIND"]]
worker_class = "gthread"
workers = int(os.environ.get("BENCH_WORKERS", "1"))
threads = int(os.environ.get("BENCH_THREADS", "8"))
timeout = 30
graceful_timeout = 10
preload_app = False
proc_name = "bench-bare"
certfile = os.environ["BENCH_CERTFILE"]
keyfile = os.environ["BENCH_KEYFILE"]
accesslog = None
errorlog = "-"
loglevel = "warning"
control_socket_disable = True

_contexts = tls.ContextCache()


def ssl_context(conf: Any, default_ssl_context_factory: Any) -> Any:
    return _contexts.get((conf.certfile, conf.keyfile), default_ssl_context_factory)
