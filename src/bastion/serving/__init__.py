"""Serving Bastion in production: `bastion serve`, the gunicorn config and the HTTP redirector.

- ``bootstrap``: the instance folder and its first-run secrets (secret key, TLS files).
- ``tls``: the self-signed certificate and the TLS policy gunicorn enforces.
- ``gunicorn_conf``: the production gunicorn configuration (``-c python:…``).
- ``wsgi``: the WSGI entry point gunicorn's workers load.
- ``redirect`` / ``redirect_conf``: the plain-HTTP → HTTPS redirector, a second small server.
- ``command``: the ``bastion serve`` command that puts these together.
"""
