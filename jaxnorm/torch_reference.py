"""The reference notebook's PyTorch model, training loop and analyses, as importable code.

This is the yardstick the parity tests hold jaxnorm against, and what a benchmark times.
The modules are the notebook's own (`MinimalistTransformerBlock`, `TransformerModel`);
the functions take what the notebook kept in globals (config, RNG, hooked activation) as
arguments. Deliberate changes: `loss_landscape` restores the weights before every point
unless `cumulative=True`, which reproduces the notebook's slice (it never restores them,
so point i sits at cumsum(alphas)[i]); `torch.linalg.svdvals` replaces the deprecated
`torch.svd`. The caller picks the thread count (`torch.set_num_threads`) and device.

    model = make_model(jaxnorm.PAPER, "layernorm", seed=0)
    optimizer = make_optimizer(model, 1e-4)
    losses = train_steps(model, optimizer, batches)  # batches: [(X_BxL long, Y_B long)]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim

NORMS = ("layernorm", "batchnorm", "none")
# The deep models also take the paper's parameter-free "manual L2" norm (jaxnorm's "l2").
DEEP_NORMS = (*NORMS, "l2")


class ManualL2Norm(nn.Module):
  """The paper's "manual L2" normalization: x / max(||x||_2, 1e-9) per token."""

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, p=2, dim=-1, eps=1e-9)


class TokenBatchNorm(nn.BatchNorm1d):
  """`BatchNorm1d` over the feature axis of (B, L, D), as the notebook applies it (statistics
  per feature over batch x sequence); its names are BatchNorm1d's own (`weight`,
  `running_mean`, ...), with no wrapper in between."""

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return super().forward(x.permute(0, 2, 1)).permute(0, 2, 1)


def make_norm(norm: str, embed_dim: int) -> nn.Module:
  """The PyTorch module of a `DEEP_NORMS` name; `nn.Identity` for "none"."""
  if norm == "layernorm":
    return nn.LayerNorm(embed_dim)
  if norm == "batchnorm":
    return TokenBatchNorm(embed_dim)
  if norm == "l2":
    return ManualL2Norm()
  if norm == "none":
    return nn.Identity()
  raise ValueError(f"norm={norm!r}; choose from {DEEP_NORMS}")


class MinimalistTransformerBlock(nn.Module):
  """A Transformer block that can use LayerNorm, BatchNorm, or no normalization."""

  def __init__(self, embed_dim: int, num_heads: int, normalization_type: str = "layernorm"):
    super().__init__()
    if normalization_type not in NORMS:
      raise ValueError(f"normalization_type={normalization_type!r}; choose from {NORMS}")
    self.normalization_type = normalization_type
    self.attention = nn.MultiheadAttention(embed_dim, num_heads, batch_first=True)
    self.ffn = nn.Sequential(
      nn.Linear(embed_dim, 4 * embed_dim), nn.GELU(), nn.Linear(4 * embed_dim, embed_dim)
    )
    if self.normalization_type == "layernorm":
      self.norm1 = nn.LayerNorm(embed_dim)
      self.norm2 = nn.LayerNorm(embed_dim)
    elif self.normalization_type == "batchnorm":
      self.norm1 = nn.BatchNorm1d(embed_dim)
      self.norm2 = nn.BatchNorm1d(embed_dim)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    attn_output, _ = self.attention(x, x, x)
    x = x + attn_output
    if self.normalization_type == "layernorm":
      x = self.norm1(x)
    elif self.normalization_type == "batchnorm":
      x = self.norm1(x.permute(0, 2, 1)).permute(0, 2, 1)  # Permute for BatchNorm

    ffn_output = self.ffn(x)
    x = x + ffn_output
    if self.normalization_type == "layernorm":
      x = self.norm2(x)
    elif self.normalization_type == "batchnorm":
      x = self.norm2(x.permute(0, 2, 1)).permute(0, 2, 1)
    return x


class TransformerModel(nn.Module):
  """Embeddings, one block, a linear readout of the last position."""

  def __init__(self, vocab_size: int, embed_dim: int, num_heads: int, normalization_type: str):
    super().__init__()
    self.token_embeddings = nn.Embedding(vocab_size, embed_dim)
    self.transformer_block = MinimalistTransformerBlock(embed_dim, num_heads, normalization_type)
    self.to_vocab = nn.Linear(embed_dim, vocab_size)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.token_embeddings(x)
    x = self.transformer_block(x)
    query_representation = x[:, -1, :]
    return self.to_vocab(query_representation)


