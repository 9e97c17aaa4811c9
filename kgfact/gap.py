"""The factuality gap with crossed paired bootstrap intervals, Gekhman's linear model, findings.

Factuality gap (:func:`factuality_gap`)
---------------------------------------
``acc(FT-Known) - acc(FT-Unknown)`` per prompt mode, strategy, distribution (ID/OOD) and
checkpoint (EARLY_STOP/CONVERGENCE). Three things vary between repeats of the experiment, and
the interval accounts for all three:

- the training seed ``s`` of the adapters (the ``seed`` column; a table without one is a single
  seed, labelled 0),
- the exemplar set ``p`` of a relation (the last field of ``prompt_id``,
  ``mode/strategy/owner/relation/p``; zero-shot has the one set ``0``),
- the test query ``q`` (each belongs to one relation).

A *cell* is one (s, relation, p, q) that both models answered; its difference is
``d = correct(FT-Known) - correct(FT-Unknown)``. The two models are paired cell by cell: same
query, same seed, same exemplar-set index. Strategies whose exemplars depend on the set
(``from-ft``, ``disjoint``) give each model its own p-th exemplar set; these are paired by the
index p. The gap is the mean of ``d`` over the cells (with every query answered under every
seed and exemplar set, the mean over queries of each query's mean over its prompts and seeds).

The interval is a three-way crossed ("pigeonhole", Owen 2007) percentile bootstrap: each
replicate draws with replacement S seeds out of the S seeds, and for every relation (a
stratum: evaluation samples queries and draws exemplar sets per relation) ``P_r`` exemplar-set
indices out of its ``P_r`` and ``Q_r`` queries out of its ``Q_r``. A cell's weight is the
product of the multiplicities of its seed, exemplar set and query, and the replicate is the
weighted mean of ``d``. One draw serves both models: that is the pairing. An unpaired bootstrap
(the models resampled apart) or one that ignores seeds (only queries resampled) gives wrong
widths; ``tests/test_gap.py`` has cases where each gives a visibly different interval.

The replicates are computed without a loop over replicates: per relation the cube
``d[s, p, q]`` is contracted with the query weights by one matrix product
(``S·P_r × Q_r`` by ``Q_r × B``) and then with the seed and exemplar-set weights, O(B × cells).

Beside the pooled gap the table lists each seed's gap (``seeds``, ``seed_gaps``: the mean of
``d`` over that seed's cells) and the :func:`finding` for "FT-Known is more accurate" (gap > 0).

Gekhman's regression (:func:`gekhman_regression`, :func:`gekhman_other_sets`)
-----------------------------------------------------------------------------
As published (Gekhman et al. 2024, section 5): test accuracy over the %Unknown grid
(``ft-known``, ``mix-<X>``, ``ft-unknown``) times epochs,
``acc = b0 + b_kn N_kn/|D| + b_unk N_unk/|D|``, where ``N_kn`` and ``N_unk`` are the Known and
Unknown training examples the model *fits* at that epoch. Points are the (set, seed, epoch)
rows of the ``dynamics`` table with epoch >= 1, plus the untrained model once: every set's
epoch-0 row is the same base model, so it is entered as one point (its accuracy and fits
averaged over the grid sets' epoch-0 rows), not once per set. Ordinary least squares with
standard errors clustered by (set, seed) (the base point is its own cluster) and t intervals on
(clusters - 1) degrees of freedom; the clustered covariance needs at least 4 clusters.

Every point's accuracy is measured on the same few test questions (``eval_questions`` per
relation, the same for every set, seed and epoch), so the clustered interval leaves out the
noise of which questions were asked. Where the dynamics record each test question's
correctness (``test_qids``, ``test_correct``), a crossed percentile bootstrap adds it: each
replicate draws the (set, seed) clusters (the base point one of them) and the test questions
with replacement, one question draw for every point, recomputes each point's accuracy over the
drawn questions, and refits the OLS with each point weighted by its cluster's multiplicity.
The questions are drawn as one pool, not per relation. The replicates take matrix products
over precomputed (rows x questions) arrays, with no loop over replicates; clusters and questions
are drawn from two seeded streams, so a single question (or questions all answered alike)
gives exactly the cluster-only bootstrap. Its interval decides the slopes' findings; without
the per-question record (dynamics trained before kgfact kept it) the table is the clustered one
and its ``note`` says that question noise is not included.

Single-category sets (``highly-known``, ``maybe-known``, ``weakly-known``, ``unknown``),
``natural``, ``idk-relabel`` and ``filtered`` are not pooled into the fit: their points are
reported apart, against the grid fit's prediction.

Findings (:func:`finding`, :func:`bootstrap_p`)
-----------------------------------------------
A verdict from an interval, never from a point estimate. A directional claim ("above" or
"below" a threshold, 0 by default) is *supported* when the interval lies entirely on the
expected side, *contradicted* when it lies entirely on the other side, *inconclusive* otherwise
(an interval touching the threshold included). A claim of no practical difference ("equal":
the quantity is within ``threshold ± margin``) is decided by two one-sided tests (TOST):
*supported* when the interval lies strictly inside the margin, *contradicted* when it lies
entirely outside it (the quantity is shown to differ by more than the margin, on either side),
*inconclusive* otherwise: an interval that merely contains the threshold is not equivalence.
With a 95% interval each one-sided test is at the 2.5% level.

:func:`bootstrap_p` gives the p-value of that decision from the bootstrap replicates, so that
multiple-testing corrections (:mod:`kgfact.findings` applies Holm's) can be made over claims.
"""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from kgfact.errors import KgfactError

