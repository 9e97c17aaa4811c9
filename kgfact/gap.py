"""The factuality gap with bootstrap confidence intervals, and Gekhman's linear model.

- :func:`factuality_gap`: ``acc(FT-Known) - acc(FT-Unknown)`` on the same test queries, per
  prompt mode, strategy, distribution (ID/OOD) and checkpoint (EARLY_STOP/CONVERGENCE). A query's
  accuracy is the mean over its prompts; the 95% CI is a paired percentile bootstrap over
  queries (both models are resampled on the same queries).
- :func:`gekhman_regression`: ``acc = b0 + b_kn N_kn/|D| + b_unk N_unk/|D|`` by ordinary least
  squares (statsmodels) over (set, epoch) points, where ``N_kn`` and ``N_unk`` are the Known and
  Unknown training examples the model *fits* at that epoch (Gekhman et al., section 5).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kgfact.errors import KgfactError

GAP_KEYS = ["mode", "strategy", "distribution", "checkpoint"]


def bootstrap_mean_ci(values: np.ndarray, n_boot: int = 2000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values``.

    >>> bootstrap_mean_ci(np.array([1.0, 1.0, 1.0]))
    (1.0, 1.0)
    """
    if len(values) == 0:
        return (np.nan, np.nan)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def factuality_gap(predictions: pd.DataFrame, known: str = "ft-known",
                   unknown: str = "ft-unknown", n_boot: int = 2000, seed: int = 0
                   ) -> pd.DataFrame:
    """Gap between the models fine-tuned on sets ``known`` and ``unknown``.

    Parameters
    ----------
    predictions : DataFrame
        The ``predictions`` table (columns ``set``, ``checkpoint``, ``mode``, ``strategy``,
        ``distribution``, ``qid``, ``correct``).
    known, unknown : str
        Names of the two fine-tuning sets.

    Returns
    -------
    DataFrame
        One row per (mode, strategy, distribution, checkpoint) with ``acc_known``,
        ``acc_unknown``, ``gap``, ``ci_low``, ``ci_high`` and ``n`` (queries both answered).
        Strategies that depend on the set (``from-ft``, ``disjoint``) compare each model under
        its own exemplars.
    """
    have = set(predictions["set"].dropna())
    if not {known, unknown} <= have:
        raise KgfactError(f"the gap needs predictions of both {known!r} and {unknown!r} "
                          f"(evaluated sets: {', '.join(sorted(have)) or 'none'})")
    per_query = (predictions[predictions["set"].isin([known, unknown])]
                 .groupby(GAP_KEYS + ["set", "qid"])["correct"].mean().unstack("set"))
    per_query = per_query.dropna(subset=[known, unknown])
    rows = []
    for key, group in per_query.groupby(level=GAP_KEYS):
        diff = (group[known] - group[unknown]).to_numpy()
        low, high = bootstrap_mean_ci(diff, n_boot, seed)
        rows.append((*key, group[known].mean(), group[unknown].mean(), diff.mean(), low, high,
                     len(group)))
    return pd.DataFrame(rows, columns=GAP_KEYS + ["acc_known", "acc_unknown", "gap", "ci_low",
                                                  "ci_high", "n"])


def gekhman_regression(dynamics: pd.DataFrame, accuracy: str = "test_accuracy") -> pd.DataFrame:
    """Fit Gekhman's linear model over the (set, epoch) points of ``dynamics``.

    Returns
    -------
    DataFrame
        One row per coefficient (``const``, ``known_fit``, ``unknown_fit``) with ``coef``,
        ``std_err``, ``t``, ``p_value``, the 95% CI, and the fit's ``r_squared`` and ``n_points``.
    """
    import statsmodels.api as sm

    points = dynamics.dropna(subset=[accuracy])
    size = points["n_known"] + points["n_unknown"]
    x = pd.DataFrame({"known_fit": points["n_known_fit"] / size,
                      "unknown_fit": points["n_unknown_fit"] / size})
    if len(points) <= 3 or np.linalg.matrix_rank(sm.add_constant(x).to_numpy()) < 3:
        raise KgfactError(f"Gekhman's regression needs more than 3 (set, epoch) points with "
                          f"varied fits; have {len(points)}: train more sets or epochs")
    fit = sm.OLS(points[accuracy].to_numpy(), sm.add_constant(x)).fit()
    ci = fit.conf_int(0.05)
    return pd.DataFrame({
        "term": fit.params.index, "coef": fit.params.to_numpy(), "std_err": fit.bse.to_numpy(),
        "t": fit.tvalues.to_numpy(), "p_value": fit.pvalues.to_numpy(),
        "ci_low": ci[0].to_numpy(), "ci_high": ci[1].to_numpy(),
        "r_squared": fit.rsquared, "n_points": int(fit.nobs), "accuracy": accuracy})
