"""The layers of the reference's block, initialized as PyTorch initializes them:
`torch.nn.MultiheadAttention` (`SelfAttention`), the FFN `nn.Sequential(nn.Linear(D, 4D),
nn.GELU(), nn.Linear(4D, D))` (`FeedForward`), `nn.Linear` (`torch_linear`) and the exact
GELU. `jaxnorm.model` assembles them into the Transformer; its docstring has the table of
initializers.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# kaiming_uniform(a=sqrt(5)) as in torch.nn.Linear: bound = sqrt(3 * (1/3) / fan_in).
torch_linear_kernel_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def torch_linear_bias_init(fan_in: int) -> nn.initializers.Initializer:
  """U(-1/sqrt(fan_in), 1/sqrt(fan_in)), the bias init of torch.nn.Linear."""
  bound = 1 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


Precision = str | None  # "highest", "high", or None for the backend's default


def check_ids(ids: jax.Array, size: int, what: str) -> None:
  """Raises ValueError if an id of a concrete array is outside [0, size).

  JAX would not: an embedding lookup of an id >= size gives NaN, and -1 silently reads the
  last row. Inside jit (a tracer) nothing is checked and nothing is paid: the compiled
  training and analysis draw their own batches, which are valid by construction. Eager
  calls on user data (`model.apply(variables, tokens, ...)`) are checked, at the price of
  copying the ids to the host.
  """
  if isinstance(ids, jax.core.Tracer) or not np.size(ids):
    return
  ids = np.asarray(ids)
  low, high = int(ids.min()), int(ids.max())
  if low < 0 or high >= size:
    bad = low if low < 0 else high
    raise ValueError(f"{what} must be in [0, {size}), got {bad}")


def gelu_exact(x: jax.Array) -> jax.Array:
  """Exact GELU, x * Phi(x), written as PyTorch computes it: x / 2 * (1 + erf(x / sqrt(2))).

  `jax.nn.gelu(x, approximate=False)` is the same function written x / 2 * erfc(-x / sqrt(2)),
  but erf is one XLA operation with its own float32 approximation, while JAX expands erfc
  into about 80 (three polynomials, two divisions and an exponential, every branch
  evaluated for every element): in the BatchNorm training step, whose FFN runs at every
  position, the GELU and its derivative cost about twice as much with erfc.

  The two agree to float32 rounding: over [-10, 10] they differ by at most 9.5e-7 (2 ulp
  of the largest values), and against x * Phi(x) computed in float64 this form errs by at
  most 1.1e-6, PyTorch's by 1.2e-6, erfc's by 4e-7. In the negative tail, where 1 + erf
  cancels, the error stays within that absolute bound but is large relative to the tiny
  GELU there, as in PyTorch.
  """
  sqrt_half = np.sqrt(0.5).astype(x.dtype)
  return x * 0.5 * (1 + jax.lax.erf(x * sqrt_half))


def torch_linear(features: int, fan_in: int, name: str, precision: Precision = None) -> nn.Dense:
  """A Dense layer initialized like `torch.nn.Linear(fan_in, features)`."""
  return nn.Dense(
    features,
    precision=precision,
    kernel_init=torch_linear_kernel_init,
    bias_init=torch_linear_bias_init(fan_in),
    name=name,
  )


class SelfAttention(nn.Module):
  """`torch.nn.MultiheadAttention(D, H, batch_first=True)` called as attn(x, x, x).

  softmax(q k^T / sqrt(D / H)) v per head, no mask, no dropout; q, k, v come from one
  fused (D, 3D) input projection, as PyTorch's `in_proj_weight`.
  """

  embed_dim: int
  num_heads: int
  precision: Precision = None

  def setup(self):
    d = self.embed_dim
    # Xavier over PyTorch's stacked (3D, D) weight: fan_in = D, fan_out = 3D. Flax's
    # (D, 3D) kernel has the same fans, so xavier_uniform gives the same bound.
    self.in_proj = nn.Dense(
      3 * d,
      kernel_init=nn.initializers.xavier_uniform(),
      bias_init=nn.initializers.zeros,
      precision=self.precision,
    )
    self.out_proj = nn.Dense(
      d,
      kernel_init=torch_linear_kernel_init,
      bias_init=nn.initializers.zeros,
      precision=self.precision,
    )

  def attend(self, q_BxQxD: jax.Array, k_BxLxD: jax.Array, v_BxLxD: jax.Array) -> jax.Array:
    """Multi-head attention of Q queries over L keys, output projection included."""
    b, n_q, d = q_BxQxD.shape
    h = self.num_heads
    split = lambda t: t.reshape(t.shape[0], t.shape[1], h, d // h)  # noqa: E731
    q_BxQxHxK, k_BxLxHxK, v_BxLxHxK = split(q_BxQxD), split(k_BxLxD), split(v_BxLxD)
    scores_BxHxQxL = jnp.einsum("bqhk,blhk->bhql", q_BxQxHxK, k_BxLxHxK, precision=self.precision)
    logits_BxHxQxL = scores_BxHxQxL / math.sqrt(d // h)
    att_BxHxQxL = jax.nn.softmax(logits_BxHxQxL, axis=-1)
    out_BxQxHxK = jnp.einsum("bhql,blhk->bqhk", att_BxHxQxL, v_BxLxHxK, precision=self.precision)
    return self.out_proj(out_BxQxHxK.reshape(b, n_q, d))

  def attend_counts(
    self, q_BxQxD: jax.Array, k_VxD: jax.Array, v_VxD: jax.Array, counts_BxV: jax.Array
  ) -> jax.Array:
    """`attend` over a multiset of table rows: example b holds row v counts_BxV[b, v] times.

    Without a mask or positional encoding, attention sees its keys only as a multiset:
    with k_VxD, v_VxD the projected embedding table and counts_BxV the token counts,
    this equals `attend(q, k_VxD[tokens], v_VxD[tokens])`, with
      softmax_l(s_l) v_l = sum_v c_v exp(s_v - m) v_v / sum_v c_v exp(s_v - m),
    m the largest logit of a present row. Dense (B Q x V) products replace the gathers,
    whose gradient is a slow scatter on CPU.
    """
    b, n_q, d = q_BxQxD.shape
    h = self.num_heads
    q_BxQxHxK = q_BxQxD.reshape(b, n_q, h, d // h)
    k_VxHxK = k_VxD.reshape(-1, h, d // h)
    v_VxHxK = v_VxD.reshape(-1, h, d // h)
    scores_BxHxQxV = jnp.einsum("bqhk,vhk->bhqv", q_BxQxHxK, k_VxHxK, precision=self.precision)
    logits_BxHxQxV = scores_BxHxQxV / math.sqrt(d // h)
    counts_Bx1x1xV = counts_BxV[:, None, None, :]
    present = counts_Bx1x1xV > 0
    # Softmax is shift-invariant, so the shift carries no gradient (as in jax.nn.softmax).
    m = jax.lax.stop_gradient(
      jnp.max(jnp.where(present, logits_BxHxQxV, -jnp.inf), axis=-1, keepdims=True)
    )
    # Absent rows get exp(-inf) = 0, with a zero gradient, even where their logit is large.
    e_BxHxQxV = counts_Bx1x1xV * jnp.exp(jnp.where(present, logits_BxHxQxV - m, -jnp.inf))
    att_BxHxQxV = e_BxHxQxV / jnp.sum(e_BxHxQxV, axis=-1, keepdims=True)
    out_BxQxHxK = jnp.einsum("bhqv,vhk->bqhk", att_BxHxQxV, v_VxHxK, precision=self.precision)
    return self.out_proj(out_BxQxHxK.reshape(b, n_q, d))

  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    q, k, v = jnp.split(self.in_proj(x_BxLxD), 3, axis=-1)
    return self.attend(q, k, v)


class FeedForward(nn.Module):
  """`nn.Sequential(nn.Linear(D, 4D), nn.GELU(), nn.Linear(4D, D))`."""

  embed_dim: int
  precision: Precision = None

  def setup(self):
    d = self.embed_dim
    self.up = torch_linear(4 * d, fan_in=d, name="up", precision=self.precision)
    self.down = torch_linear(d, fan_in=4 * d, name="down", precision=self.precision)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.down(gelu_exact(self.up(x)))
