"""The host loop: the same learner fed by worker processes (SMAX or StarCraft II)."""
