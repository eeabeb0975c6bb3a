"""The README's configuration table names every setting the app reads."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from bastion.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_documented() -> None:
    documented = set(re.findall(r"`(BASTION_[A-Z0-9_]+)`", README.read_text()))
    expected = {f"BASTION_{spec.name.upper()}" for spec in dataclasses.fields(Settings)}
    missing = sorted(expected - documented)
    assert not missing, f"README configuration table lacks: {missing}"
