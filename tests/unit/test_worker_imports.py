"""What an embedded worker imports: memory per worker is a target (issue 2, <= 70 MiB RSS).

Each module a worker imports stays resident for its life. These modules are big and an
embedded (SQLite) worker never uses them, so building its app must not import them: the
PostgreSQL dialect (~2 MiB; the account lockout's upsert imports it only on PostgreSQL) and
Alembic with Flask-Migrate (~10 MiB; only the CLI and `bastion serve` migrate).
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import sys
from pathlib import Path

NOT_IN_A_WORKER = ("sqlalchemy.dialects.postgresql", "alembic", "flask_migrate")

# Builds the production app exactly as gunicorn's worker does (bastion.serving.wsgi), from
# the environment, and prints which of the modules above got imported.
_PROBE = """
import json, sys
import bastion.serving.wsgi
print(json.dumps(sorted(name for name in {names} if name in sys.modules)))
"""


def test_an_embedded_worker_does_not_import_what_it_never_uses(tmp_path: Path) -> None:
    instance = tmp_path / "instance"
    instance.mkdir(mode=0o700)
    env = {
        "PATH": "/usr/bin:/bin",
        "BASTION_ENV": "production",
        "BASTION_INSTANCE_PATH": str(instance),
        "BASTION_SECRET_KEY": secrets.token_urlsafe(48),
        "BASTION_DATA_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "BASTION_PUBLIC_URL": "https://127.0.0.1:8443",
    }
    probe = _PROBE.format(names=repr(NOT_IN_A_WORKER))
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    imported = json.loads(done.stdout.strip().splitlines()[-1])
    assert imported == []
