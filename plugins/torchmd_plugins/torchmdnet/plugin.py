"""Hook implementations of the built-in torchmdnet plugin."""

from __future__ import annotations
