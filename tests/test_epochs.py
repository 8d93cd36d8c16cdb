import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnorm import epochs, loss

# (N, B): N not a multiple of B, a multiple, a single batch smaller than B.
PLANS = [(10, 4), (8, 4), (3, 8)]


def _epoch(data_key, plan, epoch):
  """Epoch `epoch`'s batches called eagerly, one step at a time: (indices SxB, weights SxB)."""
  steps = range(epoch * plan.steps_per_epoch, (epoch + 1) * plan.steps_per_epoch)
  rows = [epochs.batch_indices(data_key, t, plan) for t in steps]
  return np.stack([np.asarray(i) for i, _ in rows]), np.stack([np.asarray(w) for _, w in rows])


def test_plan_sizes():
  sizes = lambda plan: (plan.steps_per_epoch, plan.last_batch_size)
  agnews = epochs.epoch_plan(120_000, 256)
  assert sizes(agnews) == (469, 192)  # 120,000 = 468 * 256 + 192
  assert sizes(epochs.epoch_plan(10, 4)) == (3, 2)
  assert sizes(epochs.epoch_plan(8, 4)) == (2, 4)
  assert sizes(epochs.epoch_plan(3, 8)) == (1, 3)
  assert hash(agnews) == hash(epochs.EpochPlan(120_000, 256))


@pytest.mark.parametrize(
  "sizes, named", [((0, 4), "0"), ((10, 0), "0"), ((-3, 4), "-3"), ((2.5, 4), "2.5")]
)
def test_plan_refuses_bad_sizes(sizes, named):
  with pytest.raises(ValueError, match=f"got {named}"):
    epochs.epoch_plan(*sizes)
  with pytest.raises(ValueError, match=f"got {named}"):
    epochs.batch_indices(jax.random.key(0), 0, epochs.EpochPlan(*sizes))


@pytest.mark.parametrize("sizes", PLANS)
def test_every_example_once_per_epoch_padding_only_at_the_end(sizes):
  plan = epochs.epoch_plan(*sizes)
  n, b, last = plan.num_examples, plan.batch_size, plan.last_batch_size
  data_key = jax.random.key(7)
  for epoch in range(3):
    indices, weights = _epoch(data_key, plan, epoch)
    assert indices.dtype == np.int32 and weights.dtype == np.float32
    assert set(np.unique(weights)) <= {0.0, 1.0}
    np.testing.assert_array_equal(np.sort(indices[weights == 1]), np.arange(n))
    np.testing.assert_array_equal(weights[:-1], 1.0)  # padding only in the last batch
    assert weights[-1].sum() == last
    np.testing.assert_array_equal(weights[-1], np.arange(b) < last)  # real rows first
    # The padding is the epoch's order again from its start, wrapping modulo N.
    order = np.asarray(epochs.epoch_permutation(data_key, epoch, n))
    positions = np.arange((plan.steps_per_epoch - 1) * b, plan.steps_per_epoch * b)
    np.testing.assert_array_equal(indices[-1], order[positions % n])


def test_epochs_and_keys_give_different_orders():
  plan = epochs.epoch_plan(50, 8)
  first, _ = _epoch(jax.random.key(0), plan, 0)
  second, _ = _epoch(jax.random.key(0), plan, 1)
  other_key, _ = _epoch(jax.random.key(1), plan, 0)
  assert not np.array_equal(first, second)
  assert not np.array_equal(first, other_key)
  np.testing.assert_array_equal(first, _epoch(jax.random.key(0), plan, 0)[0])


