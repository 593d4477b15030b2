"""Built-in plugin package: torchmdnet."""
