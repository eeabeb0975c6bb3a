"""A WSGI app that shows what gunicorn told it about the client (for the proxy-header tests)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = json.dumps(
        {
            "remote_addr": environ.get("REMOTE_ADDR"),
            "url_scheme": environ.get("wsgi.url_scheme"),
            "server_software": environ.get("SERVER_SOFTWARE"),
        }
    ).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]
