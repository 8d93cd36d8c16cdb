"""Experiment 4's step benchmark (benchmarks/bench_text.py): its smoke run end to end, the
table it prints, the full run's step count and its count of matrix-product FLOPs."""

import importlib
import math
import re

import jax
import jax.numpy as jnp
import pytest
from helpers import ROOT

from jaxnorm import predictions

NORMS = ("layernorm", "none")
# A table cell "median (min-max)" of ms per step.
CELL = re.compile(r"^(\d+\.\d\d) \((\d+\.\d\d)-(\d+\.\d\d)\)$")


@pytest.fixture
def bench_text(monkeypatch):
  """benchmarks/bench_text.py as a module, its folder on the path (it imports its siblings
  `bench`, `profile_step` and `timing`)."""
  monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
  return importlib.import_module("bench_text")


def _times(cell: str) -> tuple[float, float, float]:
  match = CELL.match(cell)
  assert match, cell
  median, low, high = (float(x) for x in match.groups())
  assert all(math.isfinite(x) and x > 0 for x in (median, low, high)), cell
  assert low <= median <= high, cell
  return median, low, high


def test_the_smoke_run_prints_one_row_per_norm_and_the_full_run_estimate(
  bench_text, capsys, tmp_path
):
  out = tmp_path / "text.md"
  argv = ["--tiny", "--norms", ",".join(NORMS), "--rounds", "2", "--out", str(out)]
  assert bench_text.main(argv) == 0
  report = out.read_text()
  assert report.strip() in capsys.readouterr().out
  lines = report.splitlines()
  header = lines.index("| norm | jaxnorm ms/step | PyTorch ms/step | ratio | jaxnorm compile s |")
  rows = [line.strip("|").split(" | ") for line in lines[header + 2 : header + 2 + len(NORMS)]]
  assert lines[header + 2 + len(NORMS)] == ""
  assert [r[0].strip() for r in rows] == list(NORMS)
  for norm, jax_cell, torch_cell, ratio, compile_cell in rows:
    jax_ms, torch_ms = _times(jax_cell)[0], _times(torch_cell)[0]
    assert ratio.endswith("x")
    # The ratio of the medians, each printed to 0.005 ms.
    low, high = (torch_ms - 0.005) / (jax_ms + 0.005), (torch_ms + 0.005) / (jax_ms - 0.005)
    assert low - 0.005 <= float(ratio[:-1]) <= high + 0.005, (norm, jax_ms, torch_ms, ratio)
    lower_s, compile_s = (float(x) for x in compile_cell.strip().split(" / "))
    assert lower_s > 0 and compile_s > 0
  estimate = next(line for line in lines if line.startswith("Estimate of the full reference run"))
  assert "not Experiment 4's" in estimate  # tiny sizes
  assert "15 epochs x 15,000 batches of 8" in estimate and "NOT included" in estimate
  hours = [float(h) for h in re.findall(r"(?:jaxnorm|PyTorch) (\d+\.\d+) h", estimate)]
  assert len(hours) == 2 and all(h > 0 for h in hours)
  sizes = lines.index(
    "| norm | parameters | GFLOP/step, XLA | GFLOP/step, matrix products | jaxnorm GFLOP/s |"
  )
  for line, norm in zip(lines[sizes + 2 : sizes + 2 + len(NORMS)], NORMS, strict=True):
    cells = line.strip("|").split(" | ")
    assert cells[0].strip() == norm and int(cells[1].replace(",", "")) > 0
    assert float(cells[3]) > 0 and float(cells[4]) > 0
  assert any("about 270 GFLOP per training step" in line for line in lines)


def test_the_full_run_is_experiment_4s_steps(bench_text):
  assert bench_text.full_run_steps(256) == predictions.EXP4.config.steps == 7035
  args = bench_text.parse_args([])
  cfg = bench_text.text_config(args)
  assert (cfg.num_blocks, cfg.embed_dim, cfg.num_heads, cfg.norm_placement) == (6, 128, 4, "post")
  assert (cfg.vocab_size, cfg.seq_len, cfg.batch_size, cfg.output_classes) == (30522, 128, 256, 4)
  assert (cfg.readout, cfg.learning_rate_for("none"), cfg.norms) == (
    "first",
    2e-4,
    ("layernorm", "l2", "none"),
  )
  assert (args.examples, args.chunk, args.rounds) == (120_000, 5, 3)
  assert bench_text.parse_args(["--tiny"]).examples == 4 * 8


def test_a_scan_body_counts_once_per_iteration(bench_text):
  def f(x_4x3, w_3x3):
    def body(x, _):
      return x @ w_3x3, None

    return jax.lax.scan(body, x_4x3, length=5)[0] @ jnp.ones((3, 2))

  jaxpr = jax.make_jaxpr(f)(jnp.ones((4, 3)), jnp.ones((3, 3)))
  assert bench_text.matmul_flops(jaxpr) == 5 * 2 * 4 * 3 * 3 + 2 * 4 * 2 * 3


def test_the_table_gives_medians_their_range_and_ratio(bench_text):
  rows = {
    "l2": {
      "jaxnorm": [4e-3, 1e-3, 2e-3],
      "pytorch": [0.01, 0.03, 0.05],
      "compile": (0.5, 2.25),
      "parameters": 1234567,
      "xla_flops": 3e9,
      "dot_flops": 2.5e9,
    }
  }
  assert bench_text.table(rows)[2] == (
    "| l2 | 2.00 (1.00-4.00) | 30.00 (10.00-50.00) | 15.00x | 0.50 / 2.25 |"
  )
  assert bench_text.size_table(rows)[2] == "| l2 | 1,234,567 | 3 | 2.5 | 1500.0 |"
  slow = {"l2": rows["l2"] | {"jaxnorm": [2.0], "pytorch": [20.0]}}
  slow["none"] = slow["l2"] | {"jaxnorm": [1.0, 3.0, 2.0]}
  (estimate,) = bench_text.estimate(slow, 256, full_sizes=True)
  # 2 x 7,035 steps of 2 s and of 20 s
  assert "2 models (l2, none) x 7,035 steps (15 epochs x 469 batches of 256)" in estimate
  assert "jaxnorm 7.82 h, PyTorch 78.17 h (10.00x)" in estimate
  assert "sizes measured" not in estimate and "(5.5 s for these programs)" in estimate
