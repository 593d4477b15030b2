"""Built-in plugin package: nonbonded."""
