"""The data-key helper: MultiFernet with rotation, values bound to their context."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from flask import Flask

from bastion.security import crypto


def use_keys(app: Flask, *keys: str) -> None:
    app.extensions["bastion.data_cipher"] = crypto.build_cipher(keys)


def test_round_trip_and_context_binding(app: Flask) -> None:
    with app.app_context():
        sealed = crypto.encrypt("JBSWY3DPEHPK3PXP", context="totp:1")
        assert "JBSWY3DPEHPK3PXP" not in sealed
        opened = crypto.decrypt(sealed, context="totp:1")
        assert opened.value == "JBSWY3DPEHPK3PXP"
        assert opened.stale is False
        with pytest.raises(crypto.DecryptionFailed):
            crypto.decrypt(sealed, context="totp:2")
        with pytest.raises(crypto.DecryptionFailed):
            crypto.decrypt(sealed[:-4] + "AAAA", context="totp:1")


def test_rotation_reads_old_values_and_marks_them_stale(app: Flask) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    with app.app_context():
        use_keys(app, old)
        sealed = crypto.encrypt("seed", context="c")
        use_keys(app, new, old)
        opened = crypto.decrypt(sealed, context="c")
        assert (opened.value, opened.stale) == ("seed", True)
        resealed = crypto.encrypt("seed", context="c")
        assert crypto.decrypt(resealed, context="c").stale is False
        use_keys(app, new)  # the old key retired: re-sealed values still open
        assert crypto.decrypt(resealed, context="c").value == "seed"
        with pytest.raises(crypto.DecryptionFailed):
            crypto.decrypt(sealed, context="c")


def test_no_key_means_no_encryption() -> None:
    with pytest.raises(crypto.DataKeyMissing):
        crypto.build_cipher(())
