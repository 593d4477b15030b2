"""Built-in plugin package: amber."""
