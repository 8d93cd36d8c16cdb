"""`jaxnorm.lapack`: the decompositions are `jnp.linalg`'s, value for value, batched,
vmapped (also twice, also over an unbatched operand), and on the CPU every LAPACK call of
the program takes one matrix, never a batch (jaxlib 0.10 hangs with batched calls)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnorm import lapack


def _ranks(text: str) -> list[int]:
  """The rank of the first operand of every LAPACK custom call of a lowered program."""
  return [
    len(line.split(": (tensor<", 1)[1].split(">", 1)[0].split("x")) - 1
    for line in text.splitlines()
    if "custom_call @lapack_" in line
  ]


def _symmetric(x):
  return x @ jnp.swapaxes(x, -1, -2)


@pytest.mark.parametrize("name", ["svd_values", "eigh"])
def test_every_way_of_calling_gives_jnp_linalgs_values(key, name):
  x = jax.random.normal(key, (2, 3, 7, 5))
  if name == "eigh":
    x, ours, theirs = _symmetric(x), lapack.eigh, lambda a: tuple(jnp.linalg.eigh(a))
  else:
    ours, theirs = lapack.svd_values, lambda a: jnp.linalg.svd(a, compute_uv=False)
  want = theirs(x)
  for got in (
    jax.jit(ours)(x),
    jax.jit(jax.vmap(ours))(x),
    jax.jit(jax.vmap(jax.vmap(ours)))(x),
    jax.tree.map(lambda *xs: jnp.stack(xs), *(ours(x[i]) for i in range(2))),
  ):
    jax.tree.map(np.testing.assert_array_equal, got, want)
  # An operand the vmap does not batch: the same value for every mapped element.
  first = jax.tree.map(lambda v: v[0], want)
  same = jax.jit(jax.vmap(lambda y: jax.tree.map(lambda v: v + 0 * y, ours(x[0]))))(jnp.ones(4))
  jax.tree.map(lambda s, w: np.testing.assert_array_equal(s, jnp.stack([w] * 4)), same, first)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU's LAPACK calls only")
def test_on_the_cpu_every_lapack_call_takes_one_matrix(key):
  x = jax.random.normal(key, (4, 3, 9, 6))
  for fn in (lapack.svd_values, lambda a: lapack.eigh(_symmetric(a))):
    text = jax.jit(jax.vmap(jax.vmap(fn))).lower(x).as_text()
    assert _ranks(text) == [2], _ranks(text)
    batched = jax.jit(lambda a: jnp.linalg.svd(a, compute_uv=False)).lower(x).as_text()
    assert _ranks(batched) == [4]  # what jnp.linalg hands LAPACK: the whole batch
