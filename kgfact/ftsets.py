"""Fine-tuning sets: controlled mixtures of facts the model knows and facts it does not.

Built from a SliCK-labelled run (``slick`` table, train split). A fact is *Known* when its SliCK
category is HighlyKnown, MaybeKnown or WeaklyKnown and *Unknown* otherwise (Gekhman et al.).
Every set has the same relation mix: each relation contributes the same number of examples
``|D| / R`` (the remainder goes to the first relations in id order), so changing the share of
Unknown examples never changes which relations the model is trained on. A relation with fewer
Known or Unknown facts than its share gives all it can to every set and the others share the
rest (``size`` above the default, which is the largest equal split).

Sets (each saved as ``ftsets/<name>.parquet``, which later stages read through
:func:`kgfact.contract.read_set`; the index ``ftsets`` lists them):

- ``ft-known``, ``mix-25``, ``mix-50``, ``mix-75``, ``ft-unknown``: size ``|D|`` with X% Unknown
  for X in the grid (0 and 100 are FT-Known and FT-Unknown, the two balanced sets of Gong et al.).
  The Unknown count is exactly ``round(X |D|)``, spread over relations as evenly as possible.
  Sets are nested: each relation's Known and Unknown examples are taken from one seeded order,
  so the Unknown examples of ``mix-25`` are among those of ``mix-50``.
- ``highly-known``, ``maybe-known``, ``weakly-known``, ``unknown``: one category only (size
  ``|D|`` where every relation has enough, else the largest size the rarest relation allows),
  and ``natural``: a seeded sample of the train pool with its natural category mix.
- ``idk-relabel``: ``mix-50`` (``relabel_share``) with every Unknown answer replaced by
  ``"I don't know"``; ``filtered``: the same set with its Unknown examples removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from kgfact.config import check_fields
from kgfact.contract import CATEGORIES, mixture_name
from kgfact.errors import KgfactError
from kgfact.prompts import IDK
from kgfact.qa import shuffled
from kgfact.rundir import RunDir, config_json

STAGE = "ftsets"
COLUMNS = ["qid", "relation", "subject", "object", "question", "answer", "gold", "aliases",
           "category", "known", "relabelled"]


@dataclass(frozen=True)
class FtSetsConfig:
    """Which fine-tuning sets to build and how large."""

    size: int | None = field(default=None, metadata={"min": 1,
        "help": "|D|, examples per set; None = the largest the mixture grid allows."})
    unknown_shares: tuple[float, ...] = field(default=(0.0, 0.25, 0.5, 0.75, 1.0), metadata={
        "min": 0, "max": 1, "nonempty": True,
        "help": "Shares of Unknown examples of the mixture grid (0 = ft-known, 1 = ft-unknown)."})
    relations: tuple[str, ...] | None = field(default=None, metadata={"nonempty": True,
        "help": "Relations to train on; None = every train relation with Known and Unknown facts."})
    relabel_share: float = field(default=0.5, metadata={"min": 0, "max": 1,
        "help": "Unknown share of the set that idk-relabel and filtered are derived from."})
    idk_answer: str = field(default=IDK, metadata={
        "help": "Answer that replaces Unknown answers in idk-relabel."})
    guesses: Literal["keep", "exclude"] = field(default="keep", metadata={
        "help": "Facts SliCK flags as guesses (kgfact.guessing): keep them, or exclude them "
                "from every set."})
    seed: int = field(default=0, metadata={"min": 0,
        "help": "Seed of the per-relation example orders."})

    def __post_init__(self) -> None:
        check_fields(self)
        names = [mixture_name(share) for share in self.unknown_shares]
        if len(set(names)) < len(names):  # each set is a file named after its share
            seen: dict[str, float] = {}
            a, b = next((seen[n], x) for n, x in zip(names, self.unknown_shares)
                        if seen.setdefault(n, x) != x)
            raise KgfactError(f"unknown_shares {a} and {b} both give the set "
                              f"{mixture_name(a)}: shares must differ by at least 0.01")


def spread(total: int, parts: int) -> np.ndarray:
    """``total`` split into ``parts`` integers differing by at most one, larger ones first.

    >>> spread(10, 3).tolist()
    [4, 3, 3]
    """
    return total // parts + (np.arange(parts) < total % parts)


def train_pool(run: RunDir, relations: tuple[str, ...] | None = None,
               guesses: str = "keep") -> pd.DataFrame:
    """Train questions with their SliCK category, joined with the QA fields sets need;
    ``guesses="exclude"`` leaves out the facts SliCK flagged as guesses."""
    slick = run.read_table("slick")
    qa = run.read_table("qa")
    if guesses == "exclude":
        if "guess" not in slick:
            raise KgfactError(f"{run.path}'s SliCK table has no guess flags (made before "
                              "kgfact flagged guesses): run 'kgfact slick --force' again")
        slick = slick[~slick["guess"]]
    pool = slick.loc[slick["split"] == "train", ["qid", "category"]].merge(qa, on="qid")
    if pool.empty:
        raise KgfactError(f"{run.path} has no SliCK results for train questions: run "
                          f"'kgfact slick {run.path} --splits train,dev,test' first")
    if relations is not None:
        missing = sorted(set(relations) - set(pool["relation"]))
        if missing:
            raise KgfactError(f"no SliCK-labelled train questions for {', '.join(missing)}")
        pool = pool[pool["relation"].isin(relations)]
    pool = pool.assign(known=pool["category"] != "Unknown")
    return pool.sort_values("qid").reset_index(drop=True)


def _frame(rows: pd.DataFrame, relabel: str | None = None) -> pd.DataFrame:
    out = rows.assign(gold=rows["answer"], relabelled=False)
    if relabel is not None:
        out["relabelled"] = ~out["known"]
        out.loc[out["relabelled"], "answer"] = relabel
    return out[COLUMNS].sort_values(["relation", "qid"]).reset_index(drop=True)


def build_sets(pool: pd.DataFrame, config: FtSetsConfig) -> dict[str, pd.DataFrame]:
    """Every fine-tuning set from a labelled train ``pool`` (see the module docstring).

    Raises
    ------
    KgfactError
        If no relation has both Known and Unknown examples, or ``size`` is larger than the
        relations allow.
    """
    counts = pool.groupby(["relation", "known"]).size().unstack(fill_value=0)
    counts = counts.reindex(columns=[True, False], fill_value=0)
    if config.relations is None:
        counts = counts[(counts[True] > 0) & (counts[False] > 0)]
    relations = sorted(counts.index)
    if not relations:
        raise KgfactError("no relation has both Known and Unknown train questions: label more "
                          "questions with 'kgfact slick' or choose other relations")
    # each relation must supply its whole share from either side (for ft-known and ft-unknown)
    caps = counts.loc[relations].min(axis=1).astype(int).tolist()
    largest = min(caps) * len(relations)  # the default: every relation an equal share
    size = config.size if config.size is not None else largest
    if size > sum(caps) or min(caps) == 0:
        detail = "; ".join(f"{r}: {counts.loc[r, True]} known, {counts.loc[r, False]} unknown"
                           for r in relations)
        raise KgfactError(f"a fine-tuning set of {size} examples needs, over its relations, "
                          f"{size} Known and {size} Unknown train questions with every relation "
                          f"having both; the largest possible is {sum(caps) if min(caps) else 0}"
                          f" ({detail})")
    quota = dict(zip(relations, fill_evenly(size, caps)))
    orders = {(r, known): shuffled(g, config.seed, "ftsets", r, str(known))
              for (r, known), g in pool[pool["relation"].isin(relations)]
              .groupby(["relation", "known"])}

    def take(r: str, known: bool, n: int) -> pd.DataFrame:
        return orders[(r, known)].iloc[:n] if n else pool.iloc[:0]

    def mixture(share: float) -> pd.DataFrame:
        n_unknown = round(share * size)
        # spread the Unknown examples so every relation keeps its quota exactly
        unknown = dict(zip(relations, _quota_split(n_unknown, [quota[r] for r in relations])))
        return pd.concat([pd.concat([take(r, False, unknown[r]),
                                     take(r, True, quota[r] - unknown[r])])
                          for r in relations])

    sets = {mixture_name(x): _frame(mixture(x)) for x in sorted(set(config.unknown_shares))}
    by_category = pool[pool["relation"].isin(relations)].groupby(["relation", "category"]).size()
    for category in CATEGORIES:
        have = [int(by_category.get((r, category), 0)) for r in relations]
        n = min(size, min(have) * len(relations))
        if n:
            shares = spread(n, len(relations))
            sets[_kebab(category)] = _frame(pd.concat(
                shuffled(pool[(pool["relation"] == r) & (pool["category"] == category)],
                         config.seed, "ftsets", r, category).iloc[:k]
                for r, k in zip(relations, shares)))
    sets["natural"] = _frame(pd.concat(
        shuffled(pool[pool["relation"] == r], config.seed, "ftsets", r).iloc[:quota[r]]
        for r in relations))
    base = mixture(config.relabel_share)
    sets["idk-relabel"] = _frame(base, relabel=config.idk_answer)
    sets["filtered"] = _frame(base[base["known"]])
    return sets


def fill_evenly(total: int, caps: list[int]) -> list[int]:
    """``total`` split into near-equal parts, part ``i`` at most ``caps[i]``, the rest going
    to the others (earlier parts first on ties): :func:`spread` when no cap binds.

    >>> fill_evenly(10, [9, 9, 9]), fill_evenly(10, [2, 9, 9])
    ([4, 3, 3], [2, 4, 4])
    """
    out = [0] * len(caps)
    for _ in range(total):
        i = min((k for k in range(len(caps)) if out[k] < caps[k]), key=lambda k: (out[k], k))
        out[i] += 1
    return out


def _quota_split(total: int, caps: list[int]) -> list[int]:
    """``total`` spread over bins as evenly as possible, bin ``i`` holding at most ``caps[i]``."""
    out = [0] * len(caps)
    for _ in range(total):  # total is |D| at most: a few thousand steps
        i = min((k for k in range(len(caps)) if out[k] < caps[k]),
                key=lambda k: (out[k] / caps[k], k))
        out[i] += 1
    return out


def _kebab(category: str) -> str:
    """``HighlyKnown`` -> ``highly-known``."""
    return "".join(f"-{c.lower()}" if c.isupper() else c for c in category).lstrip("-")


def index(sets: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per set: name, kind, size, Known/Unknown counts and the Unknown share."""
    rows = []
    for name, table in sets.items():
        kind = ("mixture" if name.startswith(("ft-", "mix-")) else
                "derived" if name in ("idk-relabel", "filtered") else "category")
        n_unknown = int((~table["known"]).sum())
        rows.append((name, kind, len(table), len(table) - n_unknown, n_unknown,
                     n_unknown / len(table) if len(table) else 0.0))
    return pd.DataFrame(rows, columns=["set", "kind", "size", "n_known", "n_unknown",
                                       "unknown_share"])


def make_ftsets(run: RunDir | str, config: FtSetsConfig | None = None) -> pd.DataFrame:
    """Build and save every fine-tuning set of ``run``; returns the index table."""
    run = RunDir.of(run)
    config = config or FtSetsConfig()
    with run.stage(STAGE, config_json(config), seed=config.seed) as info:
        sets = build_sets(train_pool(run, config.relations, config.guesses), config)
        for name, table in sets.items():
            run.write_table(f"ftsets/{name}", table)
        table = index(sets)
        run.write_table("ftsets", table)
        info["report"] = {"sets": table.set_index("set")["size"].to_dict()}
    return table


def run_stage(run: RunDir | str, config: FtSetsConfig, *,
              progress: bool = True) -> pd.DataFrame:
    """The fine-tuning-sets stage (:mod:`kgfact.stages`): :func:`make_ftsets` (quick: always
    rebuilt)."""
    return make_ftsets(run, config)
