"""Built-in plugin package: barostats."""
