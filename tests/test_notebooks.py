"""The notebooks: each runs top to bottom at a tiny size, in a kernel of this interpreter,
without an error and without writing into the repository; each is committed executed, at the
configuration that its parameters cell sets and its first cell states."""

import ast
import copy
import os
import sys
from pathlib import Path

import nbclient
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
# Each notebook's tiny size: values that replace those of its parameters cell, as papermill
# injects them (a cell after it).
TINY = {
  "exp2.ipynb": {"PRESET": "tiny", "STEPS": 12, "SEEDS": 2},
  "deep.ipynb": {
    "PRESET": "tiny",
    "STEPS": 12,
    "SEEDS": 2,
    "BLOCKS": 3,
    "NORMS": ("layernorm", "l2", "none"),
  },
}
# Not the repository's own files: what the interpreter and an installed environment write.
NOT_THE_REPOSITORY = {".git", "__pycache__", ".venv", ".ruff_cache", ".pytest_cache"}


def test_every_notebook_has_a_tiny_size():
  assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(TINY)


def parameters_index(nb) -> int:
  """The index of the notebook's one cell tagged `parameters`."""
  found = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", ())]
  assert len(found) == 1, f"{len(found)} cells tagged 'parameters', not one"
  return found[0]


def parameters(nb) -> dict[str, str]:
  """The parameters cell as name -> the source of its value; it must hold assignments of
  literal values only."""
  source = nb.cells[parameters_index(nb)].source
  values = {}
  for node in ast.parse(source).body:
    assert isinstance(node, ast.Assign) and len(node.targets) == 1, ast.dump(node)
    ast.literal_eval(node.value)
    values[node.targets[0].id] = ast.get_source_segment(source, node.value)
  return values


def with_values(nb, values: dict):
  """A copy of `nb` with a cell after its parameters cell that sets `values`."""
  nb = copy.deepcopy(nb)
  unknown = set(values) - set(parameters(nb))
  assert not unknown, f"not parameters of the notebook: {unknown}"
  source = "\n".join(f"{name} = {value!r}" for name, value in values.items())
  injected = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
  nb.cells.insert(parameters_index(nb) + 1, injected)
  return nb


def execute(nb, cwd: Path, env: dict | None = None):
  """Runs `nb` top to bottom in a new kernel of this interpreter (ipykernel's own `python3`
  kernel, launched with `sys.executable`), working directory `cwd`; raises
  nbclient.exceptions.CellExecutionError at the first cell that fails."""
  client = nbclient.NotebookClient(
    nb, kernel_name="python3", timeout=900, resources={"metadata": {"path": str(cwd)}}
  )
  client.execute(env={**os.environ, **(env or {})})
  return nb


def snapshot(root: Path) -> dict[str, tuple[int, int] | None]:
  """Every folder below `root` (None) and every file in them with its size and modification
  time, leaving out NOT_THE_REPOSITORY (a folder's own time changes when another test's
  import adds a __pycache__ to it)."""
  out = {}
  for folder, folders, files in os.walk(root):
    folders[:] = [f for f in folders if f not in NOT_THE_REPOSITORY]
    for name in folders:
      out[os.path.relpath(os.path.join(folder, name), root)] = None
    for name in files:
      stat = os.stat(os.path.join(folder, name))
      out[os.path.relpath(os.path.join(folder, name), root)] = (stat.st_size, stat.st_mtime_ns)
  return out


@pytest.mark.parametrize("name", sorted(TINY))
def test_the_notebook_runs_at_a_tiny_size_and_writes_nothing_into_the_repository(name, tmp_path):
  nb = with_values(nbformat.read(NOTEBOOKS / name, as_version=4), TINY[name])
  work, temporary = tmp_path / "work", tmp_path / "tmp"
  work.mkdir()
  temporary.mkdir()
  before = snapshot(ROOT)
  # TMPDIR: the default run folder (OUT = None) is a new temporary folder, made here.
  # PYTHONPATH: the kernel imports this checkout's jaxnorm, as the tests do.
  path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
  env = {"TMPDIR": str(temporary), "PYTHONPATH": path}
  executed = execute(nb, work, env)
  after = snapshot(ROOT)
  changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
  assert not changed, f"the notebook wrote into the repository: {changed[:5]}"
  assert not any(work.iterdir()), "the notebook wrote into its working directory"
  runs = [p.parent for p in temporary.rglob("run.json")]
  assert len(runs) == 1, runs
  errors = [o for c in executed.cells for o in c.get("outputs", ()) if o.output_type == "error"]
  assert not errors


def test_a_failing_cell_fails_the_run_in_a_kernel_of_this_interpreter(tmp_path):
  nb = nbformat.v4.new_notebook()
  nb.cells = [
    nbformat.v4.new_code_cell("import sys; print(sys.executable)"),
    nbformat.v4.new_code_cell("raise ValueError('broken cell')"),
    nbformat.v4.new_code_cell("print('not reached')"),
  ]
  with pytest.raises(nbclient.exceptions.CellExecutionError, match="broken cell"):
    execute(nb, tmp_path)
  assert nb.cells[0].outputs[0].text.strip() == sys.executable
  assert not nb.cells[2].outputs


@pytest.mark.parametrize("name", sorted(TINY))
def test_the_committed_notebook_is_executed_at_the_configuration_it_states(name):
  nb = nbformat.read(NOTEBOOKS / name, as_version=4)
  nbformat.validate(nb)
  values = parameters(nb)
  first = nb.cells[0]
  assert first.cell_type == "markdown"
  for assignment in (f"{key} = {value}" for key, value in values.items()):
    assert f"`{assignment}`" in first.source, f"the first cell does not state {assignment}"
  assert "{" not in first.source, "a placeholder left in the first cell"
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert code[0] is nb.cells[parameters_index(nb)], "the parameters cell is not the first code"
  assert not any("injected-parameters" in c.metadata.get("tags", ()) for c in code)
  # One kernel, top to bottom: execution counts 1, 2, 3, ...
  assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
  for cell in code[1:]:
    assert cell.outputs, f"a cell without outputs: {cell.source[:60]!r}"
    for output in cell.outputs:
      assert output.output_type != "error", output
      assert output.get("name") != "stderr", output.text
  images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
  assert images
  assert max(len(o.data["image/png"]) for o in images) < 300_000, "an image over 300 kB"