GAP_KEYS = ["mode", "strategy", "distribution", "checkpoint"]
CELL = ["seed", "relation", "prompt", "qid"]  # the paired unit of the gap (module docstring)
GRID = re.compile(r"ft-known|ft-unknown|mix-\d+")  # the %Unknown grid of kgfact.ftsets
EXPECTATIONS = ("above", "below", "equal")
# what the literature expects of each estimate: the direction a finding is checked against
EXPECTED = {"gap": "above", "known_fit": "above", "unknown_fit": "below"}
# an "equal" claim's default margin: 5 points of accuracy, about the EARLY_STOP gaps Gekhman et
# al. report as no practical harm
EQUIVALENCE_MARGIN = 0.05


def finding(estimate: float, ci_low: float, ci_high: float, expected: str = "above",
            threshold: float = 0.0, margin: float = EQUIVALENCE_MARGIN) -> str:
    """Verdict on "the quantity lies ``expected`` ``threshold``" from its interval.

    ``expected`` is ``"above"``, ``"below"`` or ``"equal"``: within ``threshold ± margin``,
    decided by two one-sided tests (module docstring; ``margin`` is used only there). The
    estimate never decides (a percentile interval need not even contain it); it only marks a
    quantity that was not measured (NaN), which is inconclusive like a NaN interval.

    >>> finding(0.4, 0.1, 0.7), finding(0.4, 0.1, 0.7, "below"), finding(0.4, 0.0, 0.7)
    ('supported', 'contradicted', 'inconclusive')
    >>> finding(0.05, 0.02, 0.2, threshold=0.1)
    'inconclusive'
    >>> finding(0.0, -0.02, 0.03, "equal"), finding(-0.3, -0.5, -0.1, "equal")
    ('supported', 'contradicted')
    >>> finding(0.0, -0.3, 0.3, "equal")
    'inconclusive'
    """
    if expected not in EXPECTATIONS:
        raise KgfactError(f"expected {expected!r}: use above, below or equal")
    if expected == "equal" and not margin > 0:
        raise KgfactError(f"equivalence margin {margin}: use a positive margin")
    if np.isnan([estimate, ci_low, ci_high]).any():
        return "inconclusive"
    if ci_low > ci_high:
        raise KgfactError(f"interval [{ci_low}, {ci_high}] has its low end above its high end")
    if expected == "equal":
        low, high = threshold - margin, threshold + margin
        if low < ci_low and ci_high < high:
            return "supported"
        return "contradicted" if ci_low > high or ci_high < low else "inconclusive"
    if ci_low > threshold:
        return "supported" if expected == "above" else "contradicted"
    if ci_high < threshold:
        return "supported" if expected == "below" else "contradicted"
    return "inconclusive"


