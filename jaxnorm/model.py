"""The reference's minimal Transformer, and its deep family, as pure-functional Flax linen.

  tokens_BxL -> Embed -> x = norm1(x + MHA(x, x, x)) -> x = norm2(x + FFN(x))
             -> Dense readout of the last position -> logits_BxV

is Experiment 2's model: one post-norm block, no attention mask, no positional encoding,
FFN = Dense(4D) -> exact GELU -> Dense(D). `Config` also sets the number of blocks, of
heads, the norms' placement (post / pre, with a final norm), the read-out position (last /
first) and the number of classes: Experiment 4's model is 6 post-norm blocks, 4 heads,
read out at the first position. Every initializer reproduces PyTorch's default for the layer the
reference uses, since Flax's defaults differ:

| parameter                      | PyTorch default                         | Flax default      |
|--------------------------------|-----------------------------------------|-------------------|
| `nn.Embedding` table           | N(0, 1)                                 | N(0, 1/sqrt(D))   |
| `nn.Linear` weight and bias    | U(-1/sqrt(fan_in), 1/sqrt(fan_in))      | LeCun normal, 0   |
| MHA `in_proj_weight` (3D, D)   | Xavier uniform over the stacked matrix  | --                |
| MHA `in_proj_bias`             | 0                                       | --                |
| MHA `out_proj` weight / bias   | U(-1/sqrt(D), 1/sqrt(D)) / 0            | --                |
| GELU                           | exact (erf)                             | tanh approximation|

Flax kernels are (in, out), the transpose of PyTorch's (out, in) weights;
`jaxnorm.torch_compat` converts between the two.

Every matrix product runs at the model's `precision` (`Config.matmul_precision`, default
"highest": full float32, as PyTorch computes float32 matmuls). XLA's own default on NVIDIA
GPUs is TF32 (a 10-bit mantissa for the products), which would make the model compute
something other than the reference; `None` ("default") leaves the choice to the backend.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxnorm import norms
from jaxnorm.config import Config
from jaxnorm.layers import (  # noqa: F401  (check_ids, FeedForward: part of this module's API)
  FeedForward,
  Precision,
  SelfAttention,
  check_ids,
  torch_linear,
)


class Block(nn.Module):
  """One Transformer block, its norms placed after (post) or before (pre) each residual branch.

  post (the reference's): x = norm1(x + attn(x));        x = norm2(x + ffn(x))
  pre:                    x = x + attn(norm1(x));         x = x + ffn(norm2(x))
  """

  embed_dim: int
  num_heads: int
  norm: str
  precision: Precision = None
  placement: str = "post"

  def setup(self):
    make_norm = norms.get(self.norm).make
    self.attention = SelfAttention(self.embed_dim, self.num_heads, self.precision)
    self.ffn = FeedForward(self.embed_dim, self.precision)
    self.norm1 = make_norm()
    self.norm2 = make_norm()

  def __call__(self, x_BxLxD: jax.Array, train: bool) -> jax.Array:
    return self.after_attention(
      x_BxLxD, self.attention(self.attention_input(x_BxLxD, train)), train
    )

  def attention_input(self, x_BxLxD: jax.Array, train: bool) -> jax.Array:
    """What attention projects: x (post-norm) or norm1(x) (pre-norm)."""
    return self.norm1(x_BxLxD, train) if self.placement == "pre" else x_BxLxD

  def after_attention(self, x_BxQxD: jax.Array, att_BxQxD: jax.Array, train: bool) -> jax.Array:
    """The rest of the block at Q positions, given their inputs and attention outputs.

    With all positions this is `__call__`; with fewer it is exact only where both norms
    act on each token alone (see `Transformer.readout_token_is_exact`).
    """
    if self.placement == "pre":
      h_BxQxD = x_BxQxD + att_BxQxD
      return h_BxQxD + self.ffn(self.norm2(h_BxQxD, train))
    x_BxQxD = self.norm1(x_BxQxD + att_BxQxD, train)
    return self.norm2(x_BxQxD + self.ffn(x_BxQxD), train)


class ScannedBlock(Block):
  """A `Block` as the body of `nn.scan`: (x, train) -> (carry, per-layer output), both x."""

  def __call__(self, x_BxLxD: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
    y_BxLxD = super().__call__(x_BxLxD, train)
    return y_BxLxD, y_BxLxD


READOUT_POSITIONS = {"last": -1, "first": 0}  # Config.readout -> the position read out


class Transformer(nn.Module):
  """Embedding, `num_blocks` blocks, readout of one position into `num_classes` logits.
  Apply with `train=True` and `mutable=['batch_stats']` to train; with `train=False` to
  evaluate.

    tokens_BxL -> Embed -> N x Block -> [final norm, pre-norm only]
               -> Dense readout of position `readout` ("last": Experiment 2; "first":
                  Experiment 4's [CLS]) -> logits_BxC

  One block is the submodule `transformer_block`, as the reference names it. Several
  blocks are one `nn.scan` over `ScannedBlock` named `blocks`: every parameter (and
  BatchNorm statistic) gains a leading block axis N, and XLA compiles one block whatever
  the depth (`scan_unroll` = N unrolls it instead, as training does up to 6 blocks:
  `build_for_training`). Each block is initialized independently, as PyTorch initializes N
  separate modules.

  Three exact ways to get the logits, all with the same parameters:

  * `__call__`: the reference's computation, every position projected and normalized.
  * `__call__(..., project_table=True)`: the same, but q, k, v are gathered from the
    embedding table projected once (V x 3D) instead of projecting every token
    (B L x 3D); cheaper whenever B L > V. One block only, and with pre-norm only where
    norm1 acts on each token alone (`table_is_exact`).
  * `readout_token_logits`: only the read-out position's query, residual, norms, FFN and
    readout, attending to the projected table weighted by token counts. Exact with one
    block whose norms act on each token alone in this mode (`readout_token_is_exact`).

  `fast_logits` picks the cheapest exact one.
  """

  vocab_size: int
  embed_dim: int
  num_heads: int
  norm: str
  precision: Precision = None
  num_blocks: int = 1
  placement: str = "post"
  readout: str = "last"
  num_classes: int | None = None  # None: the vocabulary (Experiment 2 predicts a token)
  scan_unroll: int = 1

  def setup(self):
    self.token_embeddings = nn.Embed(
      self.vocab_size, self.embed_dim, embedding_init=nn.initializers.normal(1.0)
    )
    args = (self.embed_dim, self.num_heads, self.norm, self.precision, self.placement)
    if self.num_blocks == 1:
      self.transformer_block = Block(*args)
    else:
      self.blocks = nn.scan(
        ScannedBlock,
        variable_axes={"params": 0, "batch_stats": 0},
        split_rngs={"params": True},
        in_axes=nn.broadcast,
        length=self.num_blocks,
        unroll=self.scan_unroll,
      )(*args)
    if self.placement == "pre":
      self.final_norm = norms.get(self.norm).make()
    classes = self.vocab_size if self.num_classes is None else self.num_classes
    self.to_vocab = torch_linear(
      classes, fan_in=self.embed_dim, name="to_vocab", precision=self.precision
    )

  @property
  def readout_index(self) -> int:
    return READOUT_POSITIONS[self.readout]

  def readout_token_is_exact(self, train: bool) -> bool:
    """Whether `readout_token_logits` equals `__call__`: one block, and both norms act on
    each token alone in this mode, so the read-out position depends on the others only
    through attention."""
    return self.num_blocks == 1 and per_token(self.norm, train)

  def table_is_exact(self, train: bool) -> bool:
    """Whether `__call__(..., project_table=True)` equals `__call__`: one block, whose
    attention input is a function of each token alone (post-norm: the embedding; pre-norm:
    norm1 of it, per token in this mode)."""
    return self.num_blocks == 1 and (self.placement == "post" or per_token(self.norm, train))

  def _qkv_table(self, train: bool) -> tuple[jax.Array, jax.Array, jax.Array]:
    """q, k, v of every vocabulary entry, each (V, D): the embedding table (through norm1
    with pre-norm) projected once."""
    block = self.transformer_block
    table_VxD = block.attention_input(self.token_embeddings.embedding, train)
    return tuple(jnp.split(block.attention.in_proj(table_VxD), 3, axis=-1))

  def _blocks(self, x_BxLxD: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
    """The last block's output (B, L, D) and every block's output (N, B, L, D)."""
    if self.num_blocks == 1:
      y_BxLxD = self.transformer_block(x_BxLxD, train)
      return y_BxLxD, y_BxLxD[None]
    return self.blocks(x_BxLxD, train)

  def _head(self, x_BxLxD: jax.Array, train: bool) -> jax.Array:
    return self.final_norm(x_BxLxD, train) if self.placement == "pre" else x_BxLxD

  def features(self, tokens_BxL: jax.Array, train: bool, project_table: bool = False) -> jax.Array:
    """What the readout reads, (B, L, D): the last block's output (after the final norm
    with pre-norm), the activations whose spectrum Figure 2 shows."""
    check_ids(tokens_BxL, self.vocab_size, "token ids")
    x_BxLxD = self.token_embeddings(tokens_BxL)
    if not project_table:
      return self._head(self._blocks(x_BxLxD, train)[0], train)
    if not self.table_is_exact(train):
      raise ValueError(
        f"project_table is not exact for num_blocks={self.num_blocks}, norm={self.norm!r}, "
        f"placement={self.placement!r}, train={train}; use project_table=False"
      )
    q, k, v = (jnp.take(t_VxD, tokens_BxL, axis=0) for t_VxD in self._qkv_table(train))
    att_BxLxD = self.transformer_block.attention.attend(q, k, v)
    return self._head(self.transformer_block.after_attention(x_BxLxD, att_BxLxD, train), train)

  def layer_features(self, tokens_BxL: jax.Array, train: bool) -> jax.Array:
    """The representation at every depth, (N + 1, B, L, D): the embedding output (layer 0)
    and each block's output (layers 1..N; the residual stream with pre-norm, before the
    final norm)."""
    check_ids(tokens_BxL, self.vocab_size, "token ids")
    x_BxLxD = self.token_embeddings(tokens_BxL)
    return jnp.concatenate([x_BxLxD[None], self._blocks(x_BxLxD, train)[1]])

  def __call__(self, tokens_BxL: jax.Array, train: bool, project_table: bool = False) -> jax.Array:
    """Logits (B, C) read from position `readout`."""
    return self.to_vocab(self.features(tokens_BxL, train, project_table)[:, self.readout_index])

  def readout_token_logits(self, tokens_BxL: jax.Array, train: bool) -> jax.Array:
    """The logits of `__call__`, computing only what the read-out position needs.

    Keys and values enter through the token counts (`SelfAttention.attend_counts`); the
    query, residual, norms, FFN and readout run at the read-out position only. Raises
    ValueError where that is not exact (`readout_token_is_exact`): several blocks, or a
    norm that mixes tokens in this mode (BatchNorm in training).
    """
    if not self.readout_token_is_exact(train):
      raise ValueError(
        f"readout_token_logits is not exact for num_blocks={self.num_blocks}, "
        f"norm={self.norm!r} with train={train}: later blocks need every position, or the "
        "norm's statistics mix positions; use __call__ (or fast_logits, which picks for you)"
      )
    check_ids(tokens_BxL, self.vocab_size, "token ids")
    b, p = tokens_BxL.shape[0], self.readout_index
    q_VxD, k_VxD, v_VxD = self._qkv_table(train)
    read_Bx1 = tokens_BxL[:, p, None]
    counts_BxV = jnp.zeros((b, self.vocab_size), k_VxD.dtype)
    counts_BxV = counts_BxV.at[jnp.arange(b)[:, None], tokens_BxL].add(1)
    att_Bx1xD = self.transformer_block.attention.attend_counts(
      jnp.take(q_VxD, read_Bx1, axis=0), k_VxD, v_VxD, counts_BxV
    )
    x_Bx1xD = self.transformer_block.after_attention(
      self.token_embeddings(read_Bx1), att_Bx1xD, train
    )
    return self.to_vocab(self._head(x_Bx1xD, train)[:, 0])

  def fast_logits(self, tokens_BxL: jax.Array, train: bool) -> jax.Array:
    """The logits of `__call__` by the cheapest exact path for this model and mode."""
    if self.readout_token_is_exact(train):
      return self.readout_token_logits(tokens_BxL, train)
    return self(tokens_BxL, train, project_table=self.table_is_exact(train))


def per_token(norm: str, train: bool) -> bool:
  """Whether `norm` normalizes each token on its own in this mode (BatchNorm in training
  does not: its statistics mix the batch's positions)."""
  spec = norms.get(norm)
  return spec.per_token_in_train if train else spec.per_token_in_eval


def build(cfg: Config, norm: str, scan_unroll: int = 1) -> Transformer:
  """The model with normalization `norm` at the sizes of `cfg` (`scan_unroll`: how many
  blocks one step of the block scan computes; the program's size, never its values)."""
  norms.get(norm)
  precision = None if cfg.matmul_precision == "default" else cfg.matmul_precision
  return Transformer(
    cfg.vocab_size,
    cfg.embed_dim,
    cfg.num_heads,
    norm,
    precision,
    num_blocks=cfg.num_blocks,
    placement=cfg.norm_placement,
    readout=cfg.readout,
    num_classes=cfg.output_classes if cfg.text is not None else cfg.num_classes,
    scan_unroll=scan_unroll,
  )


# Training unrolls the block scan up to this depth, the largest the benchmark measured
# (docs/performance.md); deeper models keep the scan, so that depth never multiplies the
# training program's size and compile time.
MAX_UNROLLED_BLOCKS = 6


def build_for_training(cfg: Config, norm: str) -> Transformer:
  """The model as the training programs build it: `build` with the block scan unrolled
  (`scan_unroll` = N) up to `MAX_UNROLLED_BLOCKS` blocks, the scan kept beyond; the same
  parameters and values (up to float rounding) either way.

  On the 2-core CPU the 6-block deep preset's training step takes 0.80-0.85x the scan's
  time unrolled (103 against 127 ms with LayerNorm) for 0.6-1.0 s more XLA compile time,
  which its first 55 steps repay; the analysis keeps the scan, which it compiles 2.4-3.1 s
  faster (docs/performance.md, "The deep model", `benchmarks/bench.py --depths`). Unrolled,
  compile time grows with depth (4.2 s at 12 blocks, 8.5 s at 24 at D = 128; minutes for
  24 small blocks), which is why deeper models are not unrolled.
  """
  unroll = cfg.num_blocks if cfg.num_blocks <= MAX_UNROLLED_BLOCKS else 1
  return build(cfg, norm, scan_unroll=unroll)
