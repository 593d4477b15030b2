"""Hook implementations of the built-in nonbonded plugin."""

from __future__ import annotations
