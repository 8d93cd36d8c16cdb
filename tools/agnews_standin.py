"""Writes a stand-in for AG News where the real data cannot be had (NOT AG News: invented
texts in its layout): the same as `jaxnorm agnews-standin` (its code and manual:
jaxnorm/agnews_standin.py).

    python tools/agnews_standin.py --out /tmp/agnews_standin             # 120,000 + 7,600
    python experiments/exp4.py --data /tmp/agnews_standin \\
        --tokenizer /tmp/agnews_standin/vocab.txt --quick
"""

if __name__ == "__main__":
  from jaxnorm import agnews_standin

  raise SystemExit(agnews_standin.main())
