"""Markdown tables: the one writer the report and the theory's report share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd


def markdown_table(df: pd.DataFrame, cell: Callable[[Any], str] = str) -> str:
    """``df`` as a GitHub Markdown table, each value written by ``cell``; a column named by a
    tuple (pivot tables) is written with its parts joined by spaces.

    >>> print(markdown_table(pd.DataFrame({"a": [1], ("b", "c"): [2]})))
    | a | b c |
    | --- | --- |
    | 1 | 2 |
    """
    names = [" ".join(map(str, c)).strip() if isinstance(c, tuple) else str(c)
             for c in df.columns]
    lines = ["| " + " | ".join(names) + " |", "|" + " --- |" * len(names)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |"
              for row in df.itertuples(index=False)]
    return "\n".join(lines)
