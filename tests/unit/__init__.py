"""Unit tests: pure functions and single components, no app and no server (seconds)."""
