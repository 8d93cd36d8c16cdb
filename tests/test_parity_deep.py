"""Numerical parity of the deep model with its PyTorch reference
(`torch_reference.DeepTransformerModel`): several blocks, several heads, each norm, both
placements of the norms, both read-out positions, a readout of its own size.

The same float32 weights (moved by `jaxnorm.torch_compat`, which is told the layout) and
the same batches in both frameworks; the tolerances are test_parity.py's, for the same
reasons (its docstring), and the checks are the same functions (`parity_checks`), which
compare every block's gradients and running statistics one by one. Measured on CPU at
TINY sizes over the cases below: logits, losses and every block's output <= 7.2e-7;
gradients <= 5.8e-6 relative per tensor (flat components' noise <= 1.5e-8 of the gradient
norm); running variance 1.2e-7 relative (one ulp), running mean 1.5e-8; 50 Adam steps:
losses <= 4.0e-6 relative, parameters <= 1.4e-6 off the flat components (their drift up
to 3.5e-2, BatchNorm pre-norm).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip(
  "torch", reason="the parity tests need PyTorch: pip install -e '.[parity]'"
)

import parity_checks as parity  # noqa: E402  (after the skip: these import torch)

from jaxnorm import config, data, model, torch_compat  # noqa: E402
from jaxnorm import torch_reference as ref  # noqa: E402

torch.set_num_threads(1)  # as test_parity.py: reproducible reductions, no spinning pool

# (norm, placement, readout, blocks, heads, classes): every norm with both placements, and
# across them each other axis takes each of its values (TINY: D = 16, 36 keys, V = 38).
CASES = [
  ("layernorm", "post", "last", 2, 2, None),
  ("layernorm", "pre", "first", 3, 4, 40),
  ("batchnorm", "post", "first", 3, 1, None),
  ("batchnorm", "pre", "last", 2, 4, 40),
  ("none", "post", "first", 2, 4, 40),
  ("none", "pre", "last", 3, 2, None),
  ("l2", "post", "last", 3, 2, 40),
  ("l2", "pre", "first", 2, 1, None),
]
IDS = ["-".join(str(x) for x in case) for case in CASES]
ADAM_CASES = [CASES[1], CASES[3], CASES[6]]
ADAM_STEPS = 50


def _config(placement, readout, blocks, heads, classes):
  return config.TINY.replace(
    norm_placement=placement,
    readout=readout,
    num_blocks=blocks,
    num_heads=heads,
    num_classes=classes,
  )


def _pair(cfg, norm, seed=0):
  """The deep reference with PyTorch's init, and the jaxnorm model holding its weights."""
  torch_model = ref.make_deep_model(cfg, norm, seed=seed)
  variables = torch_compat.from_torch(torch_model.state_dict(), norm, **parity.layout(cfg))
  return torch_model, model.build(cfg, norm), variables


@pytest.mark.parametrize("norm, placement, readout, blocks, heads, classes", CASES, ids=IDS)
def test_deep_state_dict_names_shapes_and_round_trip(
  norm, placement, readout, blocks, heads, classes
):
  """torch_compat's names are the deep reference's; a PyTorch state_dict goes to jaxnorm
  and back unchanged, and loads strictly into a fresh reference."""
  cfg = _config(placement, readout, blocks, heads, classes)
  torch_model, _, variables = _pair(cfg, norm)
  state = parity.numpy_state(torch_model)
  assert set(torch_compat.torch_names(norm, **parity.layout(cfg))) == set(state)
  back = torch_compat.to_torch(variables, norm, num_batches_tracked=0, **parity.layout(cfg))
  assert set(back) == set(state)
  for name, value in state.items():
    np.testing.assert_array_equal(back[name], value, err_msg=name)
  fresh = ref.make_deep_model(cfg, norm, seed=1)
  parity.load(fresh, variables, cfg, norm)  # strict: every name and shape
  for name, value in parity.numpy_state(fresh).items():
    np.testing.assert_array_equal(value, state[name], err_msg=name)


