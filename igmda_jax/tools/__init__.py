"""Tools on a trained run: evaluation, imitation, benchmarks, rendering."""
