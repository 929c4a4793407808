"""Why seeds run one after another on the CPU: the gradient of a ``lax.scan`` costs more per
batch row once the batch is large (README, "Benchmarks", "Seeds over cores").

For batch sizes ``--rows`` (rows = seeds x episodes x agents in training) and ``--steps``
time steps it times, jitted on the current backend:

* the gradient of a GRU unroll (``flax.linen.GRUCell``, hidden 64, inputs 64; the agents'
  recurrence) with respect to its parameters, and its forward pass;
* the gradient of a scan of ``h = tanh(p * h + x)`` over [rows, 192] (no matmul at all).

It prints microseconds per row (forward and gradient) so that linear scaling shows as a flat
column. Run it with one device per process (``IGMDA_CPU_DEVICES=1``) on an idle machine.

    python experiments/scan_rows.py [--rows 48 96 192 384 768] [--steps 60] [--repeats 30]
        [--out results/scan_rows.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from bench_train import time_calls  # experiments/ is on sys.path when run as a script

import envs  # noqa: F401  (XLA flags of the project)

HIDDEN = 64
TANH_WIDTH = 192


def gru_loss(cell: nn.GRUCell, params: Any, inputs: jax.Array) -> jax.Array:
    """Mean square of the GRU's hidden states over inputs [T, rows, HIDDEN] -> []."""

    def step(hidden: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        hidden, _ = cell.apply(params, hidden, x)
        return hidden, hidden

    _, hiddens = jax.lax.scan(step, jnp.zeros(inputs.shape[1:]), inputs)
    return jnp.mean(hiddens**2)


def tanh_loss(scale: jax.Array, inputs: jax.Array) -> jax.Array:
    """Mean square of h_t = tanh(scale * h_{t-1} + x_t) over inputs [T, rows, width] -> []."""

    def step(hidden: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        hidden = jnp.tanh(scale * hidden + x)
        return hidden, hidden

    _, hiddens = jax.lax.scan(step, jnp.zeros(inputs.shape[1:]), inputs)
    return jnp.mean(hiddens**2)


def measure(rows: int, steps: int, repeats: int) -> dict[str, float]:
    cell = nn.GRUCell(HIDDEN)
    params = cell.init(jax.random.PRNGKey(0), jnp.zeros((1, HIDDEN)), jnp.zeros((1, HIDDEN)))
    gru_inputs = jax.random.normal(jax.random.PRNGKey(1), (steps, rows, HIDDEN))
    tanh_inputs = jax.random.normal(jax.random.PRNGKey(2), (steps, rows, TANH_WIDTH))
    scale = jnp.float32(0.5)
    gru_forward = jax.jit(lambda p, x: gru_loss(cell, p, x))
    gru_grad = jax.jit(jax.grad(lambda p, x: gru_loss(cell, p, x)))
    tanh_grad = jax.jit(jax.grad(tanh_loss))
    per_row = lambda fn, args: 1e6 * time_calls(fn, args, repeats) / rows  # noqa: E731
    return {
        "rows": rows,
        "steps": steps,
        "gru_forward_us_per_row": per_row(gru_forward, (params, gru_inputs)),
        "gru_grad_us_per_row": per_row(gru_grad, (params, gru_inputs)),
        "tanh_grad_us_per_row": per_row(tanh_grad, (scale, tanh_inputs)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", type=int, default=[48, 96, 192, 384, 768])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("results/scan_rows.json"))
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {jax.device_count()} device(s)")
    print(f"{'rows':>6} {'GRU fwd us/row':>15} {'GRU grad us/row':>16} {'tanh grad us/row':>17}")
    results = []
    for rows in args.rows:
        row = measure(rows, args.steps, args.repeats)
        results.append(row)
        print(
            f"{rows:>6} {row['gru_forward_us_per_row']:>15.1f} {row['gru_grad_us_per_row']:>16.1f}"
            f" {row['tanh_grad_us_per_row']:>17.1f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"jax": jax.__version__, "results": results}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
