"""The home page, the health endpoints and the CSP report endpoint."""
