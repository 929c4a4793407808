"""Grids of runs from a YAML file and the launchers that start them (local, SLURM, Ray)."""
