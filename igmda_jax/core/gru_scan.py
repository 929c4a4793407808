"""The agents' GRU recurrence over time, with a hand-written reverse pass.

Same function as scanning ``flax.linen.GRUCell`` over time (same parameters, same forward
arithmetic), for the update's hot loop. Why by hand: JAX's reverse of a ``lax.scan``
accumulates every weight gradient inside the reversed loop (small ``[H, rows] x [rows, H]``
products at every step) and keeps the cell's six Dense layers apart. Here the reversed loop
carries only the hidden state's gradient and emits the gates' pre-activation gradients; the
weight gradients are then one large matmul each over all ``T * rows`` steps.

    r  = sigmoid(x W_ir + b_ir + h W_hr)
    z  = sigmoid(x W_iz + b_iz + h W_hz)
    n  = tanh(x W_in + b_in + r * (h W_hn + b_hn))
    h' = (1 - z) * n + z * h                      (flax.linen.GRUCell)

Reverse, with g = dL/dh' (from the output at this step plus the next step's carry):

    a_n = g (1 - z)(1 - n^2),  a_r = a_n (h W_hn + b_hn) r (1 - r),  a_z = g (h - n) z (1 - z)
    dh  = g z + a_r W_hr^T + a_z W_hz^T + (a_n r) W_hn^T
    dx  = a_r W_ir^T + a_z W_iz^T + a_n W_in^T
    dW_i* = sum_t x^T a_*,  dW_h{r,z} = sum_t h^T a_{r,z},  dW_hn = sum_t h^T (a_n r)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp


class GRUWeights(NamedTuple):
    """A ``flax.linen.GRUCell``'s parameters: input kernels [in, H] with biases [H], hidden
    kernels [H, H] (only the candidate's has a bias)."""

    w_ir: jax.Array
    w_iz: jax.Array
    w_in: jax.Array
    b_ir: jax.Array
    b_iz: jax.Array
    b_in: jax.Array
    w_hr: jax.Array
    w_hz: jax.Array
    w_hn: jax.Array
    b_hn: jax.Array


def gru_weights(cell_params: dict[str, Any]) -> GRUWeights:
    """GRUWeights of a GRUCell's parameter dict ``{"ir": {"kernel", "bias"}, ..., "hn"}``."""
    p = cell_params
    return GRUWeights(
        p["ir"]["kernel"], p["iz"]["kernel"], p["in"]["kernel"],
        p["ir"]["bias"], p["iz"]["bias"], p["in"]["bias"],
        p["hr"]["kernel"], p["hz"]["kernel"], p["hn"]["kernel"], p["hn"]["bias"],
    )  # fmt: skip


def _at(x: jax.Array, t: jax.Array) -> jax.Array:
    """x[t] for a traced step index t."""
    return jax.lax.dynamic_index_in_dim(x, t, keepdims=False)


def _forward(
    w: GRUWeights,
    inputs: jax.Array,
    resets: jax.Array,
    hidden0: jax.Array,
    n_steps: jax.Array,
    keep_residuals: bool,
) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """hiddens [T, R, H] and, if asked, the reverse pass's residuals (previous hidden, r, z,
    n, h W_hn + b_hn), each [T, R, H]; steps from ``n_steps`` on are not run (zeros). The
    arithmetic is GRUCell's, in its order."""
    zeros = jnp.zeros((*inputs.shape[:2], hidden0.shape[-1]), hidden0.dtype)
    n_outputs = 6 if keep_residuals else 1

    def step(t: jax.Array, carry: tuple[jax.Array, tuple[jax.Array, ...]]):
        hidden, outputs = carry
        x = _at(inputs, t)
        previous = jnp.where(_at(resets, t)[:, None], jnp.zeros_like(hidden), hidden)
        r = jax.nn.sigmoid((x @ w.w_ir + w.b_ir) + previous @ w.w_hr)
        z = jax.nn.sigmoid((x @ w.w_iz + w.b_iz) + previous @ w.w_hz)
        candidate_hidden = previous @ w.w_hn + w.b_hn
        n = jnp.tanh((x @ w.w_in + w.b_in) + r * candidate_hidden)
        new_hidden = (1.0 - z) * n + z * previous
        values = (new_hidden, previous, r, z, n, candidate_hidden)[:n_outputs]
        outputs = tuple(
            jax.lax.dynamic_update_index_in_dim(out, value, t, 0)
            for out, value in zip(outputs, values, strict=True)
        )
        return new_hidden, outputs

    _, outputs = jax.lax.fori_loop(0, n_steps, step, (hidden0, (zeros,) * n_outputs))
    return outputs[0], outputs[1:]


@jax.custom_vjp
def gru_scan(
    weights: GRUWeights,
    inputs: jax.Array,
    resets: jax.Array,
    hidden0: jax.Array,
    n_steps: jax.Array,
) -> jax.Array:
    """Run a GRU cell over the first ``n_steps`` steps, zeroing the carry where ``resets`` is
    true before the step; later steps are not computed (their hiddens are zeros, and their
    output gradients are ignored).

    weights: GRUWeights (kernels [in, H] / [H, H])
    inputs:  [T, R, in] (R rows: episodes x agents)
    resets:  [T, R] bool
    hidden0: [R, H] the carry before t = 0
    n_steps: [] int, at most T (traced: one compiled loop serves every length)
    returns: hiddens [T, R, H] (the new hidden state of every step)
    """
    chex.assert_rank([inputs, resets, hidden0, n_steps], [3, 2, 2, 0])
    chex.assert_equal_shape_prefix([inputs, resets], 2)
    chex.assert_equal(hidden0.shape[0], inputs.shape[1])
    return _forward(weights, inputs, resets, hidden0, n_steps, keep_residuals=False)[0]


def _gru_scan_forward(weights, inputs, resets, hidden0, n_steps):
    hiddens, residuals = _forward(weights, inputs, resets, hidden0, n_steps, keep_residuals=True)
    return hiddens, (weights, inputs, resets, n_steps, residuals)


def _gru_scan_reverse(saved, hiddens_grad: jax.Array):
    w, inputs, resets, n_steps, (previous, r, z, n, candidate_hidden) = saved
    w_hr_t, w_hz_t, w_hn_t = w.w_hr.T, w.w_hz.T, w.w_hn.T

    def step(i: jax.Array, carry: tuple[jax.Array, tuple[jax.Array, ...]]):
        carry_grad, outputs = carry
        t = n_steps - 1 - i
        previous_t, r_t, z_t, n_t = (_at(x, t) for x in (previous, r, z, n))
        g = _at(hiddens_grad, t) + carry_grad
        a_n = g * (1.0 - z_t) * (1.0 - n_t * n_t)
        a_r = a_n * _at(candidate_hidden, t) * r_t * (1.0 - r_t)
        a_z = g * (previous_t - n_t) * z_t * (1.0 - z_t)
        a_hn = a_n * r_t
        previous_grad = g * z_t + a_r @ w_hr_t + a_z @ w_hz_t + a_hn @ w_hn_t
        carry_grad = jnp.where(
            _at(resets, t)[:, None], jnp.zeros_like(previous_grad), previous_grad
        )
        outputs = tuple(
            jax.lax.dynamic_update_index_in_dim(out, value, t, 0)
            for out, value in zip(outputs, (a_r, a_z, a_n, a_hn), strict=True)
        )
        return carry_grad, outputs

    zeros = jnp.zeros_like(hiddens_grad)
    hidden0_grad, (a_r, a_z, a_n, a_hn) = jax.lax.fori_loop(
        0, n_steps, step, (jnp.zeros_like(hiddens_grad[0]), (zeros,) * 4)
    )
    steps = inputs.shape[0] * inputs.shape[1]
    flat_inputs = inputs.reshape(steps, -1)
    flat_previous = previous.reshape(steps, -1)

    def flat(a: jax.Array) -> jax.Array:
        return a.reshape(steps, -1)

    weights_grad = GRUWeights(
        w_ir=flat_inputs.T @ flat(a_r),
        w_iz=flat_inputs.T @ flat(a_z),
        w_in=flat_inputs.T @ flat(a_n),
        b_ir=a_r.sum((0, 1)),
        b_iz=a_z.sum((0, 1)),
        b_in=a_n.sum((0, 1)),
        w_hr=flat_previous.T @ flat(a_r),
        w_hz=flat_previous.T @ flat(a_z),
        w_hn=flat_previous.T @ flat(a_hn),
        b_hn=a_hn.sum((0, 1)),
    )
    inputs_grad = a_r @ w.w_ir.T + a_z @ w.w_iz.T + a_n @ w.w_in.T
    return weights_grad, inputs_grad, None, hidden0_grad, None


gru_scan.defvjp(_gru_scan_forward, _gru_scan_reverse)
