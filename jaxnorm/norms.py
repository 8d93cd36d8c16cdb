"""Registry of normalization layers, all called as `norm(x_BxLxD, train) -> x_BxLxD`.

Every entry matches the PyTorch layer the reference uses, not Flax's defaults:

* `layernorm`: `torch.nn.LayerNorm(D)`, y = (x - mean) / sqrt(var + 1e-5) * scale + bias,
  statistics over the feature axis of each token (Ba et al. 2016). Flax's default eps is
  1e-6 and its default "fast variance" E[x^2] - E[x]^2 loses precision; both are overridden.
* `batchnorm`: `torch.nn.BatchNorm1d(D)` applied to (B, D, L), i.e. statistics per feature
  over batch x sequence (Ioffe and Szegedy 2015). Running statistics are updated with
  PyTorch's momentum 0.1 and, like PyTorch, store the *unbiased* variance; training
  normalizes with the biased one. Flax's `nn.BatchNorm` stores the biased variance, so this
  module is written out to match PyTorch exactly (see `BatchNorm`).
* `rmsnorm`: `torch.nn.RMSNorm(D)`, y = x / sqrt(mean(x^2) + eps) * scale over the feature
  axis of each token, no centering and no bias (Zhang and Sennrich 2019). eps follows
  PyTorch's default `eps=None`: the machine epsilon of the computation type,
  finfo(float32).eps ~ 1.19e-7 for float32 (and lower-precision) inputs, finfo(float64).eps
  for float64 ones -- not LayerNorm's 1e-5.
* `l2`: the "Manual L2 Norm", y = x / max(||x||_2, 1e-9) per token, no parameters; the same
  as `torch.nn.functional.normalize(x, dim=-1, eps=1e-9)`.
* `none`: identity.

Parameters and running statistics are created as `param_dtype`, float32 unless asked, as
Flax's own layers are: never the default float type, which `JAX_ENABLE_X64` would turn into
float64 and make the model train in mixed precision. The computation runs in the promoted
type of the input and the parameters (float64 when both are cast up for the analysis).

Adding a normalization is one `NormSpec` entry in `REGISTRY` (its module, label, colour,
line style and PyTorch names); the tests are parametrized over the registry, so the new
entry is then trained, fast-path-checked, converted and saved by the existing tests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

TORCH_EPS = 1e-5  # PyTorch's default eps for LayerNorm and BatchNorm.
TORCH_MOMENTUM = 0.1  # PyTorch's BatchNorm momentum: new = (1 - m) * old + m * batch.


class LayerNorm(nn.Module):
  """`torch.nn.LayerNorm(D)`: per token, y = (x - mean) / sqrt(var + 1e-5) * scale + bias.

  The variance is the exact two-pass mean((x - mean)^2), not E[x^2] - E[x]^2 (Flax's fast
  variance, which loses precision when |mean| >> std). Written out rather than wrapping
  `nn.LayerNorm` so that `scale` and `bias` sit directly under the norm's own name, as for
  every other entry of the registry.
  """

  param_dtype: jnp.dtype = jnp.float32  # `scale`, `bias`; never the global x64 default.

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    del train  # Same in training and evaluation; accepted for a common signature.
    features = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (features,), self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros, (features,), self.param_dtype)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    per_feature = lambda v: v.reshape((1,) * (x.ndim - 1) + (features,))  # noqa: E731
    return (x - mean) * (jax.lax.rsqrt(var + TORCH_EPS) * per_feature(scale)) + per_feature(bias)


class BatchNorm(nn.Module):
  """PyTorch `BatchNorm1d` over every axis but the last (features).

  Training: y = (x - mu_B) / sqrt(var_B + eps) * scale + bias with the batch's biased
  variance; running_mean <- 0.9 running_mean + 0.1 mu_B and
  running_var <- 0.9 running_var + 0.1 var_B * n / (n - 1), n = elements per feature.
  Evaluation: the same affine map with the running statistics, which stay untouched.
  State lives in the `batch_stats` collection as `mean` and `var` (both (D,)), created as
  `param_dtype` and kept in it by every update, whatever the dtype of x.
  """

  param_dtype: jnp.dtype = jnp.float32  # `scale`, `bias`, `mean`, `var`; never x64's default.

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    features = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (features,), self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros, (features,), self.param_dtype)
    running_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), self.param_dtype)
    running_var = self.variable("batch_stats", "var", jnp.ones, (features,), self.param_dtype)
    if train:
      axes = tuple(range(x.ndim - 1))
      mean = jnp.mean(x, axis=axes)
      var = jnp.mean(jnp.square(x - mean.reshape((1,) * len(axes) + (features,))), axis=axes)
      if not self.is_initializing():
        n = x.size // features
        m = TORCH_MOMENTUM
        new_mean = (1 - m) * running_mean.value + m * mean
        new_var = (1 - m) * running_var.value + m * var * (n / (n - 1))
        running_mean.value = new_mean.astype(running_mean.value.dtype)
        running_var.value = new_var.astype(running_var.value.dtype)
    else:
      mean, var = running_mean.value, running_var.value
    per_feature = lambda v: v.reshape((1,) * (x.ndim - 1) + (features,))  # noqa: E731
    inv_std = jax.lax.rsqrt(var + TORCH_EPS)
    return (x - per_feature(mean)) * per_feature(inv_std * scale) + per_feature(bias)


class RMSNorm(nn.Module):
  """`torch.nn.RMSNorm(D)` with its default eps=None (Zhang and Sennrich 2019).

  y = x / sqrt(mean(x^2, axis=-1) + eps) * scale, scale (D,) initialized to 1. With
  `eps=None` the eps is PyTorch's: finfo of the computation type, which is float32 for
  float32 and lower-precision inputs and float64 for float64 inputs.
  """

  eps: float | None = None
  param_dtype: jnp.dtype = jnp.float32  # `scale`; never the global x64 default.

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    del train  # Same in training and evaluation; accepted for a common signature.
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), self.param_dtype)
    compute_dtype = jnp.promote_types(x.dtype, jnp.float32)
    eps = jnp.finfo(compute_dtype).eps if self.eps is None else self.eps
    x_c = x.astype(compute_dtype)
    inv_rms = jax.lax.rsqrt(jnp.mean(jnp.square(x_c), axis=-1, keepdims=True) + eps)
    scale_1xD = scale.reshape((1,) * (x.ndim - 1) + scale.shape)
    return (x_c * inv_rms * scale_1xD).astype(x.dtype)


L2_MIN_NORM = 1e-9  # The "Manual L2 Norm" clamps each token's norm below at this value.


class L2Norm(nn.Module):
  """The "Manual L2 Norm": each token projected onto the unit sphere, no parameters.

  y = x / max(||x||_2, 1e-9) over the feature axis, i.e.
  `torch.nn.functional.normalize(x, p=2, dim=-1, eps=1e-9)`. Tokens with norm >= 1e-9 come
  out with norm exactly 1 (to rounding); smaller ones are scaled by 1e9 instead.
  """

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    del train
    # sqrt(max(sum x^2, c^2)) = max(||x||, c), written so the gradient at x = 0 is 0, not NaN.
    sum_sq = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
    return x * jax.lax.rsqrt(jnp.maximum(sum_sq, L2_MIN_NORM**2))


class Identity(nn.Module):
  """No normalization."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    del train
    return x


