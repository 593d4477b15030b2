"""Hook implementations of the built-in amber plugin."""

from __future__ import annotations
