"""`pipeline.run`: the experiment as a library call, checked against the building blocks."""

import dataclasses

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import CFG, CHEAP_MEASURES

from jaxnorm import (
  analysis,
  config,
  curvature,
  data,
  density,
  directions,
  isotropy,
  keys,
  landscape,
  loss,
  measures,
  model,
  norms,
  pipeline,
  report,
  results,
  stats,
  summary,
  torch_compat,
  train,
)
from jaxnorm.result import ExperimentResult
from jaxnorm.spec import ExperimentSpec

MCFG = CHEAP_MEASURES


@pytest.fixture
def measured(measured_result):
  """BatchNorm and No Norm, seeds 3 and 4, every measure and a 3 x 3 surface (conftest)."""
  assert measured_result.spec.config == CFG.replace(norms=("batchnorm", "none"), seed=3)
  assert measured_result.spec.measures == MCFG
  return measured_result


def test_every_array_keeps_the_seed_axis(measured):
  r = measured.norms["batchnorm"]
  assert r.seeds.tolist() == [3, 4]
  chex.assert_shape(r.losses, (2, CFG.steps))
  chex.assert_shape((r.landscape, r.base_loss), ((2, CFG.landscape_points), (2,)))
  chex.assert_shape((r.spectrum, r.surface), ((2, CFG.embed_dim), (2, 3, 3)))
  assert all(leaf.shape[0] == 2 for leaf in jax.tree.leaves(r.variables))
  assert set(r.measures) == set(measures.ANALYZED)
  assert all(v.shape == (2,) for v in r.measures.values())
  assert r.first_nonfinite_step.tolist() == [-1, -1]