def test_same_batch_eagerly_under_jit_vmap_scan_and_in_whole_epochs():
  plan = epochs.epoch_plan(10, 4)
  num_steps = 7  # crosses two epoch boundaries
  data_keys = jax.random.split(jax.random.key(3), 2)
  eager = [[epochs.batch_indices(k, t, plan) for t in range(num_steps)] for k in data_keys]
  eager_I = np.array([[np.asarray(i) for i, _ in run] for run in eager])  # (keys, T, B)
  eager_W = np.array([[np.asarray(w) for _, w in run] for run in eager])

  jitted = jax.jit(epochs.batch_indices, static_argnums=2)
  for t in range(num_steps):
    chex.assert_trees_all_equal(jitted(data_keys[0], t, plan), eager[0][t])
  vmapped = jax.jit(jax.vmap(epochs.batch_indices, in_axes=(0, None, None)), static_argnums=2)
  for t in range(num_steps):
    chex.assert_trees_all_equal(vmapped(data_keys, t, plan), (eager_I[:, t], eager_W[:, t]))

  @jax.jit(static_argnums=2)
  def scan(data_key, start, length):
    step = lambda t, _: (t + 1, epochs.batch_indices(data_key, t, plan))
    return jax.lax.scan(step, jnp.int32(start), length=length)[1]

  chex.assert_trees_all_equal(scan(data_keys[1], 0, num_steps), (eager_I[1], eager_W[1]))
  for split in range(1, num_steps):
    head, tail = scan(data_keys[1], 0, split), scan(data_keys[1], split, num_steps - split)
    joined = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), head, tail)
    chex.assert_trees_all_equal(joined, (eager_I[1], eager_W[1]))

  for epoch in range(2):
    chex.assert_trees_all_equal(
      epochs.epoch_batches(data_keys[0], epoch, plan), _epoch(data_keys[0], plan, epoch)
    )


def test_batch_at_gathers_the_rows():
  plan = epochs.epoch_plan(10, 4)
  tokens = jnp.arange(10 * 3, dtype=jnp.int32).reshape(10, 3)
  labels = jnp.arange(10, dtype=jnp.int32) % 4
  data_key = jax.random.key(5)
  for t in range(4):
    indices, weights = epochs.batch_indices(data_key, t, plan)
    got = jax.jit(epochs.batch_at, static_argnums=2)(data_key, t, plan, tokens, labels)
    chex.assert_trees_all_equal(got, (tokens[indices], labels[indices], weights))
  with pytest.raises(ValueError, match="num_examples = 10"):
    epochs.batch_at(data_key, 0, plan, tokens[:9], labels[:9])


@pytest.mark.parametrize("batch_size", [256, 250])  # 250: dividing by it is inexact
def test_all_ones_weights_give_the_plain_mean_exactly(batch_size):
  logits = 3 * jax.random.normal(jax.random.key(0), (batch_size, 4))
  labels = jax.random.randint(jax.random.key(1), (batch_size,), 0, 4)
  ones = jnp.ones(batch_size, jnp.float32)
  assert epochs.weighted_cross_entropy(logits, labels, ones) == loss.cross_entropy(logits, labels)
  jitted = jax.jit(epochs.weighted_cross_entropy)(logits, labels, ones)
  assert jitted == jax.jit(loss.cross_entropy)(logits, labels)


POISON = [jnp.nan, jnp.inf, -jnp.inf, 1e30]


def _padded_batch():
  """Two real rows of known cross-entropy (log 4 and log 2) and four padding rows full of
  NaN, infinities and huge values."""
  real = jnp.array([[0.0, 0.0, 0.0, 0.0], [jnp.log(3.0), 0.0, 0.0, 0.0]])
  padding = jnp.array([[p, 0.0, -p, 1.0] for p in POISON])
  logits = jnp.concatenate([real, padding])
  labels = jnp.array([2, 0, 0, 1, 2, 3], jnp.int32)
  weights = jnp.array([1, 1, 0, 0, 0, 0], jnp.float32)
  return logits, labels, weights


def test_padding_rows_do_not_reach_the_loss_or_its_gradient():
  logits, labels, weights = _padded_batch()
  value = epochs.weighted_cross_entropy(logits, labels, weights)
  np.testing.assert_allclose(value, 1.5 * np.log(2.0), rtol=1e-6)  # (log 4 + log 2) / 2
  np.testing.assert_allclose(value, loss.cross_entropy(logits[:2], labels[:2]), rtol=1e-7)
  grads = jax.jit(jax.grad(epochs.weighted_cross_entropy))(logits, labels, weights)
  expected = jax.grad(loss.cross_entropy)(logits[:2], labels[:2])
  np.testing.assert_allclose(grads[:2], expected, rtol=1e-6, atol=1e-8)
  np.testing.assert_array_equal(grads[2:], 0.0)


