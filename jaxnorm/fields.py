"""Settings read from outside (a config, a JSON file, the command line) as plain Python
values: each converter returns `value` as its type or raises `FieldTypeError` naming where
it was found (e.g. "Config.steps"); a bool is never a number, a string never a tuple."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import numpy as np


class FieldTypeError(TypeError, ValueError):
  """A setting given a value of the wrong type (a bool for a number, a string for a flag).
  Also a ValueError, as every other invalid setting, so that one `except ValueError`
  refuses them all."""


def wrong_type(where: str, value: Any, expected: str):
  raise FieldTypeError(f"{where}={value!r} is invalid: must be {expected}.")


def as_int(where: str, value: Any) -> int:
  """`value` as an int: an int or a numpy integer; a bool or a float (even 2.0) is refused.
  Raises FieldTypeError naming `where` (e.g. "Config.steps")."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    wrong_type(where, value, "an integer (int or numpy integer, not bool or float)")
  return int(value)


def as_float(where: str, value: Any) -> float:
  """`value` as a float: an int, a float or a numpy number (a JSON file may hold 1 for
  1.0); a bool is refused. Raises FieldTypeError naming `where`, ValueError beyond a
  float's range."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    wrong_type(where, value, "a number (int, float or numpy number, not bool)")
  try:
    return float(value)
  except OverflowError:
    raise ValueError(f"{where}={value!r} is invalid: beyond the range of a float.") from None


def as_flag(where: str, value: Any) -> bool:
  """`value` as a bool: True or False (or a numpy bool); anything else, "no" and 0
  included, is refused with FieldTypeError naming `where`."""
  if not isinstance(value, (bool, np.bool_)):
    wrong_type(where, value, "True or False (bool or numpy bool)")
  return bool(value)


def as_str(where: str, value: Any) -> str:
  """`value` as a str; anything else is refused with FieldTypeError naming `where`."""
  if not isinstance(value, str):
    wrong_type(where, value, "a string")
  return str(value)


def as_tuple(where: str, value: Any, item: Callable[[str, Any], Any], of: str) -> tuple:
  """`value`, a tuple, with `item(f"{where}[i]", x)` applied to each element x; a list, a
  string or anything else is refused with FieldTypeError naming `where` (`of` says what
  the elements are)."""
  if not isinstance(value, tuple):
    wrong_type(where, value, f"a tuple of {of}")
  return tuple(item(f"{where}[{i}]", x) for i, x in enumerate(value))