class DeepBlock(nn.Module):
  """`MinimalistTransformerBlock` with any `DEEP_NORMS` norm, placed after (post, the
  reference's) or before (pre) each residual branch."""

  def __init__(self, embed_dim: int, num_heads: int, norm: str, placement: str = "post"):
    super().__init__()
    self.placement = placement
    self.attention = nn.MultiheadAttention(embed_dim, num_heads, batch_first=True)
    self.ffn = nn.Sequential(
      nn.Linear(embed_dim, 4 * embed_dim), nn.GELU(), nn.Linear(4 * embed_dim, embed_dim)
    )
    self.norm1 = make_norm(norm, embed_dim)
    self.norm2 = make_norm(norm, embed_dim)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    if self.placement == "pre":
      h = self.norm1(x)
      x = x + self.attention(h, h, h)[0]
      return x + self.ffn(self.norm2(x))
    x = self.norm1(x + self.attention(x, x, x)[0])
    return self.norm2(x + self.ffn(x))


class DeepTransformerModel(nn.Module):
  """The paper's Experiment 4 encoder: embedding (no positional encoding), `num_blocks`
  blocks, (pre-norm: a final norm), a linear readout of position `readout_index`.

  Named as jaxnorm's `Transformer`: one block is `transformer_block`, as in the notebook
  (one post-norm block read out last is then `TransformerModel`, with the same names and,
  from the same seed, the same weights); several are the list `blocks`.
  """

  def __init__(
    self,
    vocab_size: int,
    embed_dim: int,
    num_heads: int,
    norm: str,
    num_blocks: int,
    placement: str = "post",
    readout_index: int = -1,
    num_classes: int | None = None,
  ):
    super().__init__()
    self.readout_index = readout_index
    self.token_embeddings = nn.Embedding(vocab_size, embed_dim)
    blocks = [DeepBlock(embed_dim, num_heads, norm, placement) for _ in range(num_blocks)]
    if num_blocks == 1:
      self.transformer_block = blocks[0]
    else:
      self.blocks = nn.ModuleList(blocks)
    self.final_norm = make_norm(norm, embed_dim) if placement == "pre" else None
    self.to_vocab = nn.Linear(embed_dim, vocab_size if num_classes is None else num_classes)

  def block_list(self) -> list[DeepBlock]:
    """The blocks in order."""
    return list(self.blocks) if hasattr(self, "blocks") else [self.transformer_block]

  def layer_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
    """The embedding output and every block's output: num_blocks + 1 tensors (B, L, D)."""
    outputs = [self.token_embeddings(x)]
    for block in self.block_list():
      outputs.append(block(outputs[-1]))
    return outputs

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.layer_outputs(x)[-1]
    if self.final_norm is not None:
      x = self.final_norm(x)
    return self.to_vocab(x[:, self.readout_index, :])


def make_deep_model(cfg, norm: str, seed: int | None = None) -> DeepTransformerModel:
  """`DeepTransformerModel` at the sizes of a `jaxnorm.Config` (its `num_blocks`,
  `norm_placement`, `readout`, `num_classes`), PyTorch's default init, drawn after
  `torch.manual_seed(seed)` with `seed`."""
  if seed is not None:
    torch.manual_seed(seed)
  return DeepTransformerModel(
    cfg.vocab_size,
    cfg.embed_dim,
    cfg.num_heads,
    norm,
    cfg.num_blocks,
    cfg.norm_placement,
    {"last": -1, "first": 0}[cfg.readout],
    cfg.num_classes,
  )


def make_model(cfg, norm: str, seed: int | None = None) -> TransformerModel:
  """The notebook's model at the sizes of a `jaxnorm.Config`, float32, PyTorch's default init.

  With `seed`, the initialization is drawn after `torch.manual_seed(seed)`.
  """
  if seed is not None:
    torch.manual_seed(seed)
  return TransformerModel(cfg.vocab_size, cfg.embed_dim, cfg.num_heads, norm)