def bootstrap_p(replicates: np.ndarray, expected: str, threshold: float = 0.0,
                margin: float = EQUIVALENCE_MARGIN) -> float:
    """The p-value of :func:`finding`'s decision, from bootstrap replicates.

    The one-sided p of "the quantity is above ``x``" is the share of replicates at or below
    ``x``, with one added to count and total so that it is never 0 ("below ``x``" likewise). A
    directional verdict is decided by one of two such claims, above or below the threshold; an
    "equal" one by *inside the margin* (two one-sided tests: the larger p of "above threshold -
    margin" and "below threshold + margin") or *outside it* (the smaller p of "above threshold +
    margin" and "below threshold - margin"). The p-value is twice the smaller p of the two, at
    most 1, so that it is under ``1 - level`` where the ``level`` percentile interval decides
    the verdict (up to the percentiles' interpolation). Non-finite replicates (dropped) are left
    out; NaN when none is left.

    >>> bootstrap_p(np.array([0.1, 0.2, 0.3]), "above")
    0.5
    """
    reps = np.asarray(replicates, dtype=float)
    reps = reps[np.isfinite(reps)]
    if not len(reps):
        return float("nan")

    def beyond(x: float, side: str) -> float:  # p of "the quantity is above (below) x"
        at_most = (reps <= x) if side == "above" else (reps >= x)
        return (1 + at_most.sum()) / (1 + len(reps))

    if expected == "equal":
        low, high = threshold - margin, threshold + margin
        inside = max(beyond(low, "above"), beyond(high, "below"))
        outside = min(beyond(high, "above"), beyond(low, "below"))
        p = min(inside, outside)
    else:
        p = min(beyond(threshold, "above"), beyond(threshold, "below"))
    return float(min(1.0, 2 * p))


class Bootstrapped(NamedTuple):
    """A point estimate, its percentile interval and the bootstrap replicates behind it (NaN
    where a replicate's draws gave a compared group no weight: *dropped*)."""

    estimate: float
    ci_low: float
    ci_high: float
    replicates: np.ndarray

    @property
    def dropped(self) -> int:
        """How many replicates were dropped (NaN) and left out of the interval."""
        return int(np.isnan(self.replicates).sum())


def bootstrapped(estimate: float, replicates: np.ndarray, level: float) -> Bootstrapped:
    """``estimate`` with the percentile interval of ``replicates`` (non-finite ones dropped:
    made NaN, left out of the interval and counted by :attr:`Bootstrapped.dropped`)."""
    reps = np.where(np.isfinite(replicates), replicates, np.nan)
    low, high = (np.nan, np.nan) if np.isnan(reps).all() else _percentile_ci(reps, level)
    return Bootstrapped(float(estimate) if np.isfinite(estimate) else np.nan, low, high, reps)


