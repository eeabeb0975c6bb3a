"""Security tests: each sends a real attack and fails when the control it proves is removed."""
