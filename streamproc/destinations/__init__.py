"""Partner destinations: one module each, declared as data (see `base`)."""
