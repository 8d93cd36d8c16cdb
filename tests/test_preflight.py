"""The checks before any work: the parameter count, the memory estimate's dependence on
the run's sizes, and the one-line refusal of a run that cannot fit."""

import dataclasses
import math

import jax
import pytest

from jaxnorm import config, model, preflight
from jaxnorm.families import MeasureConfig
from jaxnorm.spec import ExperimentSpec


def _initialized_parameters(cfg: config.Config, norm: str) -> int:
  tokens = jax.numpy.zeros((1, cfg.seq_len), jax.numpy.int32)
  params = model.build(cfg, norm).init(jax.random.key(0), tokens, train=False)["params"]
  return sum(math.prod(x.shape) for x in jax.tree.leaves(params))


def test_the_parameter_count_is_the_largest_models():
  cfg = config.TINY
  counted = preflight.num_parameters(ExperimentSpec(cfg))
  assert counted == max(_initialized_parameters(cfg, norm) for norm in cfg.norms)


def test_the_parameter_count_of_the_reference_follows_the_formula():
  """2 V D + 12 D^2 + 13 D + V (the module docstring) for the reference's models."""
  cfg = config.PAPER
  v, d = cfg.vocab_size, cfg.embed_dim
  assert preflight.num_parameters(ExperimentSpec(cfg)) == 2 * v * d + 12 * d * d + 13 * d + v


def test_the_estimate_follows_the_seeds_devices_and_precision():
  spec = ExperimentSpec(config.TINY, num_seeds=8, measures=MeasureConfig())
  one = preflight.memory_estimate(spec)
  assert preflight.memory_estimate(
    dataclasses.replace(spec, num_seeds=16)
  ).results == pytest.approx(2 * one.results, rel=1e-6)
  over_two = preflight.memory_estimate(spec, num_devices=2)
  assert over_two.train * 2 == one.train and over_two.analysis * 2 == one.analysis
  in_calls_of_one = preflight.memory_estimate(dataclasses.replace(spec, seeds_per_call=1))
  assert in_calls_of_one.train * 8 == one.train and in_calls_of_one.results == one.results
  float64 = preflight.memory_estimate(dataclasses.replace(spec, analysis_dtype="float64"))
  assert float64.analysis == 2 * one.analysis and float64.train == one.train
  # A sweep's runs: each seed once per rate.
  assert preflight.memory_estimate(spec, runs_per_seed=3).results == pytest.approx(
    3 * one.results, rel=1e-6
  )


def test_a_run_that_cannot_fit_is_refused_in_one_line(monkeypatch):
  spec = ExperimentSpec(config.TINY)
  need = preflight.memory_estimate(spec).total
  monkeypatch.setattr(preflight, "available_memory", lambda device: need - 1)
  with pytest.raises(ValueError, match=r"needs about .* GiB at once .* more than") as e:
    preflight.check(spec)
  assert "\n" not in str(e.value)
  monkeypatch.setattr(preflight, "available_memory", lambda device: need)
  preflight.check(spec)  # fits exactly
  monkeypatch.setattr(preflight, "available_memory", lambda device: None)
  preflight.check(spec)  # unknown: not refused


def test_the_estimate_grows_with_the_number_of_blocks():
  """Every block adds the same parameters and the activations a backward pass keeps; the
  analysis of several blocks runs every position (no read-out-only path)."""
  spec = ExperimentSpec(config.TINY, num_seeds=2, measures=MeasureConfig(families=("hessian",)))
  deep = {n: dataclasses.replace(spec, config=config.TINY.replace(num_blocks=n)) for n in (1, 2, 4)}
  count = {n: preflight.num_parameters(s) for n, s in deep.items()}
  assert count[4] - count[1] == 3 * (count[2] - count[1]) > 0
  one, four = preflight.memory_estimate(deep[1]), preflight.memory_estimate(deep[4])
  assert four.train > 3 * one.train and four.analysis > 3 * one.analysis


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the estimate is fitted to XLA:CPU")
@pytest.mark.parametrize(
  "num_blocks, families",
  [
    (3, ("hessian",)),  # the Hutchinson probes' activations of every block dominate
    # many small blocks: the parameters' copies dominate
    (100, ("slices",)),
    (100, ("sharpness",)),
    (100, ("isotropy", "slices", "sharpness")),  # the standard level
  ],
)
def test_the_analysis_estimate_of_a_deep_model_is_xlas_own_count(num_blocks, families):
  """Several blocks: the estimate's analysis part is within 25% of what XLA allocates for
  the compiled analysis (`memory_analysis`), whichever part dominates."""
  from jaxnorm import analysis, keys, landscape, train

  cfg = config.TINY.replace(num_blocks=num_blocks, norms=("layernorm",))
  measures = MeasureConfig(families=families)
  m = model.build(cfg, "layernorm")
  state = jax.eval_shape(lambda: train.init_state(m, cfg.task, jax.random.key(0), 1e-3))
  one = jax.tree.map(lambda x: jax.ShapeDtypeStruct((1, *x.shape), x.dtype), state)
  keys_1 = jax.eval_shape(lambda: jax.vmap(keys.run_keys)(jax.numpy.arange(1)))
  alphas = landscape.alphas(cfg.landscape_points, cfg.landscape_range)
  compiled = analysis.analyze_seeds.lower(
    m, cfg.task, measures, one.params, one.batch_stats, keys_1, alphas, alphas
  ).compile()
  xla = compiled.memory_analysis().temp_size_in_bytes
  estimate = preflight.memory_estimate(ExperimentSpec(cfg, num_seeds=1, measures=measures))
  assert estimate.analysis == pytest.approx(xla, rel=0.25)
