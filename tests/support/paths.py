"""Where the checkout is, wherever the test module that asks sits."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
