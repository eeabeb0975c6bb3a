"""Bastion: a secure-by-default Flask application."""

from bastion.app import create_app

__version__ = "0.1.0"
__all__ = ["__version__", "create_app"]
