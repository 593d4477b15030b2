"""Hook implementations of the built-in barostats plugin."""

from __future__ import annotations
