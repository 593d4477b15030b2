"""Built-in plugin package: dynamics."""