def test_padded_last_batch_is_the_mean_over_its_real_rows():
  """Random logits, the last batch of N = 10, B = 4: PyTorch's batch of 2 in value and
  gradient, whatever the padding rows hold."""
  plan = epochs.epoch_plan(10, 4)
  _, weights = epochs.batch_indices(jax.random.key(0), plan.steps_per_epoch - 1, plan)
  logits = jax.random.normal(jax.random.key(1), (4, 5)).at[2:].set(1e30)
  labels = jnp.array([4, 1, 0, 3], jnp.int32)
  value, grads = jax.value_and_grad(epochs.weighted_cross_entropy)(logits, labels, weights)
  expected, expected_grads = jax.value_and_grad(loss.cross_entropy)(logits[:2], labels[:2])
  np.testing.assert_allclose(value, expected, rtol=1e-7)
  np.testing.assert_allclose(grads[:2], expected_grads, rtol=1e-6, atol=1e-8)
  np.testing.assert_array_equal(grads[2:], 0.0)
  assert np.isfinite(optax.softmax_cross_entropy_with_integer_labels(logits, labels)[:2]).all()


def test_weighted_correct_counts_real_rows_only():
  logits, labels, weights = _padded_batch()
  # Real rows: row 0's argmax is 0 (ties go to the first) for label 2, wrong; row 1's is 0
  # for label 0, right. Padding rows 2 (NaN first: argmax 0 = label 0) and 4 (argmax 2 =
  # label 2) are right too, and must not count.
  correct = epochs.weighted_correct(logits, labels, weights)
  assert correct.dtype == jnp.float32 and correct == 1.0
  right_everywhere = jax.nn.one_hot(labels, 4)
  assert epochs.weighted_correct(right_everywhere, labels, weights) == 2.0
  assert epochs.weighted_correct(right_everywhere, labels, jnp.ones(6)) == 6.0


def test_epoch_accuracy_known_answer_and_wrong_lengths():
  plan = epochs.epoch_plan(10, 4)  # 3 steps an epoch
  correct = np.array([4, 2, 1, 3, 4, 2], np.float32)
  accuracy = epochs.epoch_accuracy(correct, plan)
  assert accuracy.dtype == np.float64
  np.testing.assert_array_equal(accuracy, [7 / 10, 9 / 10])  # the reference's correct / total
  seeds = jnp.stack([correct, correct[::-1]])  # leading axes are kept; a jax array is fine
  np.testing.assert_array_equal(epochs.epoch_accuracy(seeds, plan), [[0.7, 0.9], [0.9, 0.7]])
  for length in (0, 2, 4, 5, 7):
    with pytest.raises(ValueError, match=f"has {length} steps, not .* of 3 steps"):
      epochs.epoch_accuracy(np.ones(length, np.float32), plan)


def test_a_perfect_predictor_scores_exactly_one_every_epoch():
  """Counts from whole epochs of padded batches in one scan: padding never counts."""
  plan = epochs.epoch_plan(10, 4)
  labels = jnp.arange(10, dtype=jnp.int32) % 3
  tokens = labels[:, None]

  @jax.jit
  def correct_per_step(data_key):
    def step(t, _):
      _, labels_B, weights_B = epochs.batch_at(data_key, t, plan, tokens, labels)
      return t + 1, epochs.weighted_correct(jax.nn.one_hot(labels_B, 3), labels_B, weights_B)

    return jax.lax.scan(step, jnp.int32(0), length=2 * plan.steps_per_epoch)[1]

  accuracy = epochs.epoch_accuracy(correct_per_step(jax.random.key(0)), plan)
  np.testing.assert_array_equal(accuracy, [1.0, 1.0])
