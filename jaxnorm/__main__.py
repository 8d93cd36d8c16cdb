"""`python -m jaxnorm ...`: the command `jaxnorm` (jaxnorm/commands.py)."""

if __name__ == "__main__":
  from jaxnorm import commands

  commands.main()
