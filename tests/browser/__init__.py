"""Real-browser tests (headless Chromium and Firefox ESR); see README.md."""
