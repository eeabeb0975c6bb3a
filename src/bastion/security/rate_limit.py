"""Flask-Limiter wiring: per-IP limits before any session or database work.

Counters live in Redis in the scale-out profile and in-process otherwise (the production
guard refuses in-process counters with more than one worker process). Storage errors are
not swallowed and there is no in-memory fallback: if Redis is down, limited routes answer
503 rather than letting requests through unthrottled (fail closed).
"""

from __future__ import annotations

from flask import Flask

from bastion.extensions import limiter
from bastion.settings import Settings


def init_app(app: Flask, settings: Settings) -> None:
    app.config.update(
        RATELIMIT_STORAGE_URI=settings.ratelimit_storage_uri,
        RATELIMIT_STORAGE_OPTIONS={
            "socket_timeout": settings.redis_timeout_seconds,
            "socket_connect_timeout": settings.redis_timeout_seconds,
        }
        if settings.redis_url
        else {},
        RATELIMIT_STRATEGY="moving-window",
        RATELIMIT_KEY_PREFIX=settings.redis_prefix + "rl",
        RATELIMIT_APPLICATION=settings.ratelimit_default,
        # Headers on every response cost a storage round trip each; 429s still say Retry-After.
        RATELIMIT_HEADERS_ENABLED=False,
        RATELIMIT_SWALLOW_ERRORS=False,
        RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=False,
    )
    limiter.init_app(app)