def test_every_number_equals_the_building_blocks_on_the_same_keys(measured):
  """The result is what training, the slice, the spectrum and each measure give when
  computed one by one from `keys.run_keys(3)`: nothing is lost or mixed up in between."""
  r = measured.norms["batchnorm"]
  k = keys.run_keys(3)
  m = model.build(CFG, "batchnorm")
  init = jax.jit(train.init_state, static_argnums=(0, 1))
  state = init(m, CFG.task, k.train, CFG.learning_rate_for("batchnorm"))
  step = jax.jit(lambda s, t, y: train.train_step(m, s, t, y))
  losses = []
  for t in range(CFG.steps):
    state, value = step(state, *train.training_batch(k.train, t, CFG))
    losses.append(value)
  np.testing.assert_allclose(r.losses[0], losses, rtol=1e-5)
  # The analysis is a function of the trained variables: take the run's own. (Retraining
  # step by step gives the same losses, but the biases just before a BatchNorm get a zero
  # gradient in exact arithmetic, and Adam turns their rounding noise into steps ~lr that
  # differ between the two loops; see test_seeds.)
  trained = jax.tree.map(lambda x: jnp.asarray(x[0]), r.variables)
  params, stats = trained["params"], trained["batch_stats"]

  tokens, labels = data.batch(k.landscape_batch, CFG)
  loss_fn = loss.eval_loss_fn(m, stats, tokens, labels)
  base = loss_fn(params)
  np.testing.assert_allclose(r.base_loss[0], base, rtol=1e-5)

  @jax.jit  # one program for the ~90 points below, each evaluated on its own
  def loss_at(params, direction, a):
    return loss_fn(jax.tree.map(lambda p, d: p + a * d, params, direction))

  random_direction = jax.jit(landscape.random_direction)
  filter_direction = jax.jit(directions.filter_normalized_direction)
  direction = random_direction(k.direction, params)
  by_loop = [loss_at(params, direction, a) for a in r.alphas]
  np.testing.assert_allclose(r.landscape[0], by_loop, rtol=1e-5)

  features = m.apply(
    {"params": params, "batch_stats": stats},
    data.batch(k.spectrum_batch, CFG)[0],
    train=False,
    method=model.Transformer.features,
  ).reshape(-1, CFG.embed_dim)
  s = np.linalg.svd(np.asarray(features, np.float64), compute_uv=False)
  np.testing.assert_allclose(r.spectrum[0], s, rtol=1e-4, atol=1e-5 * s[0])
  p = s / s.sum()
  np.testing.assert_allclose(
    r.measures["effective_rank"][0], np.exp(-np.sum(p * np.log(p))), rtol=1e-4
  )
  centered = isotropy.measures(features, center=True)
  np.testing.assert_allclose(
    r.measures["centered_effective_rank"][0], centered.effective_rank, rtol=1e-4
  )

  top = jax.jit(
    lambda p: curvature.lanczos(
      loss_fn, p, k.lanczos, k=1, num_iterations=MCFG.lanczos_iterations, tol=MCFG.lanczos_tol
    )
  )(params)
  np.testing.assert_allclose(r.measures["hessian_top_eigenvalue"][0], top.eigenvalues[0], rtol=1e-3)
  nodes, weights = curvature.quadrature(top.alpha, top.beta)  # the density: the same run's
  np.testing.assert_allclose(r.hessian_density[0][0], nodes, rtol=1e-3, atol=1e-5)
  np.testing.assert_allclose(r.hessian_density[1][0].sum(), 1.0, rtol=1e-5)
  np.testing.assert_allclose(
    r.measures["hessian_negative_mass"][0],
    density.negative_mass(nodes[None], weights[None]),
    atol=1e-3,
  )
  trace = jax.jit(
    lambda p: curvature.hutchinson_trace(loss_fn, p, k.trace, num_probes=MCFG.trace_probes)
  )(params)
  np.testing.assert_allclose(r.measures["hessian_trace"][0], trace.trace, rtol=1e-3)
  sharp = jax.jit(
    lambda p: directions.average_sharpness(
      loss_fn, p, k.sharpness, rho=MCFG.sharpness_rho, num_samples=MCFG.sharpness_samples
    )
  )(params)
  np.testing.assert_allclose(r.measures["adaptive_sharpness"][0], sharp.sharpness, rtol=1e-3)
  filt = filter_direction(k.filter_direction, params)
  rise = max(loss_at(params, filt, a) for a in r.alphas)
  np.testing.assert_allclose(r.measures["filter_landscape_max_rise"][0], rise - base, rtol=1e-3)
  # The rises averaged over directions: each direction's slice on its own, then mean and sd.
  global_keys, filter_keys = keys.slice_direction_keys(k.direction, MCFG.slice_directions)
  for name, make, dir_keys in (
    ("landscape_rise_directions", random_direction, global_keys),
    ("filter_rise_directions", filter_direction, filter_keys),
  ):
    rises = []
    for dk in dir_keys:
      d = make(dk, params)
      at = [loss_at(params, d, a) for a in r.alphas]
      rises.append(max(at) - base)
    np.testing.assert_allclose(r.measures[name][0], np.mean(rises), rtol=1e-3, atol=1e-7)
    np.testing.assert_allclose(r.measures[f"{name}_std"][0], np.std(rises, ddof=1), rtol=1e-2)

  # BatchNorm also measured in training mode (the batch's own statistics), which differs.
  train_fn = loss.train_mode_loss_fn(m, stats, tokens, labels)
  np.testing.assert_allclose(r.measures["loss_at_alpha0_batch_stats"][0], train_fn(params), 1e-5)
  trace_t = jax.jit(
    lambda p: curvature.hutchinson_trace(train_fn, p, k.trace, num_probes=MCFG.trace_probes)
  )(params)
  np.testing.assert_allclose(r.measures["hessian_trace_batch_stats"][0], trace_t.trace, 1e-3)
  assert abs(trace_t.trace / trace.trace - 1) > 1e-3
  block = params["transformer_block"]
  for layer, kernel in (("norm1", block["attention"]["out_proj"]), ("norm2", block["ffn"]["down"])):
    w = np.linalg.norm(np.asarray(kernel["kernel"]))
    np.testing.assert_allclose(r.measures[f"weight_norm_{layer}_input"][0], w, rtol=1e-5)
    effective = analysis.per_seed(r)[f"effective_lr_{layer}"][0]
    np.testing.assert_allclose(effective, r.learning_rate / w**2, rtol=1e-5)

  d1, d2 = filter_direction(k.surface1, params), filter_direction(k.surface2, params)
  corner = jax.tree.map(
    lambda p, u, v: p + r.surface_grid[0] * u + r.surface_grid[2] * v, params, d1, d2
  )
  np.testing.assert_allclose(r.surface[0, 0, 2], loss_fn(corner), rtol=1e-5)


