"""Security version floors: what is installed, what is locked and what is declared.

Flask 3.1.3 / Werkzeug 3.1.6 fix published advisories (session key fallback handling,
safe_join on Windows device names, multipart resource use); gunicorn 23 fixes request
smuggling; marshmallow 4.1.2 and flask-cors 6.0 fix their own advisories. The lock file
must pin at or above them, and every pin carries a sha256 hash so `pip --require-hashes`
refuses a tampered download.
"""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
FLOORS = {
    "flask": Version("3.1.3"),
    "werkzeug": Version("3.1.6"),
    "gunicorn": Version("23"),
    "marshmallow": Version("4.1.2"),
    "flask-cors": Version("6.0"),
}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}\b")


def parse_lock(path: Path) -> dict[str, tuple[Version, int]]:
    """Each pinned package -> (version, number of sha256 hashes on its entry)."""
    pins: dict[str, tuple[Version, int]] = {}
    current: str | None = None
    for line in path.read_text().splitlines():
        match = PIN.match(line)
        if match:
            current = canonicalize_name(match.group(1))
            pins[current] = (Version(match.group(2)), len(HASH.findall(line)))
        elif current is not None and line.startswith((" ", "\t")):
            pinned, hashes = pins[current]
            pins[current] = (pinned, hashes + len(HASH.findall(line)))
        elif line.strip() and not line.lstrip().startswith("#"):
            current = None
    return pins


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_installed_version_meets_the_floor(name: str) -> None:
    assert Version(version(name)) >= FLOORS[name]


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_locked_version_meets_the_floor(name: str) -> None:
    pins = parse_lock(ROOT / "requirements.lock")

    assert name in pins, f"{name} is not pinned in requirements.lock"
    assert pins[name][0] >= FLOORS[name]


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_declared_floor_is_not_lowered(name: str) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {
        canonicalize_name(req.name): req.specifier
        for req in map(Requirement, project["dependencies"])
    }

    assert name in declared, f"{name} is not a declared dependency"
    lower_bounds = [Version(s.version) for s in declared[name] if s.operator in {">=", ">"}]
    assert lower_bounds, f"{name} has no lower bound in pyproject.toml"
    assert max(lower_bounds) >= FLOORS[name]


@pytest.mark.parametrize("lock", ["requirements.lock", "requirements-dev.lock"])
def test_every_pin_carries_a_sha256_hash(lock: str) -> None:
    pins = parse_lock(ROOT / lock)

    assert len(pins) >= 10
    unhashed = sorted(name for name, (_, hashes) in pins.items() if hashes == 0)
    assert unhashed == []


def test_lock_parser_catches_a_missing_hash_and_a_low_pin(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text(
        "flask==3.1.2 \\\n"
        "    --hash=sha256:" + "a" * 64 + "\n"
        "    # via -r requirements.in\n"
        "werkzeug==3.1.9\n"
        "    # via flask\n"
    )

    pins = parse_lock(lock)

    assert pins["flask"] == (Version("3.1.2"), 1)
    assert pins["flask"][0] < FLOORS["flask"]
    assert pins["werkzeug"] == (Version("3.1.9"), 0)
