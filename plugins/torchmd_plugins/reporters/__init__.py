"""Built-in plugin package: reporters."""
