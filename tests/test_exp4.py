"""Experiment 4 end to end: experiments/exp4.py as a user runs it, on small AG News files the
tests write (tests/text_files.py's vocabulary, invented sentences), and the pipeline on a
text task from Python. What the run folder must hold (Figure 4, the per-layer report with
the accuracies, summary.json's record of the data, the epoch accuracies saved and loaded
back); what is refused before any training; the token cache as `text_run.prepare` uses it;
and what a text run's numbers must be: independent of the chunking and of the seeds trained
alongside, the running training accuracy and the test split's accuracy and loss equal to a
recomputation by hand, NaN for a diverged run."""

import fcntl
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import pytest
from text_files import VOCAB, write_csv, write_vocab

from jaxnorm import (
  agnews,
  cli,
  config,
  data,
  keys,
  layer_plots,
  manifests,
  options,
  pipeline,
  predictions,
  programs,
  results,
  resume,
  text_data,
  text_run,
  tokens,
  train,
)
from jaxnorm import model as model_lib
from jaxnorm.spec import ExperimentSpec

ROOT = Path(__file__).resolve().parents[1]
EXP4_SCRIPT = ROOT / "experiments" / "exp4.py"

# The data: 14 training examples in batches of 4 (4 steps an epoch, the last of 2 real
# rows), 10 test examples (3 evaluation batches, the last of 2), 2 epochs, 2 seeds.
NUM_TRAIN, NUM_TEST, BATCH, EPOCHS, SEEDS, MAX_LENGTH = 14, 10, 4, 2, 2, 16
STEPS_PER_EPOCH = -(-NUM_TRAIN // BATCH)
NORMS = ("layernorm", "l2", "none")
# Words of text_files.VOCAB that mark each class (0 World, 1 Sports, 2 Business, 3 Sci/Tech),
# and words any class may have.
CLASS_WORDS = {
  0: ("world", "news"),
  1: ("team", "sport", "win"),
  2: ("market", "stock", "rise"),
  3: ("new", "phone", "chip"),
}
FILLER = ("the", "cat", "sat", "on", "a", "mat", "again")


def examples(count: int, seed: int) -> tuple:
  """`count` invented AG News examples (label, title, description), the classes in turn."""
  rng = np.random.default_rng(seed)
  made = []
  for i in range(count):
    label = i % 4
    words = [*rng.choice(CLASS_WORDS[label], 2), *rng.choice(FILLER, 3)]
    rng.shuffle(words)
    made.append((label, " ".join(words[:2]).capitalize(), " ".join(words[2:]) + "."))
  return tuple(made)


def write_data(folder: Path) -> types.SimpleNamespace:
  """AG News's CSV layout with NUM_TRAIN and NUM_TEST examples, and the vocab.txt."""
  write_csv(folder / "data", examples(NUM_TRAIN, 1), examples(NUM_TEST, 2))
  return types.SimpleNamespace(data=folder / "data", vocab=write_vocab(folder / "vocab.txt"))


def data_args(files, *more: str) -> list[str]:
  """exp4.py's arguments for the tiny model on `files`, the paper's three models (a later
  --norms in `more` replaces them), no compilation cache (a test writes only into its
  temporary folders)."""
  return [
    *("--data", str(files.data), "--tokenizer", str(files.vocab), "--preset", "tiny"),
    *("--blocks", "2", "--heads", "2", "--readout", "first", "--batch-size", str(BATCH)),
    *("--epochs", str(EPOCHS), "--max-length", str(MAX_LENGTH), "--no-progress"),
    *("--norms", ",".join(NORMS), "--no-compilation-cache", *more),
  ]


def once_per_session(tmp_path_factory, name: str, make) -> Path:
  """The folder `name` in which `make(folder)` has run, once per test session even under
  pytest-xdist, whose workers share the session's temporary folder: the first worker to
  need it makes it while the others wait."""
  if "PYTEST_XDIST_WORKER" not in os.environ:
    folder = tmp_path_factory.mktemp(name)
    make(folder)
    return folder
  shared = tmp_path_factory.getbasetemp().parent
  folder, done = shared / name, shared / f"{name}.done"
  with open(shared / f"{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not done.exists():
      shutil.rmtree(folder, ignore_errors=True)  # a worker that failed halfway
      folder.mkdir()
      make(folder)
      done.touch()
  return folder


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> types.SimpleNamespace:
  return write_data(tmp_path_factory.mktemp("agnews"))


def _run_exp4(folder: Path) -> None:
  """exp4.py on write_data's files, its output folder `folder`/run, and how it ended
  (exit status, stdout, stderr) in `folder`/proc.json."""
  files = write_data(folder)
  env = {
    **os.environ,
    agnews.TOKEN_CACHE_ENV: str(folder / "tokens"),
    "MPLCONFIGDIR": str(folder / "mpl"),
  }
  args = data_args(files, "--seeds", str(SEEDS))
  args += ["--landscape-points", "3", "--out", str(folder / "run")]
  proc = subprocess.run(
    [sys.executable, str(EXP4_SCRIPT), *args],
    capture_output=True,
    text=True,
    cwd=ROOT,
    timeout=900,
    env=env,
  )
  ended = {"returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}
  (folder / "proc.json").write_text(json.dumps(ended))


@pytest.fixture(scope="module")
def exp4_run(tmp_path_factory) -> types.SimpleNamespace:
  """One tiny exp4.py run (3 models, 2 seeds, 2 epochs), shared by the tests below."""
  folder = once_per_session(tmp_path_factory, "exp4_run", _run_exp4)
  ended = json.loads((folder / "proc.json").read_text())
  assert ended["returncode"] == 0, ended["stderr"]
  return types.SimpleNamespace(out=folder / "run", stdout=ended["stdout"])


def test_the_run_folder_holds_figure_4_the_report_and_the_arrays(exp4_run):
  out = exp4_run.out
  for name in ("layers.png", "isotropy_depth.png", "figure2.png", "measures.md", "results.npz"):
    assert (out / name).is_file(), name
  report = (out / "measures.md").read_text()
  assert "## Layer by layer" in report
  assert "### The paper's predictions, layer by layer" in report
  assert "Without normalization, representations collapse progressively with depth" in report
  with np.load(out / "results.npz") as npz:
    accuracy = {n: npz[f"{n}/epoch_accuracy"] for n in NORMS}
    losses = {n: npz[f"{n}/loss"] for n in NORMS}
    test_accuracy = {n: npz[f"{n}/measure/test_accuracy"] for n in NORMS}
  for norm in NORMS:
    assert accuracy[norm].shape == (SEEDS, EPOCHS)
    assert losses[norm].shape == (SEEDS, EPOCHS * STEPS_PER_EPOCH)
    # a fraction of the training examples, each counted once an epoch
    right = accuracy[norm] * NUM_TRAIN
    np.testing.assert_allclose(right, np.round(right), atol=1e-9)
    assert np.all((0 <= right) & (right <= NUM_TRAIN))
    right = test_accuracy[norm] * NUM_TEST  # and of the test examples
    np.testing.assert_allclose(right, np.round(right), atol=1e-5)
  # measures.md's rows: the mean over seeds of the last epoch's accuracy, of the test's
  means = {
    "training accuracy, last epoch": [accuracy[n][:, -1].mean() for n in NORMS],
    "test accuracy": [test_accuracy[n].mean() for n in NORMS],
  }
  for name, expected in means.items():
    (line,) = [line for line in report.splitlines() if line.startswith(f"| {name} |")]
    cells = [cell.strip() for cell in line.strip("|").split("|")][1:]
    reported = [float(cell.split(" ± ")[0]) for cell in cells]
    np.testing.assert_allclose(reported, expected, rtol=1e-3, err_msg=name)
  assert "train acc." in exp4_run.stdout and "test acc." in exp4_run.stdout


def test_summary_json_records_the_data_and_each_epochs_accuracy(exp4_run):
  summary = json.loads((exp4_run.out / "summary.json").read_text())
  text = data.TextShape(**summary["config"]["text"])
  assert (text.name, text.num_train, text.num_test) == ("agnews", NUM_TRAIN, NUM_TEST)
  assert (text.vocab_size, text.seq_len, text.num_classes) == (len(VOCAB), MAX_LENGTH, 4)
  assert summary["config"]["steps"] == EPOCHS * STEPS_PER_EPOCH
  # where the data and tokenizer came from, in summary.json and measures.md
  source = summary["environment"]["data"]
  assert "vocab.txt" in source and f"{NUM_TRAIN} training and {NUM_TEST} test" in source
  assert f"Data: {source}." in (exp4_run.out / "measures.md").read_text()
  with np.load(exp4_run.out / "results.npz") as npz:
    for norm in NORMS:
      per_epoch = summary["norms"][norm]["epoch_accuracy"]
      assert len(per_epoch) == EPOCHS
      np.testing.assert_allclose(per_epoch, npz[f"{norm}/epoch_accuracy"].mean(axis=0))


def test_the_saved_run_loads_with_its_data_and_epoch_accuracy(exp4_run):
  loaded = results.load(exp4_run.out)
  summary = json.loads((exp4_run.out / "summary.json").read_text())
  assert loaded.spec.name == "exp4" and loaded.spec.config.readout == "first"
  assert loaded.spec.config.text == data.TextShape(**summary["config"]["text"])
  with np.load(exp4_run.out / "results.npz") as npz:
    for norm in NORMS:
      np.testing.assert_array_equal(
        loaded.norms[norm].epoch_accuracy, npz[f"{norm}/epoch_accuracy"]
      )
      assert loaded.norms[norm].layer_spectra.shape[:2] == (SEEDS, 3)  # 2 blocks + embedding
  # Figure 4's legend: each model's last-epoch training accuracy, mean ± std over the seeds
  figure = layer_plots.layer_spectra(loaded)
  legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
  for norm, text in zip(NORMS, legend, strict=True):
    last = loaded.norms[norm].epoch_accuracy[:, -1]
    assert text.endswith(f"(train acc. {last.mean():.3f} ± {last.std(ddof=1):.3f})"), text
  plt.close(figure)


def test_replot_redraws_the_figures_of_a_text_run(exp4_run, tmp_path):
  out = tmp_path / "run"
  shutil.copytree(exp4_run.out, out)  # the shared folder stays as the run wrote it
  drawn = manifests.REDRAWN  # figure2, layers (Figure 4), isotropy_depth: png and pdf
  for name in drawn:
    (out / name).unlink()
  assert cli.main(["--replot", str(out)], predictions.EXP4, prog="exp4.py") == 0
  for name in drawn:
    assert (out / name).is_file(), name
  reloaded = results.load(out)
  with np.load(exp4_run.out / "results.npz") as npz:
    for norm in NORMS:
      np.testing.assert_array_equal(
        reloaded.norms[norm].epoch_accuracy, npz[f"{norm}/epoch_accuracy"]
      )


# Refused in one line and exit 2 before any training: the options that make no run.
@pytest.fixture
def no_training(monkeypatch, tmp_path):
  """Training fails the test; the token cache goes to `tmp_path`."""

  def trains(*args, **kwargs):
    raise AssertionError("training started")

  monkeypatch.setattr(pipeline, "run", trains)
  monkeypatch.setenv(agnews.TOKEN_CACHE_ENV, str(tmp_path / "tokens"))


def refused(argv: list[str], capsys) -> str:
  """exp4.py's one-line error for `argv` (which must exit 2)."""
  capsys.readouterr()
  with pytest.raises(SystemExit) as exit_:
    cli.main(argv, predictions.EXP4, prog="exp4.py")
  assert exit_.value.code == 2
  out, err = capsys.readouterr()
  assert err.count("\n") == 1 and err.startswith("exp4.py: error: "), err
  assert out == ""
  return err


@pytest.mark.parametrize(
  "more, words",
  [
    (("--steps", "8"), ("--steps", "--epochs")),
    (("--train-examples", str(NUM_TRAIN + 1)), ("--train-examples", f"only {NUM_TRAIN} train")),
    (("--test-examples", str(NUM_TEST + 1)), ("--test-examples", f"only {NUM_TEST} test")),
    # 14 examples in batches of 4: the last batch is padded, which BatchNorm would see
    (("--norms", "batchnorm,none"), ("batchnorm", f"{NUM_TRAIN} examples in batches of 4")),
  ],
  ids=["steps", "train examples", "test examples", "batchnorm padded batch"],
)
def test_options_that_make_no_run_are_refused_before_training(
  files, tmp_path, capsys, no_training, more, words
):
  err = refused([*data_args(files, *more), "--out", str(tmp_path / "run")], capsys)
  for word in words:
    assert word in err, err
  assert not (tmp_path / "run").exists()


def test_batchnorm_trains_where_the_batch_divides_the_examples(
  files, tmp_path, capsys, no_training
):
  """The refusal above is about the padded batch only: 7 divides 14."""
  argv = data_args(files, "--norms", "batchnorm", "--out", str(tmp_path / "run"))
  argv[argv.index("--batch-size") + 1] = "7"
  assert cli.main(argv, predictions.EXP4, prog="exp4.py") == 3  # got as far as training
  assert "training started" in capsys.readouterr().err


def test_a_data_folder_without_ag_news_is_refused(files, tmp_path, capsys, no_training):
  (tmp_path / "empty").mkdir()
  argv = data_args(files, "--out", str(tmp_path / "run"))
  argv[argv.index("--data") + 1] = str(tmp_path / "empty")
  err = refused(argv, capsys)
  assert str(tmp_path / "empty") in err and "train.csv" in err and text_data.AG_NEWS_URL in err
  argv[argv.index("--data") + 1] = str(tmp_path / "missing")
  assert "does not exist" in refused(argv, capsys)
  assert not (tmp_path / "run").exists()


def test_no_data_and_no_datasets_library_says_what_to_download(
  files, tmp_path, capsys, no_training, monkeypatch
):
  monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` raises ImportError
  argv = data_args(files, "--out", str(tmp_path / "run"))
  del argv[argv.index("--data") : argv.index("--data") + 2]
  err = refused(argv, capsys)
  assert "--data DIR" in err and text_data.AG_NEWS_URL in err and text_data.TEXT_EXTRA in err
  assert not (tmp_path / "run").exists()


def test_no_data_offline_says_what_to_download(files, tmp_path):
  """The script itself with the `datasets` library, the hub unreachable (offline, an empty
  cache): nothing is fetched, and the error names the files and --data."""
  env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
  env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
  env[agnews.TOKEN_CACHE_ENV] = str(tmp_path / "tokens")
  argv = data_args(files, "--out", str(tmp_path / "run"))
  del argv[argv.index("--data") : argv.index("--data") + 2]
  proc = subprocess.run(
    [sys.executable, str(EXP4_SCRIPT), *argv],
    capture_output=True,
    text=True,
    cwd=ROOT,
    timeout=300,
    env=env,
  )
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.count("\n") == 1 and proc.stdout == ""
  assert "--data DIR" in proc.stderr and text_data.AG_NEWS_URL in proc.stderr
  assert not (tmp_path / "run").exists() and not (tmp_path / "tokens").exists()


def prepared(files, *more: str):
  """`text_run.prepare` on exp4.py's options for `files`: (spec, arrays); the data's
  description, which names the files, the tokenizer and the subsets, is checked here."""
  parser = options.build_parser("exp4.py", "", predictions.EXP4)
  args = parser.parse_args(data_args(files, *more))
  spec, arrays, source = text_run.prepare(
    args, options.spec_from_args(args, predictions.EXP4), progress=False
  )
  assert str(files.data) in source and "vocab.txt" in source, source
  assert f"{spec.config.text.num_train} training and {spec.config.text.num_test} test" in source
  assert "cache" not in source  # where the cache lies differs between machines
  return spec, arrays


def test_prepare_reads_the_token_cache_and_rebuilds_it_when_the_data_changes(tmp_path, monkeypatch):
  """The loader's cache is tested in test_agnews.py; here, that a run's preparation uses it."""
  files = write_data(tmp_path)
  cache = tmp_path / "tokens"
  monkeypatch.setenv(agnews.TOKEN_CACHE_ENV, str(cache))
  spec, arrays = prepared(files)
  (cached,) = cache.iterdir()
  stamp = cached.stat().st_mtime_ns
  assert spec.config.steps == EPOCHS * STEPS_PER_EPOCH
  assert arrays.train_tokens.shape == (NUM_TRAIN, MAX_LENGTH)

  def no_tokenizing(*args, **kwargs):
    raise AssertionError("tokenized again")

  monkeypatch.setattr(tokens, "tokenize", no_tokenizing)
  again, arrays_again = prepared(files)
  assert again.config == spec.config and cached.stat().st_mtime_ns == stamp
  for a, b in zip(arrays, arrays_again, strict=True):
    np.testing.assert_array_equal(a, b)
  monkeypatch.undo()  # tokenizing allowed again (and the cache folder variable unset)
  monkeypatch.setenv(agnews.TOKEN_CACHE_ENV, str(cache))
  test_csv = files.data / "test.csv"
  assert "phone" in test_csv.read_text()
  test_csv.write_text(test_csv.read_text().replace("phone", "zebra", 1))  # not in the vocabulary
  changed, changed_arrays = prepared(files)
  assert len(list(cache.iterdir())) == 2
  assert changed.config.text.fingerprint != spec.config.text.fingerprint
  assert not np.array_equal(changed_arrays.test_tokens, arrays.test_tokens)
  np.testing.assert_array_equal(changed_arrays.train_tokens, arrays.train_tokens)
  # a subset is another selection of the same tokens: another fingerprint, no new cache file
  subset, subset_arrays = prepared(files, "--train-examples", "8")
  assert subset.config.text.num_train == 8 and len(list(cache.iterdir())) == 2
  assert subset.config.text.fingerprint != changed.config.text.fingerprint
  rows = {tuple(row) for row in np.asarray(arrays.train_tokens)}
  assert {tuple(row) for row in np.asarray(subset_arrays.train_tokens)} <= rows


# The pipeline on a text task from Python: random token arrays (a vocabulary of 30, 8 tokens
# an example), one model of one block (compile time; the script's run above has two), read
# out at the first position, no measures beyond the reference's and the test split's.
VOCAB_SIZE, LENGTH = 30, 8
TEXT_CFG = config.TINY.replace(
  text=data.TextShape("agnews", VOCAB_SIZE, LENGTH, NUM_TRAIN, NUM_TEST, 4, "random"),
  readout="first",
  num_blocks=1,
  batch_size=BATCH,
  steps=EPOCHS * STEPS_PER_EPOCH,
  norms=("layernorm",),
  landscape_points=3,
)


@pytest.fixture(scope="module")
def arrays() -> data.TextArrays:
  rng = np.random.default_rng(0)
  return data.TextArrays(
    rng.integers(0, VOCAB_SIZE, (NUM_TRAIN, LENGTH), dtype=np.int32),
    np.arange(NUM_TRAIN, dtype=np.int32) % 4,
    rng.integers(0, VOCAB_SIZE, (NUM_TEST, LENGTH), dtype=np.int32),
    np.arange(NUM_TEST, dtype=np.int32) % 4,
  )


def text_norm_run(arrays, chunk_size: int, num_seeds: int = SEEDS, seed: int = 0):
  spec = ExperimentSpec(
    TEXT_CFG.replace(seed=seed), num_seeds=num_seeds, chunk_size=chunk_size, measures=None
  )
  return pipeline.run_norm(spec, "layernorm", arrays=arrays, progress=False)


@pytest.fixture(scope="module")
def one_chunk(arrays):
  """Seeds 0 and 1 trained in one chunk of every step."""
  return text_norm_run(arrays, chunk_size=TEXT_CFG.steps)


def test_a_text_run_does_not_depend_on_how_its_steps_are_chunked(arrays, one_chunk):
  """Chunks of 3 steps (3, 3, 2: chunk boundaries inside epochs of 4 steps) against one
  chunk: step t trains on batch t of the epochs, drawn from the data key and t alone, and
  XLA compiles the same step into either scan, so every number is the same bit for bit."""
  chunked = text_norm_run(arrays, chunk_size=3)
  np.testing.assert_array_equal(chunked.losses, one_chunk.losses)
  np.testing.assert_array_equal(chunked.epoch_accuracy, one_chunk.epoch_accuracy)
  np.testing.assert_array_equal(chunked.layer_spectra, one_chunk.layer_spectra)
  for name in ("test_accuracy", "test_loss"):
    np.testing.assert_array_equal(chunked.measures[name], one_chunk.measures[name])
  assert jax.tree.all(jax.tree.map(np.array_equal, chunked.variables, one_chunk.variables))


class _Stopped(Exception):
  pass


def test_a_text_run_stopped_mid_epoch_and_resumed_equals_one_never_stopped(
  arrays, one_chunk, tmp_path
):
  """Chunks of 3 steps, a checkpoint after each, stopped as the chunk that ends at step 6
  (inside the second epoch) finishes: resumed from the checkpoint at step 3, the run gives
  the losses, the per-step counts behind each epoch's accuracy, the test measures and the
  weights of a run that never stopped, bit for bit."""
  spec = ExperimentSpec(TEXT_CFG, num_seeds=SEEDS, chunk_size=3, measures=None)
  folder = tmp_path / "run.checkpoints"

  def stop_at_6(norm: str, phase: str, step: int) -> None:
    if phase == "train" and step == 6:
      raise _Stopped

  first = resume.Checkpointer(folder, repr(spec), every_s=0)
  with pytest.raises(_Stopped):
    pipeline.run_norm(
      spec, "layernorm", arrays=arrays, progress=False, on_progress=stop_at_6, checkpointer=first
    )
  first.wait()
  again = resume.Checkpointer(folder, repr(spec), every_s=0)
  assert again.open(resume=True) == 1 and again.saved_to == {("layernorm", 0): 3}
  resumed = pipeline.run_norm(spec, "layernorm", arrays=arrays, progress=False, checkpointer=again)
  np.testing.assert_array_equal(resumed.losses, one_chunk.losses)
  np.testing.assert_array_equal(resumed.epoch_accuracy, one_chunk.epoch_accuracy)
  for name in ("test_accuracy", "test_loss"):
    np.testing.assert_array_equal(resumed.measures[name], one_chunk.measures[name])
  assert jax.tree.all(jax.tree.map(np.array_equal, resumed.variables, one_chunk.variables))
  again.remove()
  assert not folder.exists()


def test_a_seed_trained_alone_equals_the_same_seed_trained_in_a_group(arrays, one_chunk):
  """Seed 1 alone against seed 1 next to seed 0: the same batches and initialization;
  vmapped and single programs round differently, hence float32 tolerances."""
  alone = text_norm_run(arrays, chunk_size=TEXT_CFG.steps, num_seeds=1, seed=1)
  assert alone.seeds.tolist() == [1] and one_chunk.seeds.tolist() == [0, 1]
  np.testing.assert_allclose(alone.losses[0], one_chunk.losses[1], rtol=1e-5)
  np.testing.assert_array_equal(alone.epoch_accuracy[0], one_chunk.epoch_accuracy[1])
  np.testing.assert_allclose(alone.layer_spectra[0], one_chunk.layer_spectra[1], rtol=1e-4)
  for name in ("test_accuracy", "test_loss"):
    np.testing.assert_allclose(alone.measures[name][0], one_chunk.measures[name][1], rtol=1e-5)
  assert not np.allclose(one_chunk.losses[0], one_chunk.losses[1])  # the seeds differ


def test_the_epoch_accuracy_is_what_a_step_by_step_replay_predicts(arrays, one_chunk):
  """Seed 0 replayed one step at a time from its keys: before each step, the examples of
  weight 1 whose logits' argmax (NumPy) is their label; summed over each epoch's steps and
  divided by the training examples, they are the run's epoch accuracy."""
  cfg, task = TEXT_CFG, TEXT_CFG.task
  model = model_lib.build_for_training(cfg, "layernorm")
  state = train.init_state(model, task, keys.run_keys(0).train, cfg.learning_rate)
  step = jax.jit(train.weighted_train_step, static_argnums=0)
  logits_of = jax.jit(lambda params, tokens: model.apply({"params": params}, tokens, train=False))
  right_T, losses_T, real_T = [], [], []
  for t in range(cfg.steps):
    tokens_BxL, labels_B, weights_B = data.training_batch(state.data_key, t, task, arrays)
    predicted_B = np.argmax(np.asarray(logits_of(state.params, tokens_BxL)), axis=-1)
    real_B = np.asarray(weights_B) == 1
    right_T.append(int(np.sum(real_B & (predicted_B == np.asarray(labels_B)))))
    real_T.append(int(real_B.sum()))
    state, (loss, correct) = step(model, state, tokens_BxL, labels_B, weights_B)
    assert float(correct) == right_T[-1]
    losses_T.append(float(loss))
  assert real_T == [4, 4, 4, 2] * EPOCHS  # the last batch of an epoch padded to 4 rows
  per_epoch = np.reshape(right_T, (EPOCHS, STEPS_PER_EPOCH)).sum(axis=1) / NUM_TRAIN
  np.testing.assert_array_equal(one_chunk.epoch_accuracy[0], per_epoch)
  np.testing.assert_allclose(one_chunk.losses[0], losses_T, rtol=1e-5)


def test_the_test_measures_are_a_direct_evaluation_of_the_trained_model(arrays, one_chunk):
  """Each seed's trained variables on the whole test split at once, in evaluation mode, the
  accuracy and cross-entropy computed in NumPy (float64), against the run's batched ones."""
  model = model_lib.build(TEXT_CFG, "layernorm")
  labels = np.asarray(arrays.test_labels)
  for s in range(SEEDS):
    variables = jax.tree.map(lambda x, s=s: x[s], one_chunk.variables)
    logits = model.apply(variables, jnp.asarray(arrays.test_tokens), train=False)
    logits = np.asarray(logits, np.float64)
    assert logits.shape == (NUM_TEST, 4)
    right = int(np.sum(np.argmax(logits, axis=-1) == labels))
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    cross_entropy = -log_softmax[np.arange(NUM_TEST), labels].mean()
    np.testing.assert_allclose(one_chunk.measures["test_accuracy"][s], right / NUM_TEST, rtol=1e-6)
    np.testing.assert_allclose(one_chunk.measures["test_loss"][s], cross_entropy, rtol=1e-5)


def test_a_diverged_run_has_no_epoch_accuracy(arrays, one_chunk):
  """Two runs of seed 0 in one group, one at a learning rate that overflows float32 after
  its first step: that run's accuracies are NaN (they count predictions of NaN weights),
  its neighbour's are those of seed 0 trained normally."""
  spec = ExperimentSpec(TEXT_CFG, num_seeds=1, chunk_size=TEXT_CFG.steps, measures=None)
  runs = programs.Runs(np.array([0, 0]), np.array([TEXT_CFG.learning_rate, 1e30]))
  r = pipeline.run_norm(spec, "layernorm", arrays=arrays, progress=False, runs=runs)
  assert r.diverged.tolist() == [False, True]
  assert np.all(np.isnan(r.epoch_accuracy[1]))
  np.testing.assert_array_equal(r.epoch_accuracy[0], one_chunk.epoch_accuracy[0])
  np.testing.assert_array_equal(r.losses[0], one_chunk.losses[0])


def test_quick_takes_at_most_the_data_it_has(tmp_path, monkeypatch):
  """--quick's subsets (2,560 and 1,024 examples) shrink to a smaller data set's sizes, where
  an explicit --train-examples beyond the data is refused
  (`test_options_that_make_no_run_are_refused_before_training`)."""
  monkeypatch.setenv("JAXNORM_TOKEN_CACHE_DIR", str(tmp_path / "tokens"))
  files = write_data(tmp_path)
  spec, arrays = prepared(files, "--quick")
  text = spec.config.text
  assert (text.num_train, text.num_test) == (NUM_TRAIN, NUM_TEST)
  assert arrays.train_tokens.shape[0] == NUM_TRAIN and arrays.test_labels.shape == (NUM_TEST,)
  assert spec.config.steps == EPOCHS * -(-NUM_TRAIN // BATCH)  # explicit --epochs wins


@pytest.mark.parametrize(
  "field, value",
  [("train_tokens", VOCAB_SIZE), ("train_labels", 4), ("test_tokens", -1), ("test_labels", 7)],
)
def test_arrays_outside_the_vocabulary_or_the_classes_are_refused(arrays, field, value):
  """Inside the programs a gather clamps an id beyond its table: such arrays would train
  silently on other rows, so the run refuses them first, naming the array."""
  bad = np.array(getattr(arrays, field))
  bad.flat[3] = value
  spec = ExperimentSpec(TEXT_CFG, measures=None)
  with pytest.raises(ValueError, match=f"TextArrays.{field} holds values"):
    pipeline.run(spec, arrays=arrays._replace(**{field: bad}), progress=False)
  with pytest.raises(ValueError, match="pass its arrays"):
    pipeline.run(spec, progress=False)
  with pytest.raises(ValueError, match="synthetic task"):
    pipeline.run(ExperimentSpec(config.TINY, measures=None), arrays=arrays, progress=False)
