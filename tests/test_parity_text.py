"""Numerical parity of Experiment 4's model with its PyTorch reference
(`torch_reference.DeepTransformerModel`) on AG News token rows: several post-norm blocks,
no positional encoding, [CLS] (position 0) read out into 4 classes, [PAD] padding not
masked in attention, and the fixed-shape last batch of an epoch (`jaxnorm.epochs`).

The rows are the project's own: test AG News files (`text_files`) tokenized by
`agnews.load_agnews` with the small WordPiece vocabulary to L = 12 tokens, so some rows are
cut at [SEP] and the others end in [PAD]s. The same float32 weights in both frameworks
(`jaxnorm.torch_compat`), D = 16, 2-4 heads, 2-3 blocks. What is compared, at
test_parity_deep.py's tolerances (`parity_checks`):

1. One batch of all N = 7 rows, each norm (BatchNorm too: its statistics span the whole
   batch, padding tokens included, in both frameworks): every block's output in evaluation
   and training mode (atol 1e-5), logits and losses (atol 1e-5), every gradient (relative
   1e-4 per tensor), BatchNorm's running statistics.
2. The padded last batch: `epochs.batch_at` gives B = 5 rows of which B' = 2 are real and 3
   are other examples of the epoch with weight 0. `epochs.weighted_cross_entropy` and its
   gradients equal PyTorch's `CrossEntropyLoss` on the 2 real rows alone, its smaller last
   batch, and `epochs.weighted_correct` is its count of right argmaxes. Per-token norms only:
   BatchNorm's statistics would take in the padding rows (epochs.py's docstring).
3. 10 Adam steps (5 epochs of 2 batches, each epoch's last batch padded): jax.grad of the
   weighted loss and `train.apply_gradients` (optax Adam) against `torch.optim.Adam` on the
   real rows only: losses (rtol 1e-4), right-prediction counts (exact), final parameters
   off the flat components (atol 1e-4; `parity_checks.flat_components`).

Measured on CPU over the cases below: block outputs <= 9.6e-7 (BatchNorm in evaluation
mode 2.9e-6, 5e-7 of their largest value), logits and losses <= 3.0e-7, gradients <= 5.4e-6
relative per tensor (flat components' noise <= 3.6e-8 of the gradient norm), running
variance 1.2e-7 relative (one ulp), running mean 2.2e-8; the padded batch's loss 2.4e-7 off
PyTorch's, its real rows' logits 1.8e-7, its gradients <= 5.2e-7 relative; 10 Adam steps:
losses <= 2.1e-5 relative (no norm at lr 1e-2; LayerNorm 2.4e-6, L2 7.9e-7), parameters
<= 6.1e-6 off the flat components (their drift up to 1.4e-2), right-prediction counts equal.
"""

import copy
import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip(
  "torch", reason="the parity tests need PyTorch: pip install -e '.[parity]'"
)
pytest.importorskip(
  "tokenizers", reason="tokenizing AG News needs tokenizers: pip install -e '.[test]'"
)

import parity_checks as parity  # noqa: E402  (after the skip: these import torch)
from text_files import CLS, PAD, SEP, TEST, TRAIN, VOCAB, write_csv, write_vocab  # noqa: E402

from jaxnorm import agnews, epochs, loss, model, torch_compat, train  # noqa: E402
from jaxnorm import torch_reference as ref  # noqa: E402

torch.set_num_threads(1)  # as test_parity.py: reproducible reductions, no spinning pool

MAX_LENGTH = 12  # cuts the two longest texts at [SEP]; the others end in [PAD]s
NUM_CLASSES = 4
EMBED_DIM = 16
# All 7 test texts as the training split; batches of 5: 2 per epoch, the last 2 real + 3 padding.
PLAN = epochs.epoch_plan(len(TRAIN) + len(TEST), 5)
ADAM_STEPS = 10  # 5 epochs
LEARNING_RATES = {"layernorm": 3e-3, "l2": 3e-3, "none": 1e-2}  # as config.TINY's

# (norm, blocks, heads)
PER_TOKEN_CASES = [("layernorm", 3, 4), ("l2", 2, 2), ("none", 2, 4)]
FULL_BATCH_CASES = [*PER_TOKEN_CASES, ("batchnorm", 3, 2)]


@pytest.fixture(scope="module")
def split(tmp_path_factory):
  """The training split of the test AG News files (7 texts), tokenized by `load_agnews`."""
  folder = tmp_path_factory.mktemp("agnews")
  data = agnews.load_agnews(
    write_csv(folder / "data", train=TRAIN + TEST),
    write_vocab(folder / "vocab.txt"),
    max_length=MAX_LENGTH,
    cache_dir=folder / "cache",
    progress=False,
  )
  assert (data.vocab_size, data.pad_id, data.num_classes) == (len(VOCAB), PAD, NUM_CLASSES)
  return data.train


