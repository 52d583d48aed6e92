"""One adapter per job scheduler behind the seam in :mod:`executorlib.spawners.base`."""
