"""Tests in a real headless Chromium (Debian's, driven by Playwright): see conftest.py."""
