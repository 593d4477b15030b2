"""Hook implementations of the built-in reporters plugin."""

from __future__ import annotations
