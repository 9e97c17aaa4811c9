"""The theory's predictions confronted with measured gaps (``theory.md``, "Predictions").

Choices kgfact makes where ``theory.md`` leaves room (each also in the README):

- **Δ for a mixture.** Every fine-tuning set ``D`` has
  ``u(D) = (|E_kn| − |E_unk|) / |D| = 1 − 2 · unknown_share``. Prediction 1 reads: a model's
  zero-shot in-distribution accuracy is ``c + α · u(D)``, so ``Δ_fact(D) = acc(D) − c = α · u(D)``
  is the gap of ``D`` to a balanced (half unknown) set, and the gap between two sets is
  ``α · (u₁ − u₂)``: ``2α`` for FT-Known vs FT-Unknown. ``α`` and ``c`` are fitted by least
  squares on the per-set accuracies of the fitting sets (default FT-Known and FT-Unknown),
  separately per checkpoint (prediction 4 says the gap changes over training); ``c`` cancels in
  every gap, so ``α`` is the one parameter carried into the prompted predictions.
- **Held-out sets.** Every other evaluated set with an ``unknown_share`` (``mix-25``,
  ``mix-50``, ...) is held out of the fit: its accuracy is predicted as ``c + α · u(D)`` and
  measured minus predicted is tested for equivalence with 0 (two one-sided tests against
  ``margin``), per set and pooled (the mean over the held-out sets) per checkpoint. Two points
  fit a line exactly, so without a held-out set prediction 1 cannot fail.
- **Prompted gap of a bucket.** Each (checkpoint, mode, strategy, prompt index, query) unit
  pairs the FT-Known and FT-Unknown answers; its ``A`` is the mean of its two prompts' ``A``
  (equal unless exemplars come from the fine-tuning set). Predicted
  ``Δ* = α · Δu · (1 − mean A)``; measured ``Δ*`` = mean of (correct FT-Known − correct
  FT-Unknown); the measured zero-shot ``Δ`` of a bucket is the same difference under the
  zero-shot prompt, averaged over the bucket's units, so ``Δ* ≤ Δ`` compares the same queries.
- **Zero-shot and prompted** are read from the prompt mode registry, never from mode names:
  every mode without exemplars (:class:`kgfact.prompts.PromptMode`; the built-in ``zero-shot``)
  states no fact, so ``A = 0``: its answers fit ``α`` and give ``Δ``; every mode with exemplars
  is prompted, and the statistics over buckets are given per such mode and over all of them.
- **Buckets**: in-distribution prompted units grouped by (checkpoint, mode, strategy) and one
  of ``all``, ``relation``, ``category`` (SliCK category of ``e_q``) or ``a_quantile``
  (quantile bins of ``A`` within each mode). Statistics use buckets with at least
  ``min_bucket`` units.
- **Units and uncertainty**: a unit is one (checkpoint, mode, strategy, training seed,
  exemplar set, query). One crossed bootstrap drives every interval, as for the factuality gap
  (:mod:`kgfact.gap`): each replicate draws the training seeds, each relation's exemplar sets
  and each relation's queries with replacement, and weighs a unit by the product of its seed's,
  exemplar set's (zero-shot has none) and query's multiplicities. ``α`` is refitted in every
  replicate, so no interval ignores the fit's noise, the seeds' or the exemplar sets'.
- **Relation distance** (prediction 3): the co-occurrence graph links two relations whose edges
  share entities, with length ``1 − Jaccard(entities of r₁, entities of r₂)``; the distance of
  a test relation is its shortest-path length to the nearest fine-tuning relation (``hops``:
  the same without lengths).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.csgraph import shortest_path
from scipy.stats import ConstantInputWarning, spearmanr

from kgfact.config import check_fields
from kgfact.errors import KgfactError
from kgfact.gap import EQUIVALENCE_MARGIN, bootstrap_p, finding
from kgfact.prompts import modes_with

FAMILIES = ("all", "relation", "category", "a_quantile")
STATISTICS = ("spearman_gap", "mae_gap", "spearman_reduction", "mae_reduction", "share_reduced")
_UNIT = ["checkpoint", "mode", "strategy", "seed", "prompt", "qid"]
_CELL = ["qid", "relation", "seed", "prompt"]  # what a bootstrap weight is drawn for
FACTORS = ("seeds", "exemplar sets", "queries")  # what the crossed bootstrap draws


@dataclass(frozen=True)
class PredictionConfig:
    """How predictions are fitted, bucketed and tested."""

    known_set: str = field(default="ft-known", metadata={"name": True, "help": "The FT-Known set."})
    unknown_set: str = field(default="ft-unknown", metadata={"name": True,
        "help": "The FT-Unknown set."})
    fit_sets: tuple[str, ...] | None = field(default=None, metadata={
        "name": True, "nonempty": True,
        "help": "Sets whose zero-shot ID accuracy fits α and c; None: the two above. Every "
                "other evaluated set with an unknown_share is held out: its accuracy is "
                "predicted as c + α·u and tested (theory_heldout)."})
    quantiles: int = field(default=4, metadata={"min": 1, "help": "A(P) quantile bins per mode."})
    min_bucket: int = field(default=20, metadata={"min": 1,
        "help": "Units a bucket needs to be tested."})
    n_boot: int = field(default=1000, metadata={"min": 1, "help": "Bootstrap replicates."})
    level: float = field(default=0.95, metadata={"above": 0, "below": 1,
        "help": "Confidence level of the intervals."})
    seed: int = field(default=0, metadata={"min": 0, "help": "Bootstrap seed."})
    equal_tolerance: float = field(default=0.01, metadata={"min": 0,
        "help": "Predicted gaps closer than this count as equal in the controls."})
    margin: float = field(default=EQUIVALENCE_MARGIN, metadata={"above": 0,
        "help": "Equivalence margin (two one-sided tests) of a control measured '=' and of a "
                "held-out set's measured minus predicted accuracy: the interval must lie "
                "within ±margin."})
    effect: float = field(default=1.0, metadata={"above": 0,
        "help": "Slope of measured on predicted reductions the primary test's power is "
                "computed for (1: the theory holds at the run's own α)."})

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class Control:
    """A controlled comparison: two exemplar strategies that differ in one metric of ``G_P``."""

    treatment: str = field(metadata={"help": "Strategy expected to give the smaller gap."})
    baseline: str = field(metadata={"help": "Strategy it is compared with."})
    metric: str = field(metadata={"help": "The metric the pair is built to change."})
    expected: str = field(metadata={
        "help": "Order of gaps stated before the run: '<' (treatment smaller) or '='."})
    why: str = field(metadata={"help": "The reason, from the default A(P)."})
    mode: str = field(default="few-shot", metadata={
        "help": "Prompt mode its findings claim is judged in (the table has every mode)."})


def wmean(groups: np.ndarray, n: int, values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean of ``values`` per group (NaN for a group without weight)."""
    den = np.bincount(groups, weights, minlength=n)
    num = np.bincount(groups, weights * values, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's ρ of finite pairs; NaN with fewer than 3 pairs or a constant side."""
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        return float(spearmanr(x[ok], y[ok]).statistic)


def mae(x: np.ndarray, y: np.ndarray) -> float:
    """Mean absolute difference of finite pairs; NaN without any."""
    ok = np.isfinite(x) & np.isfinite(y)
    return float(np.abs(x[ok] - y[ok]).mean()) if ok.any() else float("nan")


def share_at_most(x: np.ndarray, y: np.ndarray) -> float:
    """Share of finite pairs with ``x <= y``; NaN without any."""
    ok = np.isfinite(x) & np.isfinite(y)
    return float((x[ok] <= y[ok]).mean()) if ok.any() else float("nan")


def crossed_weights(cells: pd.DataFrame, factors: Sequence[str] = FACTORS
                    ) -> Callable[[np.random.Generator], np.ndarray]:
    """A draw of crossed bootstrap weights for ``cells`` (columns ``qid``, ``relation``,
    ``seed``, ``prompt``; ``prompt`` -1 where the prompt has no exemplar set).

    Each call draws the seeds, and per relation its exemplar sets and its queries, with
    replacement; a cell's weight is the product of the multiplicities of its seed, exemplar set
    (1 without one) and query. ``factors`` (a subset of :data:`FACTORS`) limits the draw to
    those: the others keep weight 1, so the replicates measure that factor's share of the
    variance (the power analysis's variance components).
    """
    unknown = set(factors) - set(FACTORS)
    if unknown:
        raise KgfactError(f"unknown bootstrap factor(s) {', '.join(sorted(unknown))}; "
                          f"use {', '.join(FACTORS)}")
    q = pd.factorize(cells["qid"])[0]
    s = pd.factorize(cells["seed"])[0]
    has = cells["prompt"].to_numpy() >= 0
    rp = pd.factorize(pd.MultiIndex.from_frame(cells[["relation", "prompt"]]))[0]
    # draws are per relation: the relation of every query and of every exemplar set
    q_rel = pd.Series(cells["relation"].to_numpy()).groupby(q).first()
    rp_rel = pd.Series(cells["relation"].to_numpy()).groupby(rp).first()
    rp_has = pd.Series(has).groupby(rp).first()

    def strata(relation: pd.Series, use: pd.Series) -> tuple[int, list[np.ndarray]]:
        """The members of each relation (those ``use`` keeps), drawn within it."""
        kept = relation[use.to_numpy()]
        return len(relation), [m.index.to_numpy() for _, m in kept.groupby(kept)]

    def within(rng: np.random.Generator, groups: tuple[int, list[np.ndarray]]) -> np.ndarray:
        w = np.ones(groups[0])
        for at in groups[1]:
            w[at] = np.bincount(rng.integers(0, len(at), len(at)), minlength=len(at))
        return w

    set_strata = strata(rp_rel, rp_has)
    query_strata = strata(q_rel, pd.Series(True, index=q_rel.index))

    def draw(rng: np.random.Generator) -> np.ndarray:
        w = np.ones(len(cells))
        if "seeds" in factors:
            ws = np.bincount(rng.integers(0, s.max() + 1, s.max() + 1), minlength=s.max() + 1)
            w = w * ws[s]
        if "exemplar sets" in factors:
            w = w * np.where(has, within(rng, set_strata)[rp], 1.0)
        if "queries" in factors:
            w = w * within(rng, query_strata)[q]
        return w
    return draw


def bootstrap(estimate: Callable[[np.ndarray], dict[str, np.ndarray]], n_clusters: int,
              n_boot: int, level: float, seed: int,
              draw: Callable[[np.random.Generator], np.ndarray] | None = None,
              keep: dict[str, np.ndarray] | None = None
              ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Point estimates and percentile intervals of a cluster bootstrap.

    ``estimate`` maps cluster weights (how often each cluster is drawn; all ones for the point
    estimate) to named arrays. Replicates draw ``n_clusters`` clusters with replacement, or
    take their weights from ``draw(rng)`` (:func:`crossed_weights`). ``keep`` receives the
    replicates of every estimate (``n_boot`` rows each), for p-values and standard errors.
    """
    point = estimate(np.ones(n_clusters))
    reps = {k: np.empty((n_boot, *np.shape(v))) for k, v in point.items()}
    rng = np.random.default_rng(seed)
    for b in range(n_boot):
        w = (draw(rng) if draw is not None else
             np.bincount(rng.integers(0, n_clusters, n_clusters), minlength=n_clusters))
        for k, v in estimate(np.asarray(w, dtype=float)).items():
            reps[k][b] = v
    if keep is not None:
        keep.update(reps)
    tail = (1 - level) / 2 * 100
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices stay NaN
        for k, v in point.items():
            v = np.asarray(v, dtype=float)
            if v.size:  # numpy drops the quantile axis of an empty array
                low, high = np.nanpercentile(reps[k], [tail, 100 - tail], axis=0)
            else:
                low, high = v.copy(), v.copy()
            out[k] = (v, low, high)
    return out


def relation_distances(triples: pd.DataFrame, ft_relations: list[str],
                       relations: list[str]) -> pd.DataFrame:
    """Co-occurrence distance from each relation to the nearest fine-tuning relation.

    Returns
    -------
    pandas.DataFrame
        ``relation``, ``distance`` (shortest path with edge length ``1 − Jaccard``; 0 for a
        fine-tuning relation, inf when unconnected) and ``hops`` (unweighted).
    """
    rels = sorted(set(relations) | set(triples["relation"]) | set(ft_relations))
    ends = pd.concat([triples[["relation", "subject"]].set_axis(["relation", "e"], axis=1),
                      triples[["relation", "object"]].set_axis(["relation", "e"], axis=1)]
                     ).drop_duplicates()
    r = pd.Index(rels).get_indexer(ends["relation"])
    e = pd.factorize(ends["e"])[0]
    inc = sp.csr_matrix((np.ones(len(r)), (r, e)), shape=(len(rels), e.max(initial=-1) + 1))
    shared = (inc @ inc.T).toarray()
    size = np.asarray(inc.sum(axis=1)).ravel()
    union = size[:, None] + size[None, :] - shared
    with np.errstate(invalid="ignore", divide="ignore"):
        jaccard = np.where(union > 0, shared / union, 0.0)
    np.fill_diagonal(jaccard, 0.0)
    linked = jaccard > 0
    # csgraph treats 0 as "no edge"; identical entity sets (Jaccard 1) get a tiny length instead
    lengths = np.where(linked, np.maximum(1 - jaccard, 1e-12), 0.0)
    sources = [rels.index(x) for x in ft_relations]
    if not sources:
        raise KgfactError("the fine-tuning sets have no relations to measure distances from")
    dist = shortest_path(sp.csr_matrix(lengths), indices=sources).min(axis=0)
    hops = shortest_path(sp.csr_matrix(linked.astype(float)), indices=sources,
                         unweighted=True).min(axis=0)
    dist[sources], hops[sources] = 0.0, 0.0
    out = pd.DataFrame({"relation": rels, "distance": np.round(dist, 12), "hops": hops})
    return out[out["relation"].isin(relations)].reset_index(drop=True)


class Bucketing(NamedTuple):
    """One grouping of the prompted units into buckets, under one A(P) function."""

    augmentation: str
    family: str
    keys: pd.DataFrame  # one row per bucket: checkpoint, mode, strategy, level, n, n_queries
    group: np.ndarray  # the bucket (row of ``keys``) of every prompted unit


class Comparison(NamedTuple):
    """One control at one (checkpoint, mode): its two strategies' units on the queries both
    answered."""

    name: str
    control: Control
    checkpoint: str
    mode: str
    treatment: pd.DataFrame
    baseline: pd.DataFrame
    n_queries: int


class ZeroShotFit(NamedTuple):
    """Prediction 1 fitted for one set of cell weights."""

    accuracy: np.ndarray  # per accuracy group (checkpoint, set), fitting and held-out sets
    alpha: dict[str, float]  # per checkpoint
    intercept: dict[str, float]  # c per checkpoint


# a verdict of :func:`kgfact.gap.finding` as the theory tables word it
OUTCOMES = {"supported": "as predicted", "contradicted": "contradicted",
            "inconclusive": "inconclusive"}
# the statistics whose sign is a claim (the others have no null value at 0): they get a p-value
SIGNED = ("spearman_gap", "spearman_reduction", "spearman_distance_gap", "alpha_difference")
# how a note saying that an estimate lies outside its own interval begins (the findings, which
# say so themselves, leave it out of the notes they carry over)
OUTSIDE_INTERVAL = "the estimate lies outside its own interval"


def interval_notes(value: float, low: float, high: float, dropped: int, n_boot: int
                   ) -> list[str]:
    """What a reader of a bootstrapped estimate must know: replicates that were not finite
    (left out of its interval and p-value), and an estimate outside its own interval."""
    notes = []
    if dropped:
        notes.append(f"{dropped} of {n_boot} bootstrap replicates not finite (a resampled "
                     "group without weight, or a rank correlation of too few buckets or of a "
                     "constant side): the interval and p-value come from the rest")
    if np.isfinite([value, low, high]).all() and not low - 1e-12 <= value <= high + 1e-12:
        notes.append(f"{OUTSIDE_INTERVAL} [{low:.3f}, {high:.3f}]: its replicates are shifted "
                     "from it (a statistic biased under resampling, such as a rank correlation "
                     "over resampled buckets); read the interval")
    return notes


class GapStudy:
    """Fits ``α``, predicts bucket gaps, and tests predictions against measured gaps.

    The constructor sets up, once, everything each bootstrap replicate reads (each step is a
    method below); :meth:`estimate` computes every quantity for one set of cell weights and
    :meth:`tables` runs the bootstrap and writes the tables.

    Parameters
    ----------
    predictions : pandas.DataFrame
        The evaluation's ``predictions`` table.
    prompts : pandas.DataFrame
        ``prompt_id``, ``prompt`` (index of the prompt within its strategy).
    unknown_share : dict
        ``unknown_share`` of each fine-tuning set.
    augmentation : pandas.DataFrame
        ``prompt_id``, ``qid`` and one ``A`` column per augmentation function.
    distances : pandas.DataFrame
        :func:`relation_distances` of the test relations.
    controls : dict of str to Control
        Controlled comparisons; ``primary`` names the augmentation they use.
    config : PredictionConfig
        Sets, buckets and bootstrap.
    primary : str
        The augmentation used for controls.
    """

    def __init__(self, predictions: pd.DataFrame, prompts: pd.DataFrame,
                 unknown_share: dict[str, float], augmentation: pd.DataFrame,
                 distances: pd.DataFrame, controls: dict[str, Control],
                 config: PredictionConfig, primary: str) -> None:
        self.config, self.primary = config, primary
        self.augmentations = [c for c in augmentation.columns if c not in ("prompt_id", "qid")]
        self._set_up_share_difference(unknown_share)
        answers = self._fine_tuned_answers(predictions, prompts)
        self._set_up_zero_shot_fit(answers, unknown_share)
        self._set_up_units(answers, augmentation)
        self._set_up_cells()
        self._set_up_buckets()
        self._set_up_ood(distances)
        self._set_up_controls(controls)
        self._set_up_design(controls)

    # -- set-up --------------------------------------------------------------------------------
    def _set_up_share_difference(self, share: dict[str, float]) -> None:
        """``delta_u``: ``u(FT-Known) − u(FT-Unknown)``, the ``Δu`` that turns ``α`` into the
        predicted gap between the two sets (2 for shares 0 and 1)."""
        cfg = self.config
        for name in (cfg.known_set, cfg.unknown_set):
            if name not in share:
                raise KgfactError(f"fine-tuning set {name!r} is not in the ftsets index")
        self.delta_u = 2 * (share[cfg.unknown_set] - share[cfg.known_set])

    @staticmethod
    def _fine_tuned_answers(predictions: pd.DataFrame, prompts: pd.DataFrame) -> pd.DataFrame:
        """The fine-tuned models' predictions (not the base model's), each with the index of
        its prompt within its strategy (``prompt``) and its training ``seed``."""
        answers = predictions[predictions["checkpoint"] != "base"]
        answers = answers.drop(columns=["prompt"], errors="ignore").merge(
            prompts[["prompt_id", "prompt"]], on="prompt_id", how="left")
        if "seed" not in answers:  # predictions of a single, unrecorded seed
            answers = answers.assign(seed=0)
        return answers

    def _set_up_zero_shot_fit(self, answers: pd.DataFrame, share: dict[str, float]) -> None:
        """Prediction 1's data: the zero-shot in-distribution answers of every evaluated set
        with an ``unknown_share``, grouped by (checkpoint, set) (``zero_shot_groups``). The
        fitting sets (``fit_sets``) fit ``α`` and ``c``; every other set is *held out*: its
        accuracy is predicted as ``c + α · u`` and tested (``held_out_keys``)."""
        cfg = self.config
        self.fit_sets = tuple(cfg.fit_sets if cfg.fit_sets is not None else
                              (cfg.known_set, cfg.unknown_set))
        rows = answers[~modes_with(answers["mode"], "exemplars")
                       & (answers["distribution"] == "id")
                       & answers["set"].isin(list(share))].reset_index(drop=True)
        if not rows["set"].isin(self.fit_sets).any():
            raise KgfactError("no zero-shot in-distribution predictions of the fitting sets "
                              f"({', '.join(self.fit_sets)}): α cannot be fitted")
        self.zero_shot_modes = ", ".join(sorted(set(rows["mode"])))
        groups = rows[["checkpoint", "set"]].drop_duplicates().sort_values(
            ["checkpoint", "set"]).reset_index(drop=True)
        groups["unknown_share"] = groups["set"].map(share)
        groups["u"] = 1 - 2 * groups["unknown_share"]
        by = ["checkpoint", "set"]
        self.zero_shot_group = pd.MultiIndex.from_frame(groups[by]).get_indexer(
            pd.MultiIndex.from_frame(rows[by]))
        groups["n"] = np.bincount(self.zero_shot_group, minlength=len(groups))
        groups["held_out"] = ~groups["set"].isin(self.fit_sets)
        self.zero_shot_groups = groups
        self.zero_shot_rows = rows[["qid", "relation", "seed"]].assign(prompt=-1)
        self.zero_shot_correct = rows["correct"].to_numpy(dtype=float)
        fitting = ~groups["held_out"].to_numpy()
        self.fit_groups = np.flatnonzero(fitting)
        self.checkpoints = sorted(groups.loc[fitting, "checkpoint"].unique())
        self.fit_groups_at = {c: fitting & (groups["checkpoint"] == c).to_numpy()
                              for c in self.checkpoints}
        self._set_up_held_out(rows)

    def _set_up_held_out(self, rows: pd.DataFrame) -> None:
        """The rows of the held-out table, in order: per checkpoint, one per held-out set
        (``held_out_group``: its accuracy group) and then the pooled one (``held_out_pools``:
        its row and the rows it averages; ``held_out_group`` -1)."""
        groups = self.zero_shot_groups
        held = rows[~rows["set"].isin(self.fit_sets)]
        queries = held.groupby(["checkpoint", "set"])["qid"].nunique()
        keys, pools = [], []
        for ckpt, members in groups[groups["held_out"]].groupby("checkpoint"):
            start = len(keys)
            for g, m in members.iterrows():
                keys.append({"checkpoint": ckpt, "group": g, "set": m["set"],
                             "unknown_share": m["unknown_share"], "u": m["u"], "n": m["n"],
                             "n_queries": queries[(ckpt, m["set"])]})
            pools.append((len(keys), np.arange(start, len(keys))))
            keys.append({"checkpoint": ckpt, "group": -1, "set": "pooled",
                         "unknown_share": np.nan, "u": np.nan, "n": members["n"].sum(),
                         "n_queries": held.loc[held["checkpoint"] == ckpt, "qid"].nunique()})
        keys = pd.DataFrame(keys, columns=["checkpoint", "group", "set", "unknown_share", "u",
                                           "n", "n_queries"])
        self.held_out_group = keys.pop("group").to_numpy(dtype=int)
        self.held_out_keys, self.held_out_pools = keys, pools

    def _set_up_units(self, answers: pd.DataFrame, aug: pd.DataFrame) -> None:
        """``units``: one per (checkpoint, mode, strategy, seed, prompt, query) that FT-Known
        and FT-Unknown both answered, with its ``gap`` (FT-Known's correctness minus
        FT-Unknown's), its query's ``zero_shot_gap`` under the same checkpoint and seed, and
        the mean ``A`` of its two prompts under every augmentation function."""
        cfg = self.config
        a = aug.set_index(["prompt_id", "qid"])

        def side(name: str) -> pd.DataFrame:
            rows = answers[answers["set"] == name]
            if rows.empty:
                raise KgfactError(f"no predictions of fine-tuning set {name!r}")
            rows = rows.assign(correct=rows["correct"].astype(float),
                               category=rows["category"].fillna("uncovered"))
            out = rows.groupby(_UNIT, dropna=False).agg(
                correct=("correct", "mean"), prompt_id=("prompt_id", "first"),
                relation=("relation", "first"), distribution=("distribution", "first"),
                category=("category", "first"))
            values = a.reindex(pd.MultiIndex.from_arrays(
                [out["prompt_id"], out.index.get_level_values("qid")]))
            return out.join(pd.DataFrame(values.to_numpy(), index=out.index,
                                         columns=self.augmentations))

        kn, unk = side(cfg.known_set), side(cfg.unknown_set)
        units = kn.join(unk[["correct", *self.augmentations]].add_suffix("_unk"),
                        how="inner").reset_index()
        if units.empty:
            raise KgfactError(f"{cfg.known_set} and {cfg.unknown_set} share no (checkpoint, "
                              "mode, strategy, prompt, query) to compare")
        units["gap"] = units["correct"] - units["correct_unk"]
        for name in self.augmentations:
            units[name] = (units[name] + units[f"{name}_unk"]) / 2
        zero = (units[~modes_with(units["mode"], "exemplars")]
                .groupby(["checkpoint", "seed", "qid"])["gap"].mean())
        units["zero_shot_gap"] = zero.reindex(pd.MultiIndex.from_frame(
            units[["checkpoint", "seed", "qid"]])).to_numpy()
        self.units = units

    def _set_up_cells(self) -> None:
        """``cells``: what a bootstrap weight is drawn for, (query, relation, seed, exemplar
        set; -1 without one); the ``cell`` of every zero-shot row (``zero_shot_cell``) and
        unit (column ``cell``), and ``draw_weights``, the crossed draw of cell weights."""
        zero = ~modes_with(self.units["mode"], "exemplars")
        unit_cells = self.units[["qid", "relation", "seed"]].assign(
            prompt=self.units["prompt"].where(~zero, -1).fillna(-1).astype(int))
        cells = pd.concat([self.zero_shot_rows, unit_cells]).drop_duplicates(ignore_index=True)
        index = pd.MultiIndex.from_frame(cells[_CELL])
        self.cells = cells
        self.zero_shot_cell = index.get_indexer(pd.MultiIndex.from_frame(
            self.zero_shot_rows[_CELL]))
        self.units["cell"] = index.get_indexer(pd.MultiIndex.from_frame(unit_cells[_CELL]))
        self.draw_weights = crossed_weights(cells)

    def _set_up_buckets(self) -> None:
        """``prompted``: the in-distribution prompted units with a zero-shot gap; ``buckets``:
        one :class:`Bucketing` per (augmentation, family), and ``bucket_checkpoint``: the index
        in ``checkpoints`` of each bucket's checkpoint."""
        u = self.units
        prompted = modes_with(u["mode"], "exemplars")
        self.prompted = u[prompted & (u["distribution"] == "id")
                          & u["zero_shot_gap"].notna()].reset_index(drop=True)
        # statistics per evaluated mode with exemplars, then over all of them
        self.scopes = (*sorted(set(u.loc[prompted, "mode"])), "all")
        base = ["checkpoint", "mode", "strategy"]
        self.buckets, self.bucket_checkpoint = [], {}
        for aug in self.augmentations:
            for family in FAMILIES:
                frame = self.prompted[base].copy()
                if family == "all":
                    frame["level"] = "all"
                elif family == "a_quantile":
                    frame["level"] = self._quantile_levels(aug)
                else:
                    frame["level"] = self.prompted[family].astype(str)
                keys = frame.drop_duplicates().sort_values([*base, "level"]).reset_index(drop=True)
                g = pd.MultiIndex.from_frame(keys).get_indexer(pd.MultiIndex.from_frame(frame))
                keys["n"] = np.bincount(g, minlength=len(keys))
                keys["n_queries"] = (self.prompted.assign(g=g).groupby("g")["qid"].nunique()
                                     .reindex(range(len(keys))).to_numpy())
                keys.insert(0, "family", family)
                keys.insert(0, "augmentation", aug)
                self.buckets.append(Bucketing(aug, family, keys, g))
                self.bucket_checkpoint[(aug, family)] = pd.Index(
                    self.checkpoints).get_indexer(keys["checkpoint"])

    def _quantile_levels(self, aug: str) -> pd.Series:
        """Quantile bin of ``A`` within each mode, labelled by the bin's range of ``A``."""
        levels = pd.Series("", index=self.prompted.index, dtype=object)
        for _, rows in self.prompted.groupby("mode"):
            a = rows[aug].to_numpy()
            edges = np.unique(np.quantile(a, np.linspace(0, 1, self.config.quantiles + 1)))
            bins = np.searchsorted(edges[1:-1], a, side="right")
            lo = pd.Series(a).groupby(bins).transform("min").to_numpy()
            hi = pd.Series(a).groupby(bins).transform("max").to_numpy()
            levels[rows.index] = [f"A in [{x:.3f}, {y:.3f}]" for x, y in zip(lo, hi)]
        return levels

    def _set_up_ood(self, distances: pd.DataFrame) -> None:
        """Per-relation gaps beyond the training relations: near-ID and OOD (prediction 3).
        ``ood_units``, their group (``ood_group``: a row of ``ood_keys``) and, per checkpoint
        and mode without exemplars (zero-shot), the rows of ``ood_keys`` whose distances and
        gaps are correlated (``ood_scopes``: checkpoint, mode, rows)."""
        ood = self.units[self.units["distribution"].isin(["near-id", "ood"])
                         ].reset_index(drop=True)
        by = ["checkpoint", "mode", "strategy", "distribution", "relation"]
        keys = ood[by].drop_duplicates().sort_values(by).reset_index(drop=True)
        keys = keys.merge(distances, on="relation", how="left")
        self.ood_units, self.ood_keys = ood, keys
        self.ood_group = pd.MultiIndex.from_frame(keys[by]).get_indexer(
            pd.MultiIndex.from_frame(ood[by]))
        keys["n"] = np.bincount(self.ood_group, minlength=len(keys))
        unprompted = sorted(set(keys.loc[~modes_with(keys["mode"], "exemplars"), "mode"]))
        self.ood_scopes = [(c, m, np.flatnonzero((keys["checkpoint"] == c) & (keys["mode"] == m)))
                           for c in sorted(keys["checkpoint"].unique()) for m in unprompted]

    def _set_up_controls(self, controls: dict[str, Control]) -> None:
        """``comparisons``: one :class:`Comparison` per control and (checkpoint, mode) where
        both of its strategies answered an in-distribution query."""
        u = self.units[self.units["distribution"] == "id"]
        self.comparisons = []
        for name, c in controls.items():
            for (ckpt, mode), rows in u.groupby(["checkpoint", "mode"]):
                t, b = rows[rows["strategy"] == c.treatment], rows[rows["strategy"] == c.baseline]
                common = np.intersect1d(t["qid"], b["qid"])
                if not len(common):
                    continue
                t, b = t[t["qid"].isin(common)], b[b["qid"].isin(common)]
                self.comparisons.append(Comparison(name, c, ckpt, mode, t, b, len(common)))

    def _set_up_design(self, controls: dict[str, Control]) -> None:
        """The primary test's units (``design``): prompted in-distribution units of the
        strategies the controls compare (the designed interventions), grouped by (checkpoint,
        mode) (``design_group``), and as arrays what every bootstrap replicate reads of them
        (pandas per replicate dominated its time): each unit's cell, checkpoint (index in
        ``checkpoints``), ``A · Δu`` (its predicted reduction per unit of ``α``) and measured
        reduction (zero-shot gap minus prompted gap)."""
        strategies = sorted({s for c in controls.values() for s in (c.treatment, c.baseline)})
        design = self.prompted[self.prompted["strategy"].isin(strategies)].reset_index(drop=True)
        self.design, self.design_strategies = design, strategies
        self.design_group = pd.factorize(pd.MultiIndex.from_frame(
            design[["checkpoint", "mode"]]))[0] if len(design) else np.empty(0, dtype=np.int64)
        self.design_cell = design["cell"].to_numpy()
        self.design_checkpoint = pd.Index(self.checkpoints).get_indexer(design["checkpoint"])
        self.design_a_delta_u = design[self.primary].to_numpy(dtype=float) * self.delta_u
        self.design_reduction = (design["zero_shot_gap"] - design["gap"]).to_numpy(dtype=float)

    # -- estimation ----------------------------------------------------------------------------
    def fit(self, w: np.ndarray) -> ZeroShotFit:
        """Prediction 1 for cell weights ``w``: the zero-shot accuracy of every (checkpoint,
        set), and per checkpoint ``α`` and ``c`` fitted by least squares on the fitting sets'
        accuracies against their ``u`` (NaN with fewer than two distinct ``u``)."""
        acc = wmean(self.zero_shot_group, len(self.zero_shot_groups), self.zero_shot_correct,
                    w[self.zero_shot_cell])
        u = self.zero_shot_groups["u"].to_numpy()
        alpha, intercept = {}, {}
        for ckpt in self.checkpoints:
            at = np.flatnonzero(self.fit_groups_at[ckpt] & np.isfinite(acc))
            alpha[ckpt], intercept[ckpt] = (np.polyfit(u[at], acc[at], 1)
                                            if len(np.unique(u[at])) > 1 else (np.nan, np.nan))
        return ZeroShotFit(acc, alpha, intercept)

    def primary_slope(self, w: np.ndarray, alpha: dict[str, float]) -> float:
        """The primary test's statistic for cell weights ``w``: the weighted least-squares slope
        of each design unit's measured reduction (zero-shot gap minus prompted gap) on its
        predicted one (``α · Δu · A``), with one intercept per (checkpoint, mode); NaN when
        the predictions do not vary within any (checkpoint, mode) that has weight."""
        if self.design.empty:
            return float("nan")
        wd = w[self.design_cell]
        x = (np.array([alpha.get(k, np.nan) for k in self.checkpoints])[self.design_checkpoint]
             * self.design_a_delta_u)
        y, g = self.design_reduction, self.design_group
        n = g.max() + 1
        used = wd > 0
        xt = np.where(used, x - wmean(g, n, x, wd)[g], 0.0)
        yt = np.where(used, y - wmean(g, n, y, wd)[g], 0.0)
        sxx = float(np.sum(wd * xt * xt))
        return float(np.sum(wd * xt * yt) / sxx) if sxx > 1e-12 else float("nan")

    def estimate(self, w: np.ndarray) -> dict[str, np.ndarray]:
        """Every estimated quantity for cell weights ``w`` (see :func:`bootstrap`)."""
        fit = self.fit(w)
        alpha = fit.alpha
        out = {"fit.acc": fit.accuracy[self.fit_groups],
               "fit.alpha": np.array([alpha[c] for c in self.checkpoints]),
               "fit.intercept": np.array([fit.intercept[c] for c in self.checkpoints]),
               "heldout": self._held_out_estimates(fit)}
        if {"early_stop", "convergence"} <= alpha.keys():
            out["training"] = np.array([alpha["convergence"] - alpha["early_stop"]])
        p = self.prompted
        wp = w[p["cell"].to_numpy()]
        for aug, family, keys, g in self.buckets:
            n = len(keys)
            measured = wmean(g, n, p["gap"].to_numpy(), wp)
            zero = wmean(g, n, p["zero_shot_gap"].to_numpy(), wp)
            a = wmean(g, n, p[aug].to_numpy(), wp)
            slope = np.array([alpha.get(c, np.nan) for c in self.checkpoints]
                             )[self.bucket_checkpoint[(aug, family)]] * self.delta_u
            predicted = slope * (1 - a)
            block = np.vstack([measured, zero, a, predicted, slope * a, zero - measured])
            out[f"b.{aug}.{family}"] = block
            out[f"s.{aug}.{family}"] = self._bucket_statistics(keys, block)
        wo = w[self.ood_units["cell"].to_numpy()]
        gaps = wmean(self.ood_group, len(self.ood_keys), self.ood_units["gap"].to_numpy(), wo)
        out["ood.gap"] = gaps
        out["ood.rho"] = np.array([spearman(self.ood_keys["distance"].to_numpy()[at], gaps[at])
                                   for *_, at in self.ood_scopes])
        out["controls"] = self._control_estimates(w, alpha)
        out["primary"] = np.array([self.primary_slope(w, alpha)])
        return out

    def _held_out_estimates(self, fit: ZeroShotFit) -> np.ndarray:
        """Per row of ``held_out_keys``: measured accuracy, predicted accuracy ``c + α · u``
        and their difference; a pooled row holds the means of its checkpoint's sets (NaN when
        one of them is: a set without weight in a replicate drops the replicate)."""
        out = np.full((len(self.held_out_group), 3), np.nan)
        sets = np.flatnonzero(self.held_out_group >= 0)
        g = self.held_out_group[sets]
        groups = self.zero_shot_groups
        ckpts = groups["checkpoint"].to_numpy()[g]
        predicted = (np.array([fit.intercept.get(c, np.nan) for c in ckpts])
                     + np.array([fit.alpha.get(c, np.nan) for c in ckpts])
                     * groups["u"].to_numpy()[g])
        out[sets, 0], out[sets, 1] = fit.accuracy[g], predicted
        out[sets, 2] = out[sets, 0] - predicted
        for row, members in self.held_out_pools:
            out[row] = out[members].mean(axis=0)
        return out

    def _bucket_statistics(self, keys: pd.DataFrame, block: np.ndarray) -> np.ndarray:
        measured, zero, _, predicted, pred_red, meas_red = block
        values = []
        for scope in self.scopes:
            use = (keys["n"].to_numpy() >= self.config.min_bucket) & (
                keys["mode"].to_numpy() == scope if scope != "all" else True)
            values += [spearman(predicted[use], measured[use]),
                       mae(predicted[use], measured[use]),
                       spearman(pred_red[use], meas_red[use]),
                       mae(pred_red[use], meas_red[use]),
                       share_at_most(measured[use], zero[use])]
        return np.array(values, dtype=float)

    def _control_estimates(self, w: np.ndarray, alpha: dict[str, float]) -> np.ndarray:
        rows = []
        for c in self.comparisons:
            t, b = c.treatment, c.baseline
            wt, wb = w[t["cell"].to_numpy()], w[b["cell"].to_numpy()]
            gt = np.average(t["gap"], weights=wt) if wt.sum() else np.nan
            gb = np.average(b["gap"], weights=wb) if wb.sum() else np.nan
            at = np.average(t[self.primary], weights=wt) if wt.sum() else np.nan
            ab = np.average(b[self.primary], weights=wb) if wb.sum() else np.nan
            slope = alpha.get(c.checkpoint, np.nan) * self.delta_u
            rows.append([gt, gb, gt - gb, at, ab, slope * (1 - at), slope * (1 - ab)])
        return np.array(rows, dtype=float).reshape(len(self.comparisons), 7)

    # -- tables --------------------------------------------------------------------------------
    def tables(self) -> dict[str, pd.DataFrame]:
        """``theory_fit``, ``theory_heldout``, ``theory_predictions``, ``theory_stats``,
        ``theory_ood``, ``theory_controls`` and ``theory_primary``, with bootstrap
        intervals."""
        cfg = self.config
        replicates: dict[str, np.ndarray] = {}
        boot = bootstrap(self.estimate, len(self.cells), cfg.n_boot, cfg.level, cfg.seed,
                         draw=self.draw_weights, keep=replicates)
        return {"theory_fit": self._fit_table(boot),
                "theory_heldout": self._held_out_table(boot, replicates["heldout"]),
                "theory_predictions": self._prediction_table(boot),
                "theory_stats": self._stats_table(boot, replicates),
                "theory_ood": self._ood_table(boot),
                "theory_controls": self._control_table(boot, replicates["controls"]),
                "theory_primary": self._primary_table(boot, replicates["primary"][:, 0])}

    def _fit_table(self, boot) -> pd.DataFrame:
        fit = self.zero_shot_groups.loc[self.fit_groups, ["checkpoint", "set", "unknown_share",
                                                          "u", "n"]].reset_index(drop=True)
        fit["accuracy"], fit["ci_low"], fit["ci_high"] = boot["fit.acc"]
        alpha = dict(zip(self.checkpoints, zip(*boot["fit.alpha"])))
        fit[["alpha", "alpha_ci_low", "alpha_ci_high"]] = [alpha[c] for c in fit["checkpoint"]]
        intercept = dict(zip(self.checkpoints, boot["fit.intercept"][0]))
        fit["fitted"] = fit["checkpoint"].map(intercept) + fit["alpha"] * fit["u"]
        fit["predicted_gap_known_unknown"] = fit["alpha"] * self.delta_u
        return fit

    def _held_out_table(self, boot, replicates: np.ndarray) -> pd.DataFrame:
        """Prediction 1 on the sets held out of the fit: one row per (checkpoint, held-out
        set) and a pooled row per checkpoint (the mean over its held-out sets). The difference
        measured − predicted is tested for equivalence with 0 (two one-sided tests against
        ``margin``): *as predicted* only when its interval lies inside ±margin, *contradicted*
        when it lies outside, *inconclusive* otherwise. Without a held-out set, one row per
        checkpoint says so (outcome ``not measured``)."""
        cfg = self.config
        fitted_on = ", ".join(self.fit_sets)
        columns = ["checkpoint", "set", "unknown_share", "u", "n", "n_queries", "measured",
                   "predicted", "difference", "ci_low", "ci_high", "margin", "outcome",
                   "p_value", "dropped", "fit_sets", "note"]
        if not len(self.held_out_keys):
            return pd.DataFrame([(c, "pooled", np.nan, np.nan, 0, 0, np.nan, np.nan, np.nan,
                                  np.nan, np.nan, cfg.margin, "not measured", np.nan, 0,
                                  fitted_on,
                                  f"no set held out: every evaluated set with an unknown_share "
                                  f"fits α and c ({fitted_on}); evaluate a mix-* set besides "
                                  "them to test prediction 1") for c in self.checkpoints],
                                columns=columns)
        point, low, high = boot["heldout"]
        alpha = dict(zip(self.checkpoints, boot["fit.alpha"][0]))
        t = self.held_out_keys.copy()
        t["measured"], t["predicted"], t["difference"] = point[:, 0], point[:, 1], point[:, 2]
        t["ci_low"], t["ci_high"], t["margin"] = low[:, 2], high[:, 2], cfg.margin
        t["outcome"] = [OUTCOMES[finding(d, lo, hi, "equal", margin=cfg.margin)]
                        for d, lo, hi in zip(point[:, 2], low[:, 2], high[:, 2])]
        t["p_value"] = [bootstrap_p(replicates[:, i, 2], "equal", margin=cfg.margin)
                        for i in range(len(t))]
        t["dropped"] = (~np.isfinite(replicates[:, :, 2])).sum(axis=0)
        t["fit_sets"] = fitted_on
        t["note"] = [
            "; ".join(interval_notes(d, lo, hi, n_drop, cfg.n_boot)) if np.isfinite(d)
            else (f"α and c are not fitted at {c}: the fitting sets ({fitted_on}) need two "
                  "unknown shares there" if not np.isfinite(alpha.get(c, np.nan)) else
                  "not computable")
            for c, d, lo, hi, n_drop in zip(t["checkpoint"], t["difference"], t["ci_low"],
                                            t["ci_high"], t["dropped"])]
        return t[columns]

    def _prediction_table(self, boot) -> pd.DataFrame:
        parts = []
        for aug, family, keys, _ in self.buckets:
            point, low, high = boot[f"b.{aug}.{family}"]
            t = keys.copy()
            t["A_mean"], t["zero_shot_gap"] = point[2], point[1]
            t["measured_gap"], t["ci_low"], t["ci_high"] = point[0], low[0], high[0]
            t["predicted_gap"], t["pred_ci_low"], t["pred_ci_high"] = point[3], low[3], high[3]
            t["predicted_reduction"], t["measured_reduction"] = point[4], point[5]
            t["holds"] = point[0] <= point[1]
            t["used"] = t["n"] >= self.config.min_bucket
            parts.append(t)
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()

    def _stats_table(self, boot, replicates: dict[str, np.ndarray]) -> pd.DataFrame:
        """One row per statistic: value, interval, the bootstrap ``p_value`` of its sign (for
        the statistics of :data:`SIGNED`; the others have no null value at 0), the replicates
        ``dropped`` (not finite, left out of interval and p-value) and a ``note`` saying why a
        statistic is missing, what was dropped, or that the value lies outside its interval."""
        cfg = self.config
        rows = []  # the row's keys, buckets, and where its estimate is: (name, column)
        for aug, family, keys, _ in self.buckets:
            i = 0
            for scope in self.scopes:
                use = (keys["n"] >= cfg.min_bucket) & (
                    (keys["mode"] == scope) if scope != "all" else True)
                for stat in STATISTICS:
                    rows.append(((aug, family, "all", scope, stat), int(use.sum()),
                                 f"s.{aug}.{family}", i))
                    i += 1
        for i, (ckpt, mode, at) in enumerate(self.ood_scopes):
            rows.append((("none", "ood", ckpt, mode, "spearman_distance_gap"), len(at),
                         "ood.rho", i))
        if "training" in boot:
            rows.append((("none", "training", "convergence-early_stop", self.zero_shot_modes,
                          "alpha_difference"), len(self.checkpoints), "training", 0))
        records = []
        for keys, n_buckets, name, i in rows:
            value, low, high = (float(x[i]) for x in boot[name])
            reps = replicates[name][:, i]
            dropped = int((~np.isfinite(reps)).sum())
            p = bootstrap_p(reps, "above") if keys[-1] in SIGNED else np.nan
            # say why a statistic is missing instead of leaving a bare NaN in every report
            note = (f"not computable from {n_buckets} bucket(s) of at least {cfg.min_bucket} "
                    "units; enlarge the study" if np.isnan(value) else
                    "; ".join(interval_notes(value, low, high, dropped, cfg.n_boot)))
            records.append((*keys, value, low, high, p, dropped, n_buckets, note))
        return pd.DataFrame(records, columns=[
            "augmentation", "family", "checkpoint", "mode", "statistic", "value", "ci_low",
            "ci_high", "p_value", "dropped", "n_buckets", "note"])

    def _ood_table(self, boot) -> pd.DataFrame:
        t = self.ood_keys.copy()
        t["gap"], t["ci_low"], t["ci_high"] = boot["ood.gap"]
        return t

    def _control_table(self, boot, replicates: np.ndarray) -> pd.DataFrame:
        """One row per control and (checkpoint, mode). The predicted order decides the claim
        tested on the gap difference (treatment minus baseline): "<" below 0, ">" above 0, and
        "=" within ±``margin`` by two one-sided tests (:func:`kgfact.gap.finding`), so an
        interval that merely contains 0 is inconclusive, never "as predicted"."""
        point, low, high = boot["controls"]
        cfg, rows = self.config, []
        claims = {"<": "below", ">": "above", "=": "equal"}
        for i, c in enumerate(self.comparisons):
            gt, gb, diff, at, ab, pt, pb = point[i]
            tol = cfg.equal_tolerance
            predicted = "<" if pt < pb - tol else ">" if pt > pb + tol else "="
            lo, hi = low[i][2], high[i][2]
            measured = "<" if hi < 0 else ">" if lo > 0 else "="
            verdict = finding(diff, lo, hi, claims[predicted], margin=cfg.margin)
            p = bootstrap_p(replicates[:, i, 2], claims[predicted], margin=cfg.margin)
            rows.append((c.name, c.checkpoint, c.mode, c.control.treatment, c.control.baseline,
                         c.control.metric, c.control.expected, c.control.why, predicted, at, ab,
                         pt, pb, gt, gb, diff, lo, hi, measured, OUTCOMES[verdict], p,
                         c.n_queries))
        return pd.DataFrame(rows, columns=[
            "control", "checkpoint", "mode", "treatment", "baseline", "metric", "expected",
            "why", "predicted", "A_treatment", "A_baseline", "predicted_gap_treatment",
            "predicted_gap_baseline", "gap_treatment", "gap_baseline", "difference", "ci_low",
            "ci_high", "measured", "outcome", "p_value", "n_queries"])

    def _primary_table(self, boot, replicates: np.ndarray) -> pd.DataFrame:
        """The primary test (see :meth:`primary_slope`) with its interval, one-sided p-value
        (slope above 0), whether the interval covers 1 (the theory's own slope), and its power.

        Power is that of the interval's test (its low end above 0) for a true slope of
        ``effect``, from the bootstrap standard error with a normal approximation:
        ``Φ(effect / se − z)``. The variance components are the slope's bootstrap variance
        when only the seeds, only the exemplar sets or only the queries are drawn; ``queries_for_power``
        is the factor by which the queries per relation must grow for 80 % power if the
        query component shrinks with their number and the others stay (inf when the other
        components alone exceed what 80 % allows: more seeds or exemplar sets are needed).
        """
        from scipy.stats import norm

        cfg = self.config
        (slope,), (low,), (high,) = boot["primary"]
        finite = replicates[np.isfinite(replicates)]
        se = float(finite.std(ddof=1)) if len(finite) > 1 else float("nan")
        z = norm.ppf(1 - (1 - cfg.level) / 2)
        power = float(norm.cdf(cfg.effect / se - z)) if se > 0 else float("nan")
        alpha = self.fit(np.ones(len(self.cells))).alpha
        components = {}
        for factor in FACTORS:
            draw = crossed_weights(self.cells, (factor,))
            rng = np.random.default_rng(cfg.seed)
            reps = np.array([self.primary_slope(draw(rng), alpha) for _ in range(cfg.n_boot)])
            reps = reps[np.isfinite(reps)]
            components[factor] = float(reps.var(ddof=1)) if len(reps) > 1 else float("nan")
        target = (cfg.effect / (z + norm.ppf(0.8))) ** 2  # the variance 80 % power allows
        rest = components["seeds"] + components["exemplar sets"]
        # what the seed and exemplar-set draws alone do not explain (queries, their interactions
        # and α's refit, all shrinking with more queries) is the part more queries divide, so
        # the factor is above 1 exactly when the power is below 0.8
        grow = ((se ** 2 - rest) / (target - rest) if target > rest else float("inf"))
        d = self.design
        return pd.DataFrame([{
            "augmentation": self.primary, "strategies": ", ".join(self.design_strategies),
            "slope": slope, "ci_low": low, "ci_high": high,
            "verdict": finding(slope, low, high, "above"),
            "p_value": bootstrap_p(replicates, "above"),
            "covers_one": bool(low <= 1 <= high), "se": se, "effect": cfg.effect,
            "power": power, "var_seeds": components["seeds"],
            "var_exemplar_sets": components["exemplar sets"],
            "var_queries": components["queries"], "queries_for_power": max(grow, 0.0),
            "dropped": int(len(replicates) - len(finite)), "n_units": len(d),
            "n_queries": int(d["qid"].nunique()) if len(d) else 0,
        }])
