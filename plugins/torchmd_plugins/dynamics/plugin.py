"""Hook implementations of the built-in dynamics plugin."""

from __future__ import annotations