@dataclasses.dataclass(frozen=True)
class NormSpec:
  """A normalization: its module factory, how it is drawn, its PyTorch names, and the
  facts other code relies on. The model places each norm's variables directly under
  `norm1` / `norm2` of the block.

  Attributes:
    make: builds the module, called as `module(x_BxLxD, train)`.
    label: name in figures and tables.
    color, linestyle: how its curves are drawn (matplotlib color and line style).
    torch_params: (Flax parameter name, PyTorch parameter name) pairs, e.g.
      ("scale", "weight"): how `jaxnorm.torch_compat` names its parameters.
    torch_buffers: the same for its `batch_stats` entries and PyTorch buffers.
    needs_batch: training statistics mix examples (needs batch size >= 2).
    per_token_in_eval: in evaluation mode each token is normalized on its own, so the
      last position's output depends on other tokens only through attention.
    per_token_in_train: the same in training mode.
  """

  make: Callable[..., nn.Module]
  label: str
  color: str = "black"
  linestyle: str | tuple = "-"
  torch_params: tuple[tuple[str, str], ...] = ()
  torch_buffers: tuple[tuple[str, str], ...] = ()
  needs_batch: bool = False
  per_token_in_eval: bool = True
  per_token_in_train: bool = True


_AFFINE = (("scale", "weight"), ("bias", "bias"))

# Colours and line styles: the reference's for its three models, the paper's for the L2 model.
REGISTRY: dict[str, NormSpec] = {
  "layernorm": NormSpec(LayerNorm, "LayerNorm", "blue", "-", torch_params=_AFFINE),
  "batchnorm": NormSpec(
    BatchNorm,
    "BatchNorm",
    "green",
    (0, (3, 3)),
    torch_params=_AFFINE,
    torch_buffers=(("mean", "running_mean"), ("var", "running_var")),
    needs_batch=True,
    per_token_in_train=False,
  ),
  "none": NormSpec(Identity, "No Norm", "red", "-"),
  "rmsnorm": NormSpec(RMSNorm, "RMSNorm", "orange", "-.", torch_params=(("scale", "weight"),)),
  "l2": NormSpec(L2Norm, "Manual L2 Norm", "purple", ":"),
}


def get(name: str) -> NormSpec:
  """The registry entry for `name`; a clear error for an unknown one."""
  try:
    return REGISTRY[name]
  except KeyError:
    raise ValueError(f"unknown normalization {name!r}; choose from {sorted(REGISTRY)}") from None


def label(norm: str) -> str:
  """The normalization's label from the registry, or its name if it is not registered."""
  spec = REGISTRY.get(norm)
  return spec.label if spec else norm