def test_without_batch_statistics_both_modes_are_one_function(measured):
  r = measured.norms["none"]
  np.testing.assert_array_equal(r.measures["loss_at_alpha0_batch_stats"], r.base_loss)
  for name in measures.BATCH_STATS_OF:
    np.testing.assert_array_equal(r.measures[f"{name}_batch_stats"], r.measures[name])


def test_summary_and_report_read_the_same_numbers(measured):
  r = measured.norms["batchnorm"]
  per_seed = analysis.per_seed(r)
  # every measure but a text data set's, in table order
  assert list(per_seed) == [m.name for m in measures.MEASURES if m.name not in measures.TEXT]
  np.testing.assert_allclose(per_seed["final_loss"], r.losses[:, -100:].mean(axis=1))
  np.testing.assert_allclose(per_seed["landscape_max_rise"], r.landscape.max(1) - r.base_loss)
  text = report.markdown(measured)
  shown = [m for m in measures.MEASURES if m.shown and m.name not in measures.TEXT]
  assert all(f"| {m.label} |" in text for m in shown)
  assert f"{np.mean(per_seed['effective_rank']):.4g}" in text


class ScaleNorm(nn.Module):
  """A throwaway normalization for the test: y = g * x / ||x||, one learned scalar g."""

  @nn.compact
  def __call__(self, x, train):
    del train
    g = self.param("g", nn.initializers.constant(2.0), ())
    return g * x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def test_a_new_normalization_needs_only_a_registry_entry(monkeypatch, tmp_path):
  """Registering a norm is enough for it to be trained, analyzed, converted, saved and
  reloaded by the existing code. The run computes its slice and spectrum; every measure is
  traced on its trained parameters without compiling them (the measured programs run on
  the reference models in conftest's `measured_result`)."""
  from jaxnorm import analysis

  spec_entry = norms.NormSpec(ScaleNorm, "Scale Norm", "teal", "--", torch_params=(("g", "g"),))
  monkeypatch.setitem(norms.REGISTRY, "scalenorm", spec_entry)
  spec = ExperimentSpec(CFG.replace(norms=("scalenorm",)), num_seeds=2, measures=None, name="t")
  result = pipeline.run(spec, progress=False)
  r = result.norms["scalenorm"]
  assert np.isfinite(r.losses).all() and r.losses[:, -3:].mean() < r.losses[:, :3].mean()
  g = r.variables["params"]["transformer_block"]["norm1"]["g"]
  assert g.shape == (2,) and not np.allclose(g, 2.0)  # trained, per seed
  one = jax.tree.map(lambda x: x[0], r.variables)
  m, k = model.build(CFG, "scalenorm"), keys.run_keys(0)
  analyzed = jax.eval_shape(
    lambda p, b: analysis.analyze(m, CFG.task, MCFG, p, b, k, r.alphas, r.alphas),
    one["params"],
    one.get("batch_stats", {}),
  )
  assert set(analyzed.measures) == set(measures.ANALYZED)
  state_dict = torch_compat.to_torch(one, "scalenorm")
  assert "transformer_block.norm2.g" in state_dict
  chex.assert_trees_all_equal(torch_compat.from_torch(state_dict, "scalenorm"), one)
  results.save(result, tmp_path)
  again = results.load(tmp_path).norms["scalenorm"]
  np.testing.assert_array_equal(again.landscape, r.landscape)
  assert "Scale Norm" in report.terminal_table(result)


def test_a_diverged_seed_has_no_measures(measured):
  """The analysis has the shapes of `measured`'s (2 seeds, a 3 x 3 surface), built first:
  its program comes from the compilation cache."""
  cfg = CFG.replace(norms=("none",), learning_rate_overrides=(("none", 1e6),), steps=8)
  spec = ExperimentSpec(cfg, num_seeds=2, measures=MCFG, surface_points=3)
  r = pipeline.run(spec, progress=False).norms["none"]
  assert r.diverged.tolist() == [True, True]
  chex.assert_shape((r.losses, r.base_loss), ((2, 8), (2,)))
  assert all(v.shape == (2,) and np.isnan(v).all() for v in r.measures.values())
  assert r.layer_measures and all(np.isnan(v).all() for v in r.layer_measures.values())
  by_name = stats.stats(r)
  assert by_name["effective_rank"]["n"] == 0 and by_name["effective_rank"]["mean"] is None


