"""gunicorn configuration of the plain-HTTP redirector (`bastion.serving.redirect`).

`bastion serve` binds the port itself (so a busy port is a one-line refusal, not five
retries) and hands the socket over as ``--bind fd://N``; run on its own, this binds
BASTION_HOST:BASTION_HTTP_PORT. One process, a few threads: it only answers redirects.
It runs the app's worker class (`bastion.serving.worker`) for its slow-client limits:
with plain gthread, four connections that each sent half a request line held its four
threads, and it answered nobody for as long as they stayed open.
"""

from __future__ import annotations

import os
from typing import Any

from bastion.serving.net import address
from bastion.serving.process import PARENT_PID_ENV, REFUSAL, die_with_parent, neutral_server_header
from bastion.settings import Settings, SettingsError

try:
    settings = Settings.from_env()
except SettingsError as exc:
    raise SystemExit(REFUSAL + str(exc)) from None

wsgi_app = "bastion.serving.redirect:create_app()"
bind = [address(settings.host, settings.http_port)]
worker_class = "bastion.serving.worker.LaneThreadWorker"
workers = 1
threads = 4
timeout = 10
graceful_timeout = 2
proc_name = "bastion-redirect"
forwarded_allow_ips = ""
accesslog = None  # request lines may carry one-time tokens of links opened over http://
errorlog = "-"
loglevel = "warning"
control_socket_disable = True

neutral_server_header()


def on_starting(server: Any) -> None:
    # Started by `bastion serve`, whose process becomes the main gunicorn master: end
    # with it, however it ends.
    parent = os.environ.get(PARENT_PID_ENV)
    if parent and parent.isdigit():
        die_with_parent(int(parent))
