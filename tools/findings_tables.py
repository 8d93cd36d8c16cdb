"""The verdict tables of docs/findings.md, from its two run folders: the same as
`jaxnorm findings-tables` (its code and manual: jaxnorm/findings_tables.py).

    python tools/findings_tables.py runs/findings_paper runs/findings_equal_lr
"""

import sys

if __name__ == "__main__":
  import jaxnorm.quiet  # noqa: F401  first: stops and errors while importing end quietly
  from jaxnorm import findings_tables

  sys.exit(findings_tables.main(sys.argv[1:]))