def test_float64_analysis_is_the_float32_one_without_its_rounding(measured, tmp_path):
  """With analysis_dtype float64 training is unchanged, the analysis evaluates the same
  points along the same random directions, and every loss is what a float64 evaluation
  of the trained weights gives (to 1e-12), which the float32 analysis is not."""
  spec = ExperimentSpec(
    CFG.replace(norms=("batchnorm",), seed=3),
    num_seeds=2,
    measures=MCFG,
    surface_points=3,
    analysis_dtype="float64",
  )
  result = pipeline.run(spec, progress=False)
  r64, r32 = result.norms["batchnorm"], measured.norms["batchnorm"]
  np.testing.assert_array_equal(r64.losses, r32.losses)
  assert r64.landscape.dtype == r64.base_loss.dtype == r64.surface.dtype == np.float64
  assert r64.measures["hessian_trace"].dtype == np.float64

  k = keys.run_keys(3)
  m = model.build(CFG, "batchnorm")
  with jax.enable_x64(True):
    trained = jax.tree.map(lambda x: jnp.asarray(x[0], jnp.float64), r32.variables)
    params, stats = trained["params"], trained["batch_stats"]
    loss_fn = jax.jit(loss.eval_loss_fn(m, stats, *data.batch(k.landscape_batch, CFG)))
    base = float(loss_fn(params))
    direction = landscape.random_direction(k.direction, params)
    by_loop = [
      float(loss_fn(jax.tree.map(lambda p, d, a=a: p + a * d, params, direction)))
      for a in r64.alphas.astype(np.float32).astype(np.float64)
    ]
  np.testing.assert_allclose(r64.base_loss[0], base, rtol=1e-12)
  np.testing.assert_allclose(r64.landscape[0], by_loop, rtol=1e-12)
  float32_error = np.abs(r32.landscape[0].astype(np.float64) - by_loop)
  assert np.all(float32_error > 1e-12 * np.abs(by_loop))  # float32 rounding, visible here
  # Same directions, probes and Lanczos start: the measures differ by rounding only.
  np.testing.assert_allclose(r64.landscape, r32.landscape, rtol=1e-5)
  for name in ("hessian_trace", "adaptive_sharpness", "landscape_rise_directions"):
    np.testing.assert_allclose(r64.measures[name], r32.measures[name], rtol=1e-3, atol=1e-6)

  results.save(result, tmp_path)
  assert results.load(tmp_path).spec.analysis_dtype == "float64"


def test_matched_loss_checkpoints_are_the_runs_trained_that_long(tmp_path):
  """The analysis at a matched training loss equals the analysis of the same seed trained
  for exactly the checkpoint's steps; a level never reached gives step -1 and no values."""
  from jaxnorm import report, results

  cfg = config.TINY.replace(steps=40, norms=("none",), seed=5)
  base = ExperimentSpec(cfg, num_seeds=2, measures=None, chunk_size=10)
  means = pipeline.run(base, progress=False).norms["none"].losses.reshape(2, 4, 10).mean(-1)
  level = float(means[:, 1].max())  # both seeds are at or below it after 20 steps
  spec = dataclasses.replace(base, matched_losses=(level, 1e-9))
  r = pipeline.run(spec, progress=False).norms["none"]
  reached, never = r.matched
  expected = [int(10 * (1 + np.argmax(row <= level))) for row in means]
  assert reached.level == level and reached.step.tolist() == expected
  for s, step in enumerate(expected):
    alone = pipeline.run(
      dataclasses.replace(base, config=cfg.replace(steps=step, seed=5 + s), num_seeds=1),
      progress=False,
    ).norms["none"]
    np.testing.assert_allclose(reached.base_loss[s], alone.base_loss[0], rtol=1e-6)
    np.testing.assert_allclose(reached.landscape[s], alone.landscape[0], rtol=1e-6)
    np.testing.assert_allclose(reached.spectrum[s], alone.spectrum[0], rtol=1e-5)
  assert never.step.tolist() == [-1, -1] and np.isnan(never.base_loss).all()
  info = summary.summary_dict(ExperimentResult(spec, {"none": r}, 0.0, {}))
  assert info["matched"][1]["norms"]["none"]["step"] == [None, None]
  assert info["matched"][1]["norms"]["none"]["loss_at_alpha0"]["n"] == 0
  result = ExperimentResult(spec, {"none": r}, 0.0, {})
  results.save(result, tmp_path)
  again = results.load(tmp_path)
  assert again.spec.matched_losses == (level, 1e-9)
  np.testing.assert_array_equal(again.norms["none"].matched[0].landscape, reached.landscape)
  assert "## At matched training loss" in report.markdown(again)