def _config(blocks, heads, batch_size):
  """What the reference and `parity_checks` read of a config (`config.Config` holds no
  4-class readout for the synthetic task)."""
  return types.SimpleNamespace(
    vocab_size=len(VOCAB),
    embed_dim=EMBED_DIM,
    num_heads=heads,
    num_blocks=blocks,
    norm_placement="post",
    readout="first",
    num_classes=NUM_CLASSES,
    batch_size=batch_size,
  )


def _pair(cfg, norm, seed=0, scan_unroll=1):
  """The reference with PyTorch's init, and jaxnorm's `Transformer` holding its weights."""
  torch_model = ref.make_deep_model(cfg, norm, seed=seed)
  variables = torch_compat.from_torch(torch_model.state_dict(), norm, **parity.layout(cfg))
  m = model.Transformer(
    cfg.vocab_size,
    cfg.embed_dim,
    cfg.num_heads,
    norm,
    "highest",
    num_blocks=cfg.num_blocks,
    placement=cfg.norm_placement,
    readout=cfg.readout,
    num_classes=cfg.num_classes,
    scan_unroll=scan_unroll,
  )
  return torch_model, m, variables


def _weighted_loss(m, params, tokens_BxL, labels_B, weights_B):
  """Training-mode `epochs.weighted_cross_entropy` and the logits (per-token norms: no
  statistics to update)."""
  logits_BxC = m.apply({"params": params}, tokens_BxL, train=True)
  return epochs.weighted_cross_entropy(logits_BxC, labels_B, weights_B), logits_BxC


def _torch_loss_and_grads(torch_model, X, Y):
  """PyTorch's training-mode CrossEntropyLoss on (X, Y), its gradients and logits."""
  torch_model.train()
  torch_model.zero_grad()
  logits = torch_model(X)
  value = torch.nn.functional.cross_entropy(logits, Y)
  value.backward()
  grads = {n: p.grad.numpy().copy() for n, p in torch_model.named_parameters()}
  return value.item(), grads, logits.detach().numpy()


def test_the_rows_hold_cls_sep_and_padding(split):
  """What the parity below runs on: [CLS] first, one [SEP] a row, some rows cut at [SEP] and
  some padded with [PAD] (the ids of the test vocabulary, [PAD] not 0)."""
  tokens = split.tokens_NxL
  assert tokens.shape == (PLAN.num_examples, MAX_LENGTH)
  assert (tokens[:, 0] == CLS).all() and ((tokens == SEP).sum(axis=1) == 1).all()
  padded = (tokens == PAD).any(axis=1)
  assert padded.any() and not padded.all()
  assert (tokens[~padded, -1] == SEP).all()
  assert sorted(set(split.labels_N.tolist())) == list(range(NUM_CLASSES))


@pytest.mark.parametrize("norm, blocks, heads", FULL_BATCH_CASES)
def test_token_rows_forward_blocks_gradients_match(split, norm, blocks, heads):
  tokens, labels = split.tokens_NxL, split.labels_N
  cfg = _config(blocks, heads, batch_size=len(labels))
  torch_model, m, variables = _pair(cfg, norm)
  X, _ = ref.as_torch_batch(tokens, labels)
  # Every block's output (layer 0: the embedding), in both modes; training mode on a copy,
  # whose BatchNorm statistics it moves.
  for train_mode in (False, True):
    twin = copy.deepcopy(torch_model).train(train_mode)
    with torch.no_grad():
      layers_t = np.stack([x.numpy() for x in twin.layer_outputs(X)])
    layers_j, _ = m.apply(
      variables,
      tokens,
      train_mode,
      method=model.Transformer.layer_features,
      mutable=["batch_stats"],
    )
    assert layers_j.shape == (blocks + 1, len(labels), MAX_LENGTH, EMBED_DIM)
    np.testing.assert_allclose(layers_j, layers_t, rtol=0, atol=1e-5, err_msg=f"{train_mode=}")
  parity.assert_forward_backward_match(cfg, norm, torch_model, m, variables, tokens, labels)


