"""igmda-jax: value decomposition and IGM-DA in JAX. Importing ``envs`` first applies its
XLA CPU setting before JAX starts (see envs/__init__.py)."""

import envs  # noqa: F401