def _percentile_ci(replicates: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_mean_ci(values: np.ndarray, n_boot: int = 2000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values`` (independent units).

    >>> bootstrap_mean_ci(np.array([1.0, 1.0, 1.0]))
    (1.0, 1.0)
    """
    if len(values) == 0:
        return (np.nan, np.nan)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(axis=1)
    return _percentile_ci(means, level)


def _with_design(frame: pd.DataFrame, defaults: dict[str, object]) -> pd.DataFrame:
    """``frame`` with every column of ``defaults`` that it lacks set to one level."""
    return frame.assign(**{k: v for k, v in defaults.items() if k not in frame})


def paired_cells(predictions: pd.DataFrame, known: str = "ft-known",
                 unknown: str = "ft-unknown") -> pd.DataFrame:
    """One row per (mode, strategy, distribution, checkpoint, seed, relation, prompt, qid)
    answered by both models, with their correctness in columns ``known`` and ``unknown``.

    ``prompt`` is the exemplar-set index (the last field of ``prompt_id``). A missing ``seed``,
    ``relation`` or ``prompt_id`` column is one seed (0), relation or exemplar set.
    """
    have = set(predictions["set"].dropna())
    if not {known, unknown} <= have:
        raise KgfactError(f"the gap needs predictions of both {known!r} and {unknown!r} "
                          f"(evaluated sets: {', '.join(sorted(have)) or 'none'})")
    frame = _with_design(predictions[predictions["set"].isin([known, unknown])],
                         {"seed": 0, "relation": "-", "prompt_id": "0"})
    frame = frame.assign(prompt=frame["prompt_id"].str.rsplit("/", n=1).str[-1],
                         correct=frame["correct"].astype(float))
    cells = (frame.groupby(GAP_KEYS + CELL + ["set"])["correct"].mean().unstack("set")
             .dropna(subset=[known, unknown]))
    return (cells[[known, unknown]].set_axis(["known", "unknown"], axis=1)
            .rename_axis(columns=None).reset_index())


def _draw_counts(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    """``(n_boot, n)`` multiplicities of ``n`` units, each row a draw of ``n`` with replacement
    (a multinomial, counted with one bincount: several times faster than ``rng.multinomial``)."""
    picks = rng.integers(0, n, size=(n_boot, n)) + n * np.arange(n_boot)[:, None]
    return np.bincount(picks.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(float)


NO_PROMPT = "none"  # the exemplar set of a prompt without exemplars: never resampled


def crossed_sums(cells: pd.DataFrame, columns: list[str], n_boot: int = 2000, seed: int = 0
                 ) -> np.ndarray:
    """``(len(columns), n_boot)`` bootstrap replicates of the weighted sums of ``columns``,
    resampling seeds, the exemplar sets of each relation and the queries of each relation
    together (module docs): one draw for every column, so sums of the same cells are paired.

    ``cells`` has columns ``seed``, ``relation``, ``prompt``, ``qid`` and ``columns``; a
    (seed, relation, prompt, qid) may occur in several rows (their values add up), and a
    ``prompt`` of :data:`NO_PROMPT` (zero-shot) always has weight 1: a relation's real exemplar
    sets are drawn among themselves, so their total weight is always their number.
    """
    rng = np.random.default_rng(seed)
    s_code, seeds = pd.factorize(cells["seed"], sort=True)
    w_seed = _draw_counts(rng, len(seeds), n_boot)
    totals = np.zeros((len(columns), n_boot))
    for _, part in cells.assign(s=s_code).groupby("relation", sort=True):
        p_code, prompts = pd.factorize(part["prompt"].astype(str), sort=True)
        q_code, qids = pd.factorize(part["qid"], sort=True)
        real = np.asarray(prompts) != NO_PROMPT
        w_prompt = np.ones((n_boot, len(prompts)))
        w_prompt[:, real] = _draw_counts(rng, int(real.sum()), n_boot)
        w_query = _draw_counts(rng, len(qids), n_boot)
        cube = np.zeros((len(columns), len(seeds), len(prompts), len(qids)))
        at = (part["s"].to_numpy(), p_code, q_code)
        for k, column in enumerate(columns):
            np.add.at(cube[k], at, part[column].to_numpy(float))
        by_query = (cube.reshape(-1, len(qids)) @ w_query.T).reshape(*cube.shape[:3], n_boot)
        totals += np.einsum("kspb,bs,bp->kb", by_query, w_seed, w_prompt)
    return totals


def crossed_bootstrap(cells: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """``n_boot`` bootstrap replicates of the mean of ``cells["d"]``, resampling seeds, the
    exemplar sets of each relation and the queries of each relation together (module docs).

    ``cells`` has columns ``seed``, ``relation``, ``prompt``, ``qid`` and ``d``, one row per
    cell. A replicate whose draws hit no cell (possible only when cells are missing) is NaN.
    """
    sums = crossed_sums(cells.assign(one=1.0), ["d", "one"], n_boot, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums[0] / sums[1]


def crossed_mean(cells: pd.DataFrame, n_boot: int = 2000, seed: int = 0, level: float = 0.95
                 ) -> Bootstrapped:
    """The mean of ``cells["d"]`` with its crossed bootstrap interval
    (:func:`crossed_bootstrap`)."""
    return bootstrapped(cells["d"].mean(), crossed_bootstrap(cells, n_boot, seed), level)


def crossed_contrast(cells: pd.DataFrame, group: str, first: Any, second: Any,
                     value: str = "d", weight: str | None = None, n_boot: int = 2000,
                     seed: int = 0, level: float = 0.95) -> Bootstrapped:
    """Difference of the (weighted) mean of ``value`` between the cells whose ``group`` is
    ``first`` and those whose ``group`` is ``second``, with its crossed bootstrap interval.

    Both means come from the same draws, so cells the two groups share (the same seed,
    exemplar set and query at two checkpoints, say) are paired. ``weight`` (default 1 per row)
    makes ratio estimators: the mean of ``value`` is ``sum(value) / sum(weight)``. A replicate
    that gives either group no weight has no mean for it and is dropped.

    Returns
    -------
    Bootstrapped
        ``(estimate, ci_low, ci_high, replicates)``; NaN when either group has no cells or
        no weight.
    """
    w = cells[weight].to_numpy(float) if weight else np.ones(len(cells))
    a, b = (cells[group] == first).to_numpy(), (cells[group] == second).to_numpy()
    if not a.any() or not b.any():
        return Bootstrapped(np.nan, np.nan, np.nan, np.full(n_boot, np.nan))
    v = cells[value].to_numpy(float)
    frame = cells.assign(va=v * a, wa=w * a, vb=v * b, wb=w * b)
    with np.errstate(invalid="ignore", divide="ignore"):
        estimate = frame["va"].sum() / frame["wa"].sum() - frame["vb"].sum() / frame["wb"].sum()
        sums = crossed_sums(frame, ["va", "wa", "vb", "wb"], n_boot, seed)
        reps = sums[0] / sums[1] - sums[2] / sums[3]
    return bootstrapped(estimate, reps, level)


def factuality_gap(predictions: pd.DataFrame, known: str = "ft-known",
                   unknown: str = "ft-unknown", n_boot: int = 2000, seed: int = 0,
                   level: float = 0.95) -> pd.DataFrame:
    """Gap between the models fine-tuned on sets ``known`` and ``unknown``.

    Parameters
    ----------
    predictions : DataFrame
        The ``predictions`` table (columns ``set``, ``checkpoint``, ``mode``, ``strategy``,
        ``distribution``, ``relation``, ``prompt_id``, ``qid``, ``correct`` and, with several
        training seeds, ``seed``).
    known, unknown : str
        Names of the two fine-tuning sets.
    n_boot, seed, level : int, int, float
        Bootstrap replicates, the seed of their draws and the interval's level.

    Returns
    -------
    DataFrame
        One row per (mode, strategy, distribution, checkpoint) with ``acc_known``,
        ``acc_unknown``, ``gap`` and its interval ``ci_low``, ``ci_high`` (module docstring),
        ``n`` (queries both models answered), ``n_seeds``, ``n_prompts`` (exemplar sets per
        relation, at most), ``seeds`` and ``seed_gaps`` (each seed's gap, in seed order),
        ``finding`` (:func:`finding` for a gap above 0) and ``dropped`` (replicates whose draws
        hit no cell, left out of the interval; 0 unless cells are missing).
    """
    cells = paired_cells(predictions, known, unknown)
    cells["d"] = cells["known"] - cells["unknown"]
    rows = []
    for key, group in cells.groupby(GAP_KEYS, sort=True):
        gap = crossed_mean(group, n_boot, seed, level)
        per_seed = group.groupby("seed", sort=True)["d"].mean()
        rows.append((*key, group["known"].mean(), group["unknown"].mean(), *gap[:3],
                     group["qid"].nunique(), len(per_seed),
                     int(group.groupby("relation")["prompt"].nunique().max()),
                     per_seed.index.tolist(), per_seed.tolist(),
                     finding(*gap[:3], EXPECTED["gap"]), gap.dropped))
    return pd.DataFrame(rows, columns=GAP_KEYS + [
        "acc_known", "acc_unknown", "gap", "ci_low", "ci_high", "n", "n_seeds", "n_prompts",
        "seeds", "seed_gaps", "finding", "dropped"])


def regression_points(dynamics: pd.DataFrame, accuracy: str = "test_accuracy") -> pd.DataFrame:
    """Gekhman's points from the ``dynamics`` table (module docstring).

    Returns
    -------
    DataFrame
        One row per point: ``set`` (``base`` for the untrained model), ``seed``, ``epoch``,
        ``known_fit`` (N_kn/|D|), ``unknown_fit`` (N_unk/|D|), ``accuracy``, ``grid`` (whether
        the point enters the fit: the %Unknown grid sets and the base model), ``rows`` (the
        positions in ``dynamics`` of the rows the point averages: its own row, or every grid
        set's epoch-0 row for the base model) and ``cluster``.
    """
    measured = dynamics[accuracy].notna().to_numpy()
    rows = _with_design(dynamics[measured], {"seed": 0})
    size = rows["n_known"] + rows["n_unknown"]
    points = pd.DataFrame({
        "set": rows["set"], "seed": rows["seed"], "epoch": rows["epoch"],
        "known_fit": rows["n_known_fit"] / size, "unknown_fit": rows["n_unknown_fit"] / size,
        "accuracy": rows[accuracy], "grid": rows["set"].map(lambda s: bool(GRID.fullmatch(s))),
        "rows": [(int(i),) for i in np.flatnonzero(measured)]})
    untrained = points["epoch"] == 0
    base = points[untrained & points["grid"]]
    base = (base[["known_fit", "unknown_fit", "accuracy"]].mean().to_frame().T
            .assign(set="base", seed=pd.NA, epoch=0, grid=True,
                    rows=pd.Series([sum(base["rows"], ())])) if len(base) else base)
    trained = points[~untrained]
    out = pd.concat([base, trained], ignore_index=True)[list(points.columns)]
    cluster = out["set"] + "/" + out["seed"].astype(str)
    return out.assign(cluster=cluster.where(out["set"] != "base", "base"))


def _grid_fit(dynamics: pd.DataFrame, accuracy: str) -> tuple[pd.DataFrame, Any]:
    """The points and the clustered OLS fit of Gekhman's model over the grid points."""
    import statsmodels.api as sm

    points = regression_points(dynamics, accuracy)
    grid = points[points["grid"]]
    x = sm.add_constant(grid[["known_fit", "unknown_fit"]].astype(float), has_constant="add")
    clusters = grid["cluster"].nunique()
    if len(grid) <= 3 or np.linalg.matrix_rank(x.to_numpy()) < 3 or clusters < 4:
        raise KgfactError(
            f"Gekhman's regression needs more than 3 (set, epoch) points of the %Unknown grid "
            f"(ft-known, mix-*, ft-unknown) with varied fits, in at least 4 (set, seed) "
            f"clusters counting the base model; have {len(grid)} points in {clusters}: "
            f"train more grid sets, seeds or epochs")
    fit = sm.OLS(grid["accuracy"].to_numpy(float), x).fit(
        cov_type="cluster", cov_kwds={"groups": pd.factorize(grid["cluster"])[0]}, use_t=True)
    return points, fit


# the per-question record of an accuracy column of ``dynamics`` (kgfact.finetune._dynamics_row):
# the questions' qids (a JSON list) and whether each was answered right (a "0"/"1" string)
QUESTIONS = {"test_accuracy": ("test_qids", "test_correct")}


class _GridBoot(NamedTuple):
    """The crossed bootstrap of the grid fit (module docstring)."""

    replicates: np.ndarray | None  # (n_boot, 3) coefficients; None without per-question data
    n_questions: int
    note: str


def _grid_boot(dynamics: pd.DataFrame, grid: pd.DataFrame, accuracy: str, n_boot: int,
               seed: int) -> _GridBoot:
    """Replicates of the OLS coefficients over the ``grid`` points (of
    :func:`regression_points`), each drawing the (set, seed) clusters and the test questions
    with replacement, the points' accuracies recomputed from the drawn questions."""
    used = sorted(set().union(*grid["rows"]))
    names = QUESTIONS.get(accuracy, ())
    if not names:
        return _GridBoot(None, 0, f"question noise not included: {accuracy} has no "
                                 f"per-question record; the finding uses the clustered interval")
    rows = dynamics.reindex(columns=list(names)).iloc[used]  # a missing column: all NaN
    if lacking := int(rows.isna().any(axis=1).sum()):
        return _GridBoot(None, 0, (
            f"question noise not included: {lacking} of the {len(used)} dynamics rows behind "
            f"the grid points have no per-question correctness ({names[1]}; trained before "
            f"kgfact recorded it); the finding uses the clustered interval"))
    asked = {text: json.loads(text) for text in rows[names[0]].unique()}
    qids = sorted(set().union(*asked.values()))
    column = {q: j for j, q in enumerate(qids)}
    # rows x questions; a row tested on fewer questions (a set of other relations) has 0 in
    # ``on`` where it was not asked, so its accuracy is over its own drawn questions
    on, correct = np.zeros((len(used), len(qids))), np.zeros((len(used), len(qids)))
    for i, (text, bits) in enumerate(zip(rows[names[0]], rows[names[1]])):
        at = [column[q] for q in asked[text]]
        on[i, at] = 1.0
        correct[i, at] = np.frombuffer(bits.encode(), dtype=np.uint8) == ord("1")
    average = np.zeros((len(grid), len(used)))  # each point: the mean of its rows
    position = {r: i for i, r in enumerate(used)}
    for p, behind in enumerate(grid["rows"]):
        average[p, [position[r] for r in behind]] = 1.0 / len(behind)
    # two streams, so that the cluster draws do not depend on how many questions there are
    cluster_rng, question_rng = map(np.random.default_rng, np.random.SeedSequence(seed).spawn(2))
    codes, clusters = pd.factorize(grid["cluster"], sort=True)
    w_point = _draw_counts(cluster_rng, len(clusters), n_boot)[:, codes]  # (B, points)
    w_question = _draw_counts(question_rng, len(qids), n_boot)            # (B, questions)
    with np.errstate(invalid="ignore", divide="ignore"):
        y = average @ ((correct @ w_question.T) / (on @ w_question.T))    # (points, B)
    x = np.column_stack([np.ones(len(grid)), grid["known_fit"], grid["unknown_fit"]])
    # the weighted normal equations of every replicate, by matrix products
    xtx = (w_point @ (x[:, :, None] * x[:, None, :]).reshape(len(x), 9)).reshape(-1, 3, 3)
    xty = (w_point * y.T) @ x
    coef = np.full((n_boot, 3), np.nan)  # NaN: the drawn points do not determine the line
    full = np.linalg.matrix_rank(xtx) == 3
    coef[full] = np.linalg.solve(xtx[full], xty[full][..., None])[..., 0]
    return _GridBoot(coef, len(qids), (
        f"ci_low/ci_high: clustered by (set, seed); boot_ci_low/boot_ci_high: crossed "
        f"bootstrap over the {len(clusters)} clusters and the {len(qids)} test questions, "
        f"which decides the finding"))


def gekhman_regression(dynamics: pd.DataFrame, accuracy: str = "test_accuracy",
                       n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Fit Gekhman's linear model over the %Unknown grid's points of ``dynamics``.

    Returns
    -------
    DataFrame
        One row per coefficient (``const``, ``known_fit``, ``unknown_fit``) with ``coef``,
        ``std_err`` (clustered by set and seed), ``t``, ``p_value``, the 95% CI, the fit's
        ``r_squared``, ``n_points`` and ``n_clusters``, the ``sets`` fitted, and for the two
        slopes the ``expected`` sign (b_kn above 0, b_unk below) and its :func:`finding`.
        Where ``dynamics`` records each test question's correctness, also the crossed
        bootstrap's 95% interval (``boot_ci_low``, ``boot_ci_high``: (set, seed) clusters and
        test questions resampled together, ``n_boot`` replicates seeded by ``seed``), its
        ``boot_p_value`` (:func:`bootstrap_p`, slopes only), ``boot_dropped`` (replicates whose
        drawn points did not determine the line) and ``n_questions``; the finding then comes
        from that interval. ``note`` says which interval decides and why.

    Raises
    ------
    KgfactError
        With too few grid points or clusters for the fit (see the module docstring).
    """
    points, fit = _grid_fit(dynamics, accuracy)
    ci = fit.conf_int(0.05)
    table = pd.DataFrame({
        "term": fit.params.index, "coef": fit.params.to_numpy(), "std_err": fit.bse.to_numpy(),
        "t": fit.tvalues.to_numpy(), "p_value": fit.pvalues.to_numpy(),
        "ci_low": ci[0].to_numpy(), "ci_high": ci[1].to_numpy(),
        "r_squared": fit.rsquared, "n_points": int(fit.nobs),
        "n_clusters": points.loc[points["grid"], "cluster"].nunique(), "accuracy": accuracy,
        "sets": ",".join(sorted(set(points.loc[points["grid"], "set"]) - {"base"}))})
    table["expected"] = table["term"].map(EXPECTED)
    boot = _grid_boot(dynamics, points[points["grid"]], accuracy, n_boot, seed)
    decide = ["ci_low", "ci_high"]
    if boot.replicates is not None:
        terms = [bootstrapped(c, boot.replicates[:, k], 0.95)
                 for k, c in enumerate(table["coef"])]
        table = table.assign(
            boot_ci_low=[t.ci_low for t in terms], boot_ci_high=[t.ci_high for t in terms],
            boot_p_value=[bootstrap_p(t.replicates, e) if isinstance(e, str) else np.nan
                          for t, e in zip(terms, table["expected"])],
            boot_dropped=[t.dropped for t in terms], n_questions=boot.n_questions,
            n_boot=n_boot)
        decide = ["boot_ci_low", "boot_ci_high"]
    low, high = decide
    table["finding"] = [finding(c, lo, hi, e) if isinstance(e, str)
                        else None  # no claim on the intercept
                        for c, lo, hi, e in zip(table["coef"], table[low], table[high],
                                                table["expected"])]
    return table.assign(note=boot.note)


def gekhman_other_sets(dynamics: pd.DataFrame, accuracy: str = "test_accuracy",
                       n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """The trained points of the sets outside the %Unknown grid (single-category, ``natural``,
    ``idk-relabel``, ``filtered``) against the grid fit's prediction.

    Returns
    -------
    DataFrame
        One row per (set, seed, epoch) with ``known_fit``, ``unknown_fit``, the measured
        ``accuracy``, the grid fit's ``predicted`` accuracy and its 95% interval
        (``pred_ci_low``, ``pred_ci_high``, clustered like the fit) and ``residual``
        (measured minus predicted); where ``dynamics`` records each test question's
        correctness, also the interval of the prediction under the crossed bootstrap of
        :func:`gekhman_regression` (the same replicates: ``boot_pred_ci_low``,
        ``boot_pred_ci_high``); ``note`` as there. Empty when every set is a grid set.
    """
    from scipy import stats

    points, fit = _grid_fit(dynamics, accuracy)
    other = points.loc[~points["grid"], ["set", "seed", "epoch", "known_fit", "unknown_fit",
                                         "accuracy"]].reset_index(drop=True)
    x = np.column_stack([np.ones(len(other)), other["known_fit"], other["unknown_fit"]])
    predicted = x @ fit.params.to_numpy()
    half = (stats.t.ppf(0.975, fit.df_resid_inference)
            * np.sqrt(np.einsum("ij,jk,ik->i", x, fit.cov_params().to_numpy(), x)))
    other = other.assign(predicted=predicted, pred_ci_low=predicted - half,
                         pred_ci_high=predicted + half,
                         residual=other["accuracy"].to_numpy(float) - predicted)
    boot = _grid_boot(dynamics, points[points["grid"]], accuracy, n_boot, seed)
    if boot.replicates is not None:
        preds = [bootstrapped(p, reps, 0.95) for p, reps in zip(predicted,
                                                                x @ boot.replicates.T)]
        other = other.assign(boot_pred_ci_low=[p.ci_low for p in preds],
                             boot_pred_ci_high=[p.ci_high for p in preds])
    return other.assign(note=boot.note)
