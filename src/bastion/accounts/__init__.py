"""Accounts: registration, confirmation, sign-in, sign-out, profile and first-admin setup."""
