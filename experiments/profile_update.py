"""Where one training iteration's time goes, per map and algorithm (one seed, `igmda train`
defaults at sight 0): the jitted pieces timed alone on a batch sampled from a filled replay.

* ``observe_ms``: re-deriving obs / expert_obs / state / avail of the batch from the compact
  replay records (what every update does first);
* ``loss_ms``: the loss forward pass (observe included);
* ``update_ms``: one whole update (loss, gradient, optimizer step; windowed unroll);
* ``collect_ms``: collecting ``n_envs`` episodes with the acting network(s);
* ``iteration_ms``: one fused iteration (collect + add + update + sync), from a timed chunk.

    python experiments/profile_update.py [--maps 3m 3s5z MMM2] [--algs qmix qmix-da]
        [--repeats 20] [--out results/profile_update.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import flashbax as fbx
import jax
import jax.numpy as jnp
from bench_train import time_calls  # experiments/ is on sys.path when run as a script

from envs.spec import recorder
from igmda_jax.compiled import compile_trainer, seed_keys
from igmda_jax.core.presets import make_config
from igmda_jax.fused.learner import loss_fn, make_optimizer, update
from igmda_jax.fused.rollout import collect


def profile(map_name: str, alg: str, repeats: int) -> dict[str, Any]:
    config = make_config(alg=alg, map=map_name, sight_range=0.0, seeds=1)
    compiled = compile_trainer(config, devices=jax.local_devices()[:1])
    state = compiled.init(seed_keys(config))
    state, _ = compiled.train_chunk(state)
    while int(jax.device_get(state.updates).min()) == 0:
        state, _ = compiled.train_chunk(state)
    start = time.perf_counter()
    state, metrics = jax.block_until_ready(compiled.train_chunk(state))
    iteration_ms = 1e3 * (time.perf_counter() - start) / config.iterations_per_call
    trainer = compiled.trainer
    seed0 = jax.tree.map(lambda x: x[0], state)
    buffer = fbx.make_item_buffer(
        config.buffer_size, config.batch_size, config.batch_size, add_sequences=True,
        add_batches=False,
    )  # fmt: skip
    batch = jax.jit(buffer.sample)(seed0.replay, jax.random.PRNGKey(1)).experience
    _, observe = recorder(trainer.env)
    optimizer = make_optimizer(config)
    nets = trainer.nets

    observe_batch = jax.jit(lambda records: jax.vmap(jax.vmap(observe))(records))
    loss_forward = jax.jit(lambda p, tp, b, k: loss_fn(p, tp, b, k, config, nets, observe)[0])
    one_update = jax.jit(
        lambda p, tp, o, b, k: update(p, tp, o, b, k, config, nets, observe, optimizer)
    )

    def one_collect(params, key):
        _, stats = collect(
            trainer.env, nets, config, params, key, config.n_envs, jnp.float32(0.05), 0.0,
            "learner" if config.variant == "da" else "all",
        )  # fmt: skip
        return stats["length"].sum()

    key = jax.random.PRNGKey(2)
    return {
        "map": map_name,
        "alg": alg,
        "batch_size": config.batch_size,
        "padded_steps": int(batch.actions.shape[1]),
        "longest_in_batch": int(batch.filled.sum(axis=1).max()),
        "observe_ms": 1e3 * time_calls(observe_batch, (batch.records,), repeats),
        "loss_ms": 1e3
        * time_calls(loss_forward, (seed0.params, seed0.target_params, batch, key), repeats),
        "update_ms": 1e3
        * time_calls(
            one_update,
            (seed0.params, seed0.target_params, seed0.opt_state, batch, key),
            repeats,
        ),
        "collect_ms": 1e3 * time_calls(jax.jit(one_collect), (seed0.params, key), repeats),
        "iteration_ms": iteration_ms,
        "episode_length": float(jax.device_get(metrics["episode_length"]).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--maps", nargs="+", default=["3m", "3s5z", "MMM2"])
    parser.add_argument("--algs", nargs="+", default=["qmix", "qmix-da"])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("results/profile_update.json"))
    args = parser.parse_args()
    rows = []
    for map_name in args.maps:
        for alg in args.algs:
            row = profile(map_name, alg, args.repeats)
            rows.append(row)
            print(
                f"{map_name:>9} {alg:>9}: observe {row['observe_ms']:6.1f} ms  loss "
                f"{row['loss_ms']:6.1f}  update {row['update_ms']:6.1f}  collect "
                f"{row['collect_ms']:6.1f}  iteration {row['iteration_ms']:6.1f}  "
                f"(window of {row['longest_in_batch']}/{row['padded_steps']} steps)",
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"jax": jax.__version__, "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
