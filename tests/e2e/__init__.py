"""Real-browser tests (Chromium through playwright)."""
