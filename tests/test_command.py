"""The command `jaxnorm` (jaxnorm/commands.py): pyproject.toml declares it; each subcommand
is its script, with the same --help and exit statuses; --version is the installed version;
--help lists the commands without loading JAX; an unknown command is one line and 2; an
import that fails or a stop while importing ends quietly, as in the scripts.

The command runs as the console script that `pip install -e .` put beside this
interpreter where it is this checkout's (as in CI), else as `python -m jaxnorm`."""

import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from helpers import STOP_AT_JAX

from jaxnorm import commands, results

ROOT = Path(__file__).resolve().parents[1]
ENV = {
  **os.environ,
  "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))),
}
SCRIPTS = sorted(
  p.relative_to(ROOT).as_posix()
  for folder in ("experiments", "tools")
  for p in (ROOT / folder).glob("*.py")
)


def _installed_here() -> str | None:
  """The console script `jaxnorm` installed beside this interpreter from this checkout,
  else None."""
  path = shutil.which("jaxnorm", path=str(Path(sys.executable).parent))
  try:
    url = json.loads(metadata.distribution("jaxnorm").read_text("direct_url.json") or "{}")
  except metadata.PackageNotFoundError:
    return None
  where = urlparse(url.get("url", ""))
  if path is None or where.scheme != "file" or Path(unquote(where.path)).resolve() != ROOT:
    return None
  return path


INSTALLED = _installed_here()
COMMAND = [INSTALLED] if INSTALLED else [sys.executable, "-m", "jaxnorm"]


def _jaxnorm(*args: str, env=None, **kwargs) -> subprocess.CompletedProcess:
  return subprocess.run(
    [*COMMAND, *args], capture_output=True, text=True, env=env or ENV, timeout=600, **kwargs
  )


def _one_line(text: str, prefix: str) -> str:
  assert text.count("\n") == 1 and text.startswith(prefix) and "Traceback" not in text, text
  return text


def test_pyproject_declares_the_command_and_the_version_it_reports():
  tomllib = pytest.importorskip("tomllib")
  project = tomllib.loads((ROOT / "pyproject.toml").read_text())
  module, _, name = project["project"]["scripts"]["jaxnorm"].partition(":")
  entry = getattr(__import__(module, fromlist=[name]), name)
  assert callable(entry) and entry is commands.main
  assert "version" in project["project"]["dynamic"]
  assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "jaxnorm.__version__"}


def test_every_script_is_a_command():
  assert sorted(c.script for c in commands.COMMANDS.values()) == SCRIPTS


def test_version_is_the_installed_one():
  try:
    expected = metadata.version("jaxnorm")
  except metadata.PackageNotFoundError:  # a source tree that is not installed
    import jaxnorm

    expected = jaxnorm.__version__
  proc = _jaxnorm("--version")
  assert proc.returncode == 0 and proc.stdout == f"jaxnorm {expected}\n" and not proc.stderr


def test_help_lists_every_command_on_one_line_and_loads_no_jax():
  proc = _jaxnorm("--help")
  assert proc.returncode == 0 and not proc.stderr
  lines = proc.stdout.splitlines()
  for name, command in commands.COMMANDS.items():
    assert sum(line.split()[:1] == [name] for line in lines) == 1, name
    assert any(line.split() == [name, *command.summary.split()] for line in lines), name
  bare = _jaxnorm()  # nothing to run: the same list, and 2
  assert bare.returncode == 2 and bare.stdout == proc.stdout
  code = (
    "import sys\nfrom jaxnorm import commands\n"
    "assert commands.run(['--help']) == commands.run(['--version']) == 0\n"
    "assert not [m for m in sys.modules if m.split('.')[0] in ('jax', 'numpy')], sys.modules\n"
  )
  loads = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
  assert loads.returncode == 0, loads.stderr


@pytest.mark.parametrize("args", [["exp5"], ["--exp2"], ["-x", "exp2"]])
def test_an_unknown_command_or_option_is_refused_in_one_line(args):
  proc = _jaxnorm(*args)
  assert proc.returncode == 2 and not proc.stdout
  assert args[0] in _one_line(proc.stderr, "jaxnorm: error: unknown ")