def test_curvature_tracked_in_training_equals_lanczos_at_the_same_step(tmp_path):
  """The curvature the training program measures at a chunk end is what Lanczos gives on
  the state trained that many steps, outside the program (`trajectory.top_eigenvalues`)."""
  from jaxnorm import plotting, results, trajectory

  cfg = config.TINY.replace(steps=30, norms=("layernorm",), seed=2)
  spec = ExperimentSpec(cfg, num_seeds=1, measures=None, chunk_size=10, curvature_iterations=8)
  result = pipeline.run(spec, progress=False)
  r = result.norms["layernorm"]
  assert r.trajectory_steps.tolist() == [10, 20, 30] and r.trajectory.shape == (1, 3, 2)
  chex.assert_shape((r.losses, r.base_loss), ((1, 30), (1,)))  # one seed keeps its axis too
  k = keys.run_keys(2)
  m = model.build(cfg, "layernorm")
  state = train.init_state(m, cfg.task, k.train, cfg.learning_rate)
  state, _ = jax.jit(lambda s: train.train_steps(m, cfg.task, s, 20))(state)
  alone = jax.jit(lambda s: trajectory.top_eigenvalues(m, cfg.task, s, k.curvature, 8))(state)
  np.testing.assert_allclose(r.trajectory[0, 1], alone, rtol=1e-3)
  assert r.trajectory[0, 1, 1] > r.trajectory[0, 1, 0]  # Adam's 1/sqrt(v) scales H up here
  results.save(result, tmp_path)
  again = results.load(tmp_path).norms["layernorm"]
  np.testing.assert_array_equal(again.trajectory, r.trajectory)
  info = summary.summary_dict(result)["norms"]["layernorm"]["curvature_over_training"]
  assert info["stability_threshold"] == pytest.approx(38 / cfg.learning_rate)
  assert len(plotting.curvature_over_training(result).axes) == 2


def test_a_deep_model_runs_end_to_end_with_one_analysis_program_per_model(tmp_path):
  """Two blocks, BatchNorm (its statistics stacked per block too) and manual L2, two seeds,
  every measure family: every layer array has the seed and the layer axis, is finite, is
  saved and loaded back, and each model's analysis is one compiled program."""
  from jaxnorm import families

  cfg = CFG.replace(num_blocks=2, norms=("batchnorm", "l2"), steps=6)
  spec = ExperimentSpec(cfg, num_seeds=2, measures=MCFG, name="t")
  compiled = []

  def listener(event, seconds, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
      compiled.append(kwargs.get("fun_name", "?"))

  jax.clear_caches()
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    result = pipeline.run(spec, progress=False)
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert compiled.count("jit(analyze_seeds)") == len(cfg.norms), compiled
  for norm, r in result.norms.items():
    assert r.variables["batch_stats"] == {} or all(
      x.shape[:2] == (2, 2) for x in jax.tree.leaves(r.variables["batch_stats"])
    )
    chex.assert_shape(r.layer_spectra, (2, 3, cfg.embed_dim))
    assert set(r.layer_measures) == set(families.layer_analyzed(MCFG.families))
    for name, values in r.layer_measures.items():
      assert values.shape == (2, 2 if name in families.PER_BLOCK_MEASURES else 3), name
      assert np.isfinite(values.astype(np.float64)).all(), (norm, name)
    assert set(r.measures) == set(measures.ANALYZED)
  assert result.norms["batchnorm"].variables["batch_stats"] != {}
  results.save(result, tmp_path)
  again = results.load(tmp_path)
  for norm, r in result.norms.items():
    np.testing.assert_array_equal(again.norms[norm].layer_spectra, r.layer_spectra)
    for name, values in r.layer_measures.items():
      np.testing.assert_array_equal(again.norms[norm].layer_measures[name], values)
  info = summary.summary_dict(result)["norms"]["l2"]["layer_measures"]
  assert len(info["effective_rank"]) == 3 and len(info["block_hessian_trace"]) == 2