def make_optimizer(model: nn.Module, learning_rate: float) -> optim.Optimizer:
  """The notebook's optimizer: Adam with PyTorch's defaults."""
  return optim.Adam(model.parameters(), lr=learning_rate)


def as_torch_batch(tokens_BxL, labels_B) -> tuple[torch.Tensor, torch.Tensor]:
  """Any array pair (e.g. from `jaxnorm.data.batch`) as the int64 tensors the model takes."""
  return (
    torch.from_numpy(np.array(tokens_BxL, dtype=np.int64)),
    torch.from_numpy(np.array(labels_B, dtype=np.int64)),
  )


def generate_batch(cfg, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
  """The notebook's `generate_associative_recall_batch`, with an explicit NumPy RNG."""
  keys = torch.arange(0, cfg.num_keys)
  X = torch.zeros((cfg.batch_size, cfg.seq_len), dtype=torch.long)
  Y = torch.zeros((cfg.batch_size), dtype=torch.long)
  for i in range(cfg.batch_size):
    context_indices = rng.choice(len(keys), cfg.theoretical_rank, replace=False)
    query_idx = context_indices[0]
    context_indices = context_indices[1:]
    sequence = torch.from_numpy(context_indices)
    X[i, : len(sequence)] = sequence
    X[i, -1] = int(query_idx)
    Y[i] = int(query_idx)
  return X, Y


def train_steps(
  model: nn.Module,
  optimizer: optim.Optimizer,
  batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
) -> list[float]:
  """The body of the notebook's `train_model` loop, one step per batch. Returns the losses."""
  criterion = nn.CrossEntropyLoss()
  loss_history = []
  for X, Y in batches:
    model.train()
    optimizer.zero_grad()
    logits = model(X)
    loss = criterion(logits, Y)
    loss.backward()
    optimizer.step()
    loss_history.append(loss.item())
  return loss_history


def random_direction(model: nn.Module) -> list[torch.Tensor]:
  """The notebook's direction: Gaussian per trainable parameter, unit global L2 norm."""
  direction = [torch.randn_like(p) for p in model.parameters() if p.requires_grad]
  norm = np.sqrt(sum(torch.sum(d**2).item() for d in direction))
  return [d / norm for d in direction]


def loss_landscape(
  model: nn.Module,
  direction: Sequence[torch.Tensor],
  X: torch.Tensor,
  Y: torch.Tensor,
  alphas: Sequence[float],
  cumulative: bool = False,
) -> list[float]:
  """Evaluation-mode loss along `direction` (one tensor per trainable parameter, in
  `model.parameters()` order) at each alpha; the model's weights are left as found.

  cumulative=False restores the weights before every point (the intended slice).
  cumulative=True is the notebook's `get_loss_landscape` verbatim: it adds alpha * d on
  top of the previous point, so point i is at cumsum(alphas)[i].
  """
  final_state_dict = {k: v.clone() for k, v in model.state_dict().items()}
  criterion = nn.CrossEntropyLoss()
  losses = []
  model.eval()
  with torch.no_grad():
    for alpha in alphas:
      if not cumulative:
        model.load_state_dict(final_state_dict)
      trainable = (p for p in model.parameters() if p.requires_grad)
      for param, d in zip(trainable, direction, strict=True):
        param.data += alpha * d
      logits = model(X)
      losses.append(criterion(logits, Y).item())
  model.load_state_dict(final_state_dict)
  return losses


def block_output(model: TransformerModel, X: torch.Tensor) -> torch.Tensor:
  """The block's evaluation-mode output, captured by a forward hook as in the notebook."""
  captured = {}

  def hook(module, inputs, output):
    captured["output"] = output.detach()

  handle = model.transformer_block.register_forward_hook(hook)
  model.eval()
  try:
    with torch.no_grad():
      model(X)
  finally:
    handle.remove()
  return captured["output"]


def activation_spectrum(model: TransformerModel, X: torch.Tensor) -> np.ndarray:
  """The notebook's `get_activation_spectrum`: singular values of the (B * L, D) block output.

  `torch.linalg.svd` replaces the deprecated `torch.svd`; the singular values are the same.
  """
  activations = block_output(model, X)
  activations_matrix = activations.reshape(-1, activations.shape[-1])
  return torch.linalg.svdvals(activations_matrix).cpu().numpy()
