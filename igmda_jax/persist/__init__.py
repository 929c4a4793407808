"""What a run leaves on disk: checkpoints, provenance, loggers."""
