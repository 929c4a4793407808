"""Pure pieces: the Config, networks, mixers, losses and acting; no files, no processes."""
