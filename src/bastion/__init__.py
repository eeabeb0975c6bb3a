"""Bastion: a secure-by-default Flask application."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bastion.app import create_app

__version__ = "0.1.0"
__all__ = ["__version__", "create_app"]


def __getattr__(name: str) -> Any:
    # Lazy, so light processes (the HTTP redirector, the PDF text extractor) that import a
    # bastion submodule don't load the whole app and its libraries.
    if name == "create_app":
        from bastion.app import create_app

        return create_app
    raise AttributeError(name)
