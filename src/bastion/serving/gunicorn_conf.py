"""The production gunicorn configuration: ``gunicorn -c python:bastion.serving.gunicorn_conf``.

`bastion serve` uses it for the embedded profile; a scale-out node runs the same command
(see docs/deploy.md). Everything comes from the ``BASTION_*`` environment through
`Settings`, so the app and its server can't disagree.

- One worker process with threads by default: in-process rate limits are only correct in
  one process, so `on_starting` refuses more workers without Redis. It checks
  ``server.cfg.workers`` — the number gunicorn will really fork, after command-line flags,
  ``GUNICORN_CMD_ARGS`` and ``WEB_CONCURRENCY`` — not just BASTION_WORKERS.
- The worker is gthread with two request queues (`bastion.serving.worker`): a login
  flood's connections wait behind the pages.
- Log lines go out in batches once a worker has loaded the app (`post_worker_init`,
  `bastion.core.logging`).
- TLS 1.2+ with AEAD ciphers only (`ssl_context`, see `bastion.serving.tls`).
- ``forwarded_allow_ips`` matches BASTION_TRUSTED_PROXIES: with no trusted proxy, no client
  (not even one on 127.0.0.1) may set the scheme with X-Forwarded-Proto; ProxyFix in the
  app trusts exactly that many X-Forwarded-For hops.
- No gunicorn access log: the app writes its own access line, with token paths redacted
  and no query strings; gunicorn's would log raw request lines (one-time links included).
- gunicorn's runtime control socket (new in 25.1) is off: it could raise the worker count
  past the guard above, and it is one more local interface to secure.
"""

from __future__ import annotations

import os
from typing import Any

from bastion.core import logging as app_logging
from bastion.serving import tls
from bastion.serving.bootstrap import BootstrapError, tls_files
from bastion.serving.net import address
from bastion.serving.process import REFUSAL, limit_heap_growth, neutral_server_header
from bastion.settings import Settings, SettingsError

LOOPBACK_PROXIES = "127.0.0.1,::1"


def _refuse(reason: str) -> SystemExit:
    return SystemExit(REFUSAL + reason)


try:
    settings = Settings.from_env()
except SettingsError as exc:  # a one-line reason, not a traceback from gunicorn's loader
    raise _refuse(str(exc)) from None

try:
    _tls = tls_files(settings.instance_path, os.environ)
except BootstrapError as exc:
    raise _refuse(str(exc)) from None

# ------------------------------------------------------------------ server settings
wsgi_app = "bastion.serving.wsgi:app"
bind = [address(settings.host, settings.port)]
worker_class = "bastion.serving.worker.LaneThreadWorker"
workers = settings.workers
threads = settings.threads
timeout = 30
graceful_timeout = 10
preload_app = False  # each worker builds its own app, engine and pools after the fork
proc_name = "bastion"
certfile = str(_tls.cert)
keyfile = str(_tls.key)
forwarded_allow_ips = LOOPBACK_PROXIES if settings.trusted_proxies > 0 else ""
accesslog = None
errorlog = "-"
loglevel = "info"
control_socket_disable = True

# gunicorn writes `Server: gunicorn` itself (the app can't remove it); make it say nothing.
neutral_server_header()


# ---------------------------------------------------------------------------- hooks
def on_starting(server: Any) -> None:
    """Refuse, with a one-line reason, a configuration that would be unsafe."""
    if server.cfg.workers > 1 and settings.redis_url is None:
        raise _refuse(
            f"gunicorn would run {server.cfg.workers} worker processes but rate limits are "
            "in-process (no BASTION_REDIS_URL): each process would count separately"
        )
    try:
        settings.check()
    except SettingsError as exc:
        raise _refuse(str(exc)) from None
    allowed = list(server.cfg.forwarded_allow_ips)
    if "*" in allowed:
        raise _refuse("forwarded_allow_ips='*' would let any client claim https")
    if allowed and settings.trusted_proxies == 0:
        raise _refuse("forwarded_allow_ips is set but BASTION_TRUSTED_PROXIES is 0")
    for path in (server.cfg.certfile, server.cfg.keyfile):
        if not path or not os.path.isfile(path):
            raise _refuse(
                f"TLS file {path or '(none)'} is missing: run `bastion serve` once to create "
                "a self-signed pair, or set BASTION_TLS_CERT and BASTION_TLS_KEY"
            )


def nworkers_changed(server: Any, new_value: int, old_value: int | None) -> None:
    """Keep the worker guard true at run time too (SIGTTIN adds a worker)."""
    if old_value is not None and new_value > 1 and settings.redis_url is None:
        server.log.error(
            "refusing %s workers: rate limits are in-process (no BASTION_REDIS_URL)", new_value
        )
        server.num_workers = old_value


def post_fork(server: Any, worker: Any) -> None:
    # In each worker, before the app is loaded: argon2's 19 MiB buffers get mmapped and
    # returned to the OS after every hash instead of staying resident in the heap (see
    # bastion.serving.process.limit_heap_growth).
    limit_heap_growth()


def post_worker_init(worker: Any) -> None:
    # The app is loaded: from now on its log lines go out in batches (core/logging.py).
    app_logging.start_batching()


_contexts = tls.ContextCache()


def ssl_context(conf: Any, default_ssl_context_factory: Any) -> Any:
    """gunicorn's default context (cert, key) with Bastion's TLS policy on top.

    gthread calls this for every connection; the cache builds the context once per worker
    (and again when the certificate files change).
    """
    return _contexts.get((conf.certfile, conf.keyfile), default_ssl_context_factory)