@pytest.mark.parametrize("norm, blocks, heads", PER_TOKEN_CASES)
def test_padded_last_batch_is_pytorchs_smaller_batch(split, norm, blocks, heads):
  """`weighted_cross_entropy` on the padded last batch of an epoch is PyTorch's loss on its
  real rows alone, in value and gradient; `weighted_correct` counts their right argmaxes."""
  cfg = _config(blocks, heads, batch_size=PLAN.batch_size)
  torch_model, m, variables = _pair(cfg, norm)
  last = PLAN.steps_per_epoch - 1
  tokens, labels, weights = jax.device_get(
    epochs.batch_at(jax.random.key(3), last, PLAN, split.tokens_NxL, split.labels_N)
  )
  real = PLAN.last_batch_size
  np.testing.assert_array_equal(weights, [1.0] * real + [0.0] * (PLAN.batch_size - real))
  # The padding rows are other examples of the data set, not copies of the real rows.
  rows = {tuple(r) for r in split.tokens_NxL.tolist()}
  assert all(tuple(r) in rows for r in tokens.tolist())
  assert not {tuple(r) for r in tokens[real:].tolist()} & {tuple(r) for r in tokens[:real].tolist()}

  loss_and_grads = jax.jit(jax.value_and_grad(functools.partial(_weighted_loss, m), has_aux=True))
  (loss_j, logits_j), grads_j = loss_and_grads(variables["params"], tokens, labels, weights)
  correct_j = epochs.weighted_correct(logits_j, labels, weights)
  loss_t, grads_t, logits_t = _torch_loss_and_grads(
    torch_model, *ref.as_torch_batch(tokens[:real], labels[:real])
  )

  np.testing.assert_allclose(logits_j[:real], logits_t, rtol=0, atol=1e-5)
  np.testing.assert_allclose(loss_j, loss_t, rtol=0, atol=1e-5)
  # The padding rows would change the loss: the weights, not the rows, make it B' rows'.
  assert abs(loss.cross_entropy(logits_j, labels) - loss_t) > 1e-3
  parity.assert_gradients_match(cfg, norm, grads_j, grads_t)
  assert correct_j == np.sum(logits_t.argmax(-1) == labels[:real])


@pytest.mark.parametrize("norm, blocks, heads", PER_TOKEN_CASES)
def test_adam_steps_over_padded_epochs_match(split, norm, blocks, heads):
  """10 Adam steps, batch t = `epochs.batch_at(data_key, t)`: jaxnorm's weighted loss and
  Adam update against PyTorch's Adam on each batch's real rows, as its DataLoader gives them."""
  cfg = _config(blocks, heads, batch_size=PLAN.batch_size)
  torch_model, m, variables = _pair(cfg, norm, seed=1, scan_unroll=blocks)  # as training
  tokens_N, labels_N = jnp.asarray(split.tokens_NxL), jnp.asarray(split.labels_N)
  lr = LEARNING_RATES[norm]

  opt_state = train.optimizer().init(variables["params"])
  hyperparams = {**opt_state.hyperparams, "learning_rate": jnp.asarray(lr, jnp.float32)}
  state = train.TrainState(
    step=jnp.zeros((), jnp.int32),
    params=variables["params"],
    batch_stats={},
    opt_state=opt_state._replace(hyperparams=hyperparams),
    data_key=jax.random.key(4),
  )

  @jax.jit
  def step(state):
    batch = epochs.batch_at(state.data_key, state.step, PLAN, tokens_N, labels_N)
    (value, logits), grads = jax.value_and_grad(_weighted_loss, argnums=1, has_aux=True)(
      m, state.params, *batch
    )
    _, labels_B, weights_B = batch
    correct = epochs.weighted_correct(logits, labels_B, weights_B)
    with_padding = epochs.weighted_correct(logits, labels_B, jnp.ones_like(weights_B))
    return train.apply_gradients(state, grads, state.batch_stats), value, (correct, with_padding)

  losses_j, correct_j, correct_all_rows = [], [], []
  for _ in range(ADAM_STEPS):
    state, value, (correct, with_padding) = step(state)
    losses_j.append(float(value))
    correct_j.append(float(correct))
    correct_all_rows.append(float(with_padding))

  # PyTorch: each step's real rows only, a batch of B' = 2 at each epoch's end.
  optimizer = ref.make_optimizer(torch_model, lr)
  losses_t, correct_t, seen = [], [], []
  for t in range(ADAM_STEPS):
    indices, weights = jax.device_get(epochs.batch_indices(jax.random.key(4), t, PLAN))
    seen.append(indices[weights == 1])
    X, Y = ref.as_torch_batch(split.tokens_NxL[seen[-1]], split.labels_N[seen[-1]])
    optimizer.zero_grad()
    torch_model.train()
    logits = torch_model(X)
    value = torch.nn.functional.cross_entropy(logits, Y)
    value.backward()
    optimizer.step()
    losses_t.append(value.item())
    correct_t.append(int((logits.argmax(-1) == Y).sum()))
  # Each epoch's real rows are all N examples once, in a new order each epoch.
  per_epoch = np.concatenate(seen).reshape(-1, PLAN.num_examples)
  assert (np.sort(per_epoch, axis=1) == np.arange(PLAN.num_examples)).all()
  assert len({tuple(e) for e in per_epoch}) > 1

  np.testing.assert_allclose(losses_j, losses_t, rtol=1e-4, atol=0)
  np.testing.assert_array_equal(correct_j, correct_t)
  assert correct_j != correct_all_rows  # the padding rows' right answers would count
  X, Y = ref.as_torch_batch(split.tokens_NxL[seen[-1]], split.labels_N[seen[-1]])
  parity.assert_trained_models_match(
    cfg, norm, torch_model, state.params, state.batch_stats, ADAM_STEPS, X, Y
  )