@pytest.mark.parametrize("norm", ref.NORMS)
def test_one_block_deep_reference_is_the_reference(norm):
  """With one post-norm block read out last, the deep reference is the notebook's model:
  the same names, the same weights from the same seed, the same logits."""
  cfg = config.TINY
  deep, notebook = ref.make_deep_model(cfg, norm, seed=4), ref.make_model(cfg, norm, seed=4)
  deep_state, notebook_state = parity.numpy_state(deep), parity.numpy_state(notebook)
  assert list(deep_state) == list(notebook_state)
  for name, value in notebook_state.items():
    np.testing.assert_array_equal(deep_state[name], value, err_msg=name)
  X, _ = ref.as_torch_batch(*data.batch(jax.random.key(0), cfg))
  for mode in (False, True):
    deep.train(mode)
    notebook.train(mode)
    with torch.no_grad():
      np.testing.assert_array_equal(deep(X).numpy(), notebook(X).numpy())


@pytest.mark.parametrize("norm, placement, readout, blocks, heads, classes", CASES, ids=IDS)
def test_deep_forward_gradients_and_running_stats_match(
  norm, placement, readout, blocks, heads, classes
):
  cfg = _config(placement, readout, blocks, heads, classes)
  torch_model, m, variables = _pair(cfg, norm)
  tokens, labels = data.batch(jax.random.key(1), cfg)
  # Every block's output, evaluation mode (layer 0: the embedding).
  torch_model.eval()
  with torch.no_grad():
    layers_t = [x.numpy() for x in torch_model.layer_outputs(ref.as_torch_batch(tokens, labels)[0])]
  layers_j = m.apply(variables, tokens, False, method=model.Transformer.layer_features)
  assert layers_j.shape == (blocks + 1, cfg.batch_size, cfg.seq_len, cfg.embed_dim)
  np.testing.assert_allclose(layers_j, np.stack(layers_t), rtol=0, atol=1e-5)
  parity.assert_forward_backward_match(cfg, norm, torch_model, m, variables, tokens, labels)


@pytest.mark.parametrize("norm, placement, readout, blocks, heads, classes", ADAM_CASES)
def test_deep_adam_training_trajectories_match(norm, placement, readout, blocks, heads, classes):
  cfg = _config(placement, readout, blocks, heads, classes)
  torch_model, m, variables = _pair(cfg, norm, seed=1)
  parity.assert_adam_trajectories_match(cfg, norm, torch_model, m, variables, ADAM_STEPS)


def test_deep_initialization_matches_pytorch_in_distribution():
  """Each block's initial tensors (PAPER sizes, 3 pre-norm BatchNorm blocks, so every
  initializer and a final norm) follow PyTorch's default distributions, as
  test_parity's test of one block, and the blocks are drawn independently: no two blocks
  hold the same or correlated values."""
  cfg, norm = config.PAPER.replace(num_blocks=3, num_heads=4, norm_placement="pre"), "batchnorm"
  torch_model = ref.make_deep_model(cfg, norm, seed=0)
  m = model.build(cfg, norm)
  variables = m.init(jax.random.key(0), jnp.zeros((1, cfg.seq_len), jnp.int32), train=False)
  init_j = torch_compat.to_torch(variables, norm, **parity.layout(cfg))
  parity.assert_drawn_alike(
    init_j, parity.numpy_state(torch_model), parity.pytorch_uniform_bounds(cfg)
  )
  prefixes = parity.block_prefixes(cfg)
  for name in (n[len(prefixes[0]) :] for n in init_j if n.startswith(prefixes[0])):
    per_block = [init_j[p + name].ravel().astype(np.float64) for p in prefixes]
    if np.all(per_block[0] == per_block[0][0]):  # constants: the same in every block
      continue
    for i in range(len(per_block)):
      for j in range(i):
        a, b = per_block[i], per_block[j]
        corr = np.corrcoef(a, b)[0, 1]
        assert abs(corr) < 5 / math.sqrt(a.size), f"{name}: blocks {j}, {i} correlate ({corr:.2e})"
