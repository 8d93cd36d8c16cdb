"""The installed command `jaxnorm` (pyproject.toml's [project.scripts]; `python -m jaxnorm`
is the same): every experiment script and tool as a subcommand, with the script's options,
--help (under the program name `jaxnorm <command>`) and exit statuses (docs/cli.md).

    jaxnorm exp2 --quick            # python experiments/exp2.py --quick
    jaxnorm compare runs/a runs/b   # python tools/compare_runs.py runs/a runs/b
    jaxnorm --help                  # the commands, one line each
    jaxnorm --version

Standard library only until a command runs: `jaxnorm --help` and `--version` load no JAX.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import NamedTuple, NoReturn

PROG = "jaxnorm"
EXIT_USAGE = 2  # exits.EXIT_USAGE, which loads JAX


class Command(NamedTuple):
  """A subcommand. `summary`: its line in `jaxnorm --help`; `script`: the script it is the
  same as. An experiment's `target` is its name in `jaxnorm.predictions`, run by `cli.main`
  with `description` (the first paragraph of its script's docstring) as --help's; a tool's
  is the module whose `main(argv, prog)` runs it and returns the exit status."""

  summary: str
  script: str
  target: str
  description: str = ""


_PAPER = '"Stability and Expression: The Dual-Mechanism of Normalization in Deep Learning"'

COMMANDS = {
  "exp1": Command(
    "Experiment 1: LayerNorm vs no normalization (Figure 1)",
    "experiments/exp1.py",
    "EXP1",
    f"Experiment 1: LayerNorm vs no normalization (Figure 1 of {_PAPER}).",
  ),
  "exp2": Command(
    "Experiment 2: LayerNorm vs BatchNorm vs no normalization (Figure 2)",
    "experiments/exp2.py",
    "EXP2",
    f"Experiment 2: LayerNorm vs BatchNorm vs no normalization (Figure 2 of {_PAPER}).",
  ),
  "exp3": Command(
    "Experiment 3: is the constraint alone enough? Adds a Manual L2 Norm (Figure 3)",
    "experiments/exp3.py",
    "EXP3",
    "Experiment 3: is the constraint alone enough? LayerNorm, BatchNorm, No Norm and a "
    'parameter-free "Manual L2 Norm" (each token divided by its L2 norm, clamped below at '
    f"1e-9), trained at the default 1e-4 (Figure 3 of {_PAPER}).",
  ),
  "exp4": Command(
    "Experiment 4: AG News, three 6-block models dissected layer by layer (Figure 4)",
    "experiments/exp4.py",
    "EXP4",
    "Experiment 4 of the paper: three 6-block Transformers (LayerNorm, the parameter-free "
    '"Manual L2 Norm", no normalization) trained on the AG News news-topic benchmark and '
    "dissected layer by layer: the singular-value spectra of the block outputs at layers 1, 3 "
    "and 6 with each model's training accuracy (Figure 4), every layer's isotropy, the test "
    "split's accuracy and loss, and the paper's predictions judged per layer.",
  ),
  "deep": Command(
    "Deep models, layer by layer: Experiment 4's encoder on the synthetic task",
    "experiments/deep.py",
    "DEEP",
    "Deep models, layer by layer: the paper's Experiment 4 encoder (6 post-norm blocks, 4 "
    'heads, no positional encoding) with LayerNorm, the parameter-free "Manual L2 Norm" and no '
    "normalization, trained on the synthetic task of Experiment 2, Adam at 2e-4 (the paper's "
    "rate for its deep models), and dissected at every depth: the singular-value spectrum and "
    "the isotropy measures of the embedding output (layer 0) and of each block's output "
    "(layers 1-6), and with `--measures all` the Hessian restricted to each block.",
  ),
  "sweep": Command(
    "Learning-rate sweep: every model of Experiment 2 at each rate of a grid",
    "experiments/lr_sweep.py",
    "LR_SWEEP",
    "Learning-rate sweep: every normalization of Experiment 2 trained at each rate of a grid, "
    "over several seeds, and each measure (fit, flatness, isotropy) reported against the rate.",
  ),
  "compare": Command(
    "Two saved runs of the same models and seeds, measure by measure",
    "tools/compare_runs.py",
    "jaxnorm.compare_runs",
  ),
  "findings-tables": Command(
    "The verdict tables of docs/findings.md, from its two run folders",
    "tools/findings_tables.py",
    "jaxnorm.findings_tables",
  ),
  "agnews-standin": Command(
    "Writes a stand-in for AG News where the real data cannot be had",
    "tools/agnews_standin.py",
    "jaxnorm.agnews_standin",
  ),
}


def version() -> str:
  """The installed distribution's version; from a source tree that is not installed,
  the package's own (`jaxnorm.__version__`, which pyproject.toml reads)."""
  try:
    return metadata.version(PROG)
  except metadata.PackageNotFoundError:
    from jaxnorm import __version__

    return __version__


def usage() -> str:
  """`jaxnorm --help`: the commands, one line each."""
  width = max(map(len, COMMANDS)) + 2
  lines = [
    f"usage: {PROG} COMMAND [OPTIONS]   ({PROG} COMMAND --help: the command's options)",
    "",
    'The experiments of "Stability and Expression: The Dual-Mechanism of Normalization in',
    'Deep Learning" and their tools; each command takes the options of its script',
    "(docs/cli.md) and exits as it does.",
    "",
    "commands:",
    *(f"  {name:<{width}}{c.summary}" for name, c in COMMANDS.items()),
    "",
    "options:",
    f"  {'-h, --help':<{width}}this list",
    f"  {'--version':<{width}}the installed version of jaxnorm",
  ]
  return "\n".join(lines) + "\n"


def _refuse(message: str) -> int:
  print(f"{PROG}: error: {message}", file=sys.stderr)
  return EXIT_USAGE


def run(argv: Sequence[str]) -> int:
  """Runs the command `argv` names with the rest of `argv` as its arguments; the exit
  status. No command: the list on standard output and 2 (nothing ran); an unknown command
  or option: one line and 2."""
  if not argv:
    sys.stdout.write(usage())
    return EXIT_USAGE
  name, rest = argv[0], list(argv[1:])
  if name in ("-h", "--help"):
    sys.stdout.write(usage())
    return 0
  if name == "--version":
    print(f"{PROG} {version()}")
    return 0
  if name not in COMMANDS:
    kind = "option" if name.startswith("-") else "command"
    return _refuse(f"unknown {kind} {name!r} (choose from {', '.join(COMMANDS)})")
  command, prog = COMMANDS[name], f"{PROG} {name}"
  if command.description:
    from jaxnorm import cli, predictions

    experiment = getattr(predictions, command.target)
    return cli.main(rest, experiment, prog=prog, description=command.description)
  return importlib.import_module(command.target).main(rest, prog=prog)


def main(argv: Sequence[str] | None = None) -> NoReturn:
  """The console script: `run` on the process's arguments, then the exit, as the scripts
  end (`exits.exit_process` where the command loaded it: at once after a failure or a
  stop, without waiting for compilations in worker threads)."""
  import jaxnorm.quiet  # noqa: F401  first: stops and errors while importing end quietly

  argv = sys.argv[1:] if argv is None else list(argv)
  if argv and argv[0] in COMMANDS:  # what `jaxnorm.quiet`'s one line names
    sys.argv[0] = f"{PROG} {argv[0]}"
  else:
    sys.argv[0] = PROG
  status = run(argv)
  exits = sys.modules.get("jaxnorm.exits")
  if exits is not None:
    exits.exit_process(status)
  sys.exit(status)