def _helps(argvs: dict[str, list[str]], call: str) -> dict[str, str]:
  """What each of `argvs` prints, run by `call` ("script" or "command") in one process."""
  code = f"""
import contextlib, io, json, runpy, sys
from jaxnorm import commands
out = {{}}
for key, argv in json.loads(sys.argv[1]).items():
  buffer = io.StringIO()
  with contextlib.redirect_stdout(buffer):
    try:
      if {call!r} == "script":
        sys.argv = argv
        runpy.run_path(argv[0], run_name="__main__")
      else:
        commands.run(argv)
    except SystemExit as e:
      assert e.code in (0, None), (key, e.code)
  out[key] = buffer.getvalue()
print(json.dumps(out))
"""
  proc = subprocess.run(
    [sys.executable, "-c", code, json.dumps(argvs)],
    capture_output=True,
    text=True,
    cwd=ROOT,
    env=ENV,
  )
  assert proc.returncode == 0, proc.stderr
  return json.loads(proc.stdout)


def test_each_command_prints_its_scripts_help():
  """The same text under the command's name (`jaxnorm exp2` for exp2.py), but for how
  argparse wraps the usage lines around a longer name."""
  names = {c.script: name for name, c in commands.COMMANDS.items()}
  scripts = _helps({s: [s, "--help"] for s in SCRIPTS}, "script")
  ours = _helps({s: [names[s], "--help"] for s in SCRIPTS}, "command")
  for script in SCRIPTS:
    mine = ours[script].replace(f"jaxnorm {names[script]}", "PROG")
    theirs = scripts[script].replace(Path(script).name, "PROG")
    assert "usage: PROG" in mine and len(theirs) > 200
    assert mine.split() == theirs.split(), script


def test_each_experiment_is_the_one_its_script_runs():
  for name, command in commands.COMMANDS.items():
    if not command.description:
      continue
    tree = ast.parse((ROOT / command.script).read_text())
    call = next(
      n
      for n in ast.walk(tree)
      if isinstance(n, ast.Call) and ast.unparse(n.func) == "cli.run_script"
    )
    assert ast.unparse(call.args[0]) == f"predictions.{command.target}", name
    paragraph = ast.get_docstring(tree).split("\n\n")[0]
    assert command.description.split() == paragraph.split(), name


def test_exit_statuses_of_a_refusal_and_of_a_tiny_run(tmp_path):
  refused = _jaxnorm("exp2", "--steps", "0")
  assert refused.returncode == 2 and not refused.stdout
  assert "--steps" in _one_line(refused.stderr, "jaxnorm exp2: error: ")
  out = tmp_path / "run"
  proc = _jaxnorm(
    "exp2",
    *("--preset", "tiny", "--steps", "3", "--norms", "layernorm", "--landscape-points", "3"),
    *("--no-measures", "--no-progress", "--no-compilation-cache", "--out", str(out)),
    cwd=tmp_path,
  )
  assert proc.returncode == 0, proc.stderr
  assert (out / "run.json").is_file() and str(out) in proc.stdout
  assert results.load(out).norms["layernorm"].losses.shape == (1, 3)
  missing = _jaxnorm("compare", str(out), str(tmp_path / "nowhere"))
  assert missing.returncode == 2 and not missing.stdout
  assert "nowhere" in _one_line(missing.stderr, "jaxnorm compare: error: ")


# Put first on the command's PYTHONPATH as sitecustomize.py: `import jax` fails (or, with
# helpers.STOP_AT_JAX, the process stops itself as it begins to import JAX).
JAX_FAILS = "import sys\nsys.modules['jax'] = None\n"


def _with_site(tmp_path: Path, code: str) -> dict:
  (tmp_path / "site").mkdir()
  (tmp_path / "site" / "sitecustomize.py").write_text(code)
  return {**ENV, "PYTHONPATH": os.pathsep.join((str(tmp_path / "site"), ENV["PYTHONPATH"]))}


def test_an_import_that_fails_ends_in_one_line_and_3(tmp_path):
  proc = _jaxnorm("exp2", "--help", env=_with_site(tmp_path, JAX_FAILS))
  assert proc.returncode == 3 and not proc.stdout
  assert "import of jax halted" in _one_line(proc.stderr, "jaxnorm exp2: error: ")


def test_a_stop_while_importing_ends_quietly(tmp_path):
  proc = subprocess.Popen(
    [*COMMAND, "exp2", "--help"],
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    env=_with_site(tmp_path, STOP_AT_JAX),
  )
  deadline = time.monotonic() + 600
  while Path(f"/proc/{proc.pid}/stat").read_text().rpartition(")")[2].split()[0] not in "Tt":
    assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  proc.send_signal(signal.SIGCONT)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 143 and not out and not err, err
