"""The WSGI entry point gunicorn's workers load: the app, built from the environment."""

from __future__ import annotations

from bastion.app import create_app

app = create_app()
