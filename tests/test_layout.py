"""The package's shape: each module imports only modules below it (no import cycle, those
under `TYPE_CHECKING` and inside functions counted), none is over 400 lines, and the
scripts (experiments, tools, benchmarks) never import from tests/."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jaxnorm"
MAX_LINES = 400


def imports_of(path: Path, modules: set[str]) -> set[str]:
  """The jaxnorm modules that `path` imports anywhere in it."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module == "jaxnorm":
      found |= {alias.name for alias in node.names if alias.name in modules}
    elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jaxnorm."):
      found.add(node.module.split(".")[1])
    elif isinstance(node, ast.Import):
      found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("jaxnorm.")}
    elif (  # `import jaxnorm` then `jaxnorm.cli`: the package loads the module when used
      isinstance(node, ast.Attribute)
      and isinstance(node.value, ast.Name)
      and node.value.id == "jaxnorm"
      and node.attr in modules
    ):
      found.add(node.attr)
  return found - {path.stem}


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One import cycle of `graph` (module -> modules it imports), or None."""
  state: dict[str, int] = {}
  stack: list[str] = []

  def visit(module: str) -> list[str] | None:
    state[module] = 1
    stack.append(module)
    for other in sorted(graph.get(module, ())):
      if state.get(other) == 1:
        return [*stack[stack.index(other) :], other]
      if not state.get(other) and (found := visit(other)):
        return found
    stack.pop()
    state[module] = 2
    return None

  for module in sorted(graph):
    if not state.get(module) and (found := visit(module)):
      return found
  return None


def test_the_cycle_finder_finds_a_cycle_and_only_a_cycle():
  assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_every_kind_of_import_is_seen(tmp_path):
  source = tmp_path / "config.py"
  source.write_text(
    "from jaxnorm import data\nimport jaxnorm.model\nfrom jaxnorm.loss import x\n"
    "def f():\n  import jaxnorm\n  return jaxnorm.cli.main\n"
  )
  modules = {"config", "data", "model", "loss", "cli", "spec"}
  assert imports_of(source, modules) == {"data", "model", "loss", "cli"}


def test_no_import_cycle_among_the_modules():
  modules = {p.stem for p in PACKAGE.glob("*.py")}
  graph = {p.stem: imports_of(p, modules) for p in PACKAGE.glob("*.py")}
  assert cycle(graph) is None


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_no_module_is_over_400_lines(path):
  assert len(path.read_text().splitlines()) <= MAX_LINES


def test_scripts_never_import_from_tests():
  for folder in ("experiments", "tools", "benchmarks"):
    for path in (ROOT / folder).glob("*.py"):
      text = path.read_text()
      assert '/ "tests"' not in text and "'tests'" not in text, path
      for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import | ast.ImportFrom):
          names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
          names += [a.name for a in node.names]
          assert not any(n.split(".")[0] in ("tests", "conftest") for n in names), path


def test_asking_the_package_for_quiet_installs_no_handlers():
  """`jaxnorm.quiet` replaces the signal handlers and excepthook of the whole process (for
  scripts): a notebook's `hasattr(jaxnorm, "quiet")` or tab completion must not load it."""
  code = (
    "import signal, sys, jaxnorm\n"
    "handler, hook = signal.getsignal(signal.SIGINT), sys.excepthook\n"
    "assert not hasattr(jaxnorm, 'quiet')\n"
    "assert signal.getsignal(signal.SIGINT) is handler and sys.excepthook is hook\n"
    "import jaxnorm.quiet\n"
    "assert signal.getsignal(signal.SIGINT) is not handler\n"
  )
  env = {**os.environ, "PYTHONPATH": str(ROOT)}
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
  assert proc.returncode == 0, proc.stderr
