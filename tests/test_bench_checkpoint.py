"""The checkpoint benchmark (benchmarks/bench_checkpoint.py): its smoke run prints one row
whose times are positive and whose shares are those times over the interval."""

import importlib
import re

from helpers import ROOT


def test_the_smoke_run_prints_the_cost_of_a_save(monkeypatch, capsys, tmp_path):
  monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
  bench = importlib.import_module("bench_checkpoint")
  out = tmp_path / "checkpoint.md"
  assert bench.main(["--tiny", "--every", "10", "--out", str(out)]) == 0
  rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| tiny")]
  assert len(rows) == 1 and out.read_text().splitlines()[-1] == rows[0]
  cells = [c.strip() for c in rows[0].strip("|").split("|")]
  blocking, written = (float(re.match(r"[\d.]+", c).group()) for c in cells[3:5])
  assert 0 < blocking <= written
  assert cells[5] == f"{100 * blocking / 10:.2f}%" and cells[6] == f"{100 * written / 10:.2f}%"
