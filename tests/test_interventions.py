"""The theory's primary test: the slope of measured on predicted gap reductions across the
designed interventions (the controls' exemplar strategies), one intercept per (checkpoint,
mode), with its crossed-bootstrap interval, p-value and power.

Synthetic runs: FT-Known, mix-50 and FT-Unknown answer zero-shot with probabilities 0.7, 0.5
and 0.3 (u = 1, 0, -1: α = 0.2, predicted zero-shot gap Δ = 0.4). Under a prompt of
augmentation A the gap is set by the scenario; the theory says Δ·(1 - A), a reduction of Δ·A.

Also prediction 1 on held-out sets: α and c are fitted on FT-Known and FT-Unknown (c = 0.5),
and every other evaluated mixture's zero-shot accuracy is predicted as c + α·u.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from kgfact.errors import KgfactError
from kgfact.theory import CONTROLS, GapStudy, PredictionConfig
from kgfact.theory.predict import crossed_weights

SHARE = {"ft-known": 0.0, "mix-25": 0.25, "mix-50": 0.5, "ft-unknown": 1.0}
ZERO_SHOT = {"ft-known": 0.7, "mix-50": 0.5, "ft-unknown": 0.3}
KNOWN_VS_UNKNOWN = {"known-vs-unknown": CONTROLS.get("known-vs-unknown")}


def synthetic(gap_of, a_of: dict[tuple[str, str], float], queries: int = 60, seeds: int = 3,
              rng_seed: int = 0, exact: bool = False, zero_shot: dict[str, float] = ZERO_SHOT,
              **config) -> GapStudy:
    """A study whose prompted gap under (mode, strategy) is ``gap_of(mode, A)`` and whose sets
    answer zero-shot with the probabilities ``zero_shot``; ``config`` overrides
    :class:`PredictionConfig`.

    ``exact``: correctness is not drawn; each (set, seed) answers the share of queries its
    probability says (queries ordered by a seeded permutation), so per-arm means are exact.
    """
    rng = np.random.default_rng(rng_seed)
    rows = []

    def answers(p: float) -> np.ndarray:
        if exact:
            ok = np.zeros(queries, dtype=bool)
            ok[:round(p * queries)] = True
            return ok[rng.permutation(queries)]
        return rng.random(queries) < p

    qids = [f"q{i}" for i in range(queries)]
    relations = ["P1" if i % 2 else "P2" for i in range(queries)]
    cells = [("zero-shot", "none", set_, p) for set_, p in zero_shot.items()]
    for (mode, strategy), a in a_of.items():
        gap = gap_of(mode, a)
        cells += [(mode, strategy, "ft-known", 0.5 + gap / 2),
                  (mode, strategy, "ft-unknown", 0.5 - gap / 2)]
    for seed in range(seeds):
        for mode, strategy, set_, p in cells:
            for qid, rel, ok in zip(qids, relations, answers(p)):
                prompt = "none" if strategy == "none" else f"{mode}/{strategy}/{rel}/0"
                rows.append({"model": f"{set_}@convergence", "set": set_,
                             "checkpoint": "convergence", "mode": mode, "strategy": strategy,
                             "prompt_id": prompt, "qid": qid, "relation": rel,
                             "distribution": "id", "category": None, "seed": seed,
                             "correct": bool(ok)})
    preds = pd.DataFrame(rows)
    a = {f"{mode}/{strategy}": value for (mode, strategy), value in a_of.items()}
    aug = preds[["prompt_id", "qid"]].drop_duplicates()
    aug["default"] = [a.get(p.rsplit("/", 2)[0], 0.0) for p in aug["prompt_id"]]
    prompts = aug[["prompt_id"]].drop_duplicates().assign(prompt=0)
    return GapStudy(preds, prompts, SHARE, aug, pd.DataFrame(columns=["relation", "distance",
                                                                      "hops"]),
                    KNOWN_VS_UNKNOWN, PredictionConfig(**{"min_bucket": 1, "n_boot": 300,
                                                          **config}),
                    primary="default")


def theory(mode: str, a: float) -> float:
    return 0.4 * (1 - a)


DESIGN = {("few-shot", "known"): 0.5, ("few-shot", "unknown"): 0.0}


def test_the_slope_of_an_exact_theory_is_one():
    # per arm, known: gap 0.2, reduction 0.4 - 0.2 = 0.2, predicted 2 * 0.2 * 0.5 = 0.2;
    # unknown: reduction 0, predicted 0 -> slope (0.2 - 0) / (0.2 - 0) = 1
    s = synthetic(theory, DESIGN, queries=20, seeds=1, exact=True)
    alpha = s.fit(np.ones(len(s.cells))).alpha
    assert alpha["convergence"] == pytest.approx(0.2)
    assert s.primary_slope(np.ones(len(s.cells)), alpha) == pytest.approx(1.0)
    assert s.design_strategies == ["known", "unknown"]
    assert len(s.design) == 40  # 20 queries x 2 strategies, one seed


def test_a_theory_that_holds_is_supported_with_an_interval_covering_one():
    design = {**DESIGN, ("cot", "known"): 0.9, ("cot", "unknown"): 0.2}
    row = synthetic(theory, design, queries=200).tables()["theory_primary"].iloc[0]
    assert row["verdict"] == "supported" and row["covers_one"]
    assert row["ci_low"] > 0 and row["p_value"] < 0.05
    assert row["n_queries"] == 200 and row["n_units"] == 200 * 3 * 4
    assert 0 < row["se"] < 0.5 and row["power"] > 0.8


def test_no_effect_is_never_supported():
    flat = synthetic(lambda mode, a: 0.4, DESIGN, queries=200).tables()["theory_primary"]
    assert flat.iloc[0]["verdict"] in ("inconclusive", "contradicted")
    assert flat.iloc[0]["ci_low"] < 0.5 and not flat.iloc[0]["ci_low"] > 0


def test_pooling_across_modes_does_not_reverse_the_slope():
    # within each mode the reduction grows with A (slope 1), but CoT has the low A and the
    # large reductions: pooled without a mode intercept, the slope is negative
    design = {("few-shot", "known"): 0.9, ("few-shot", "unknown"): 0.7,
              ("cot", "known"): 0.3, ("cot", "unknown"): 0.1}

    def offset(mode: str, a: float) -> float:
        return 0.4 * (1 - a) + (0.25 if mode == "few-shot" else -0.25)
    s = synthetic(offset, design, queries=200, seeds=1, exact=True)
    d = s.design
    x, y = 0.4 * d["default"].to_numpy(), (d["zero_shot_gap"] - d["gap"]).to_numpy()
    assert np.polyfit(x, y, 1)[0] < 0  # the pooled slope
    alpha = s.fit(np.ones(len(s.cells))).alpha
    assert s.primary_slope(np.ones(len(s.cells)), alpha) == pytest.approx(1.0)


def test_variance_components_and_power_add_up():
    row = synthetic(theory, DESIGN, queries=100).tables()["theory_primary"].iloc[0]
    parts = row[["var_seeds", "var_exemplar_sets", "var_queries"]].to_numpy(dtype=float)
    # one exemplar set per relation: drawing sets changes nothing
    assert parts[1] == pytest.approx(0.0, abs=1e-20) and parts[0] > 0 and parts[2] > 0
    # with fewer queries the same design has a wider interval and less power
    small = synthetic(theory, DESIGN, queries=25).tables()["theory_primary"].iloc[0]
    assert small["se"] > row["se"] and small["power"] < row["power"]
    # the factor of queries 80 % power needs says the same as the power: above 1 below 0.8
    for r in (row, small):
        assert (r["queries_for_power"] > 1) == (r["power"] < 0.8)
    target = (1 / (norm.ppf(0.975) + norm.ppf(0.8))) ** 2  # the variance 80 % power allows
    for r in (row, small):
        rest = r["var_seeds"] + r["var_exemplar_sets"]
        want = (r["se"] ** 2 - rest) / (target - rest) if target > rest else np.inf
        assert r["queries_for_power"] == pytest.approx(want)


def test_crossed_weights_draw_only_the_named_factors():
    cells = pd.DataFrame({"qid": ["a", "b", "a", "b"], "relation": ["P1"] * 4,
                          "seed": [0, 0, 1, 1], "prompt": [0, 0, 0, 0]})
    rng = np.random.default_rng(1)
    queries_only = crossed_weights(cells, ("queries",))
    for _ in range(20):
        w = queries_only(rng)
        assert w[0] == w[2] and w[1] == w[3] and w.sum() == 4  # seeds keep weight 1
    with pytest.raises(KgfactError, match="unknown bootstrap factor"):
        crossed_weights(cells, ("prompts",))


def held_out(zero_shot: dict[str, float], **config) -> pd.DataFrame:
    """``theory_heldout`` of a zero-shot-only study with exact accuracies ``zero_shot``."""
    s = synthetic(theory, {}, queries=600, exact=True, zero_shot=zero_shot, **config)
    return s.tables()["theory_heldout"].set_index("set")


def test_held_out_mixtures_on_the_fitted_line_are_as_predicted():
    # fitted on FT-Known (0.7, u = 1) and FT-Unknown (0.3, u = -1): α = 0.2, c = 0.5, so
    # mix-25 (u = 0.5) is predicted 0.6 and mix-50 (u = 0) 0.5, as they answer
    t = held_out({**ZERO_SHOT, "mix-25": 0.6})
    assert list(t.index) == ["mix-25", "mix-50", "pooled"]
    assert t["u"].tolist()[:2] == [0.5, 0.0] and t["n_queries"].tolist() == [600] * 3
    assert t["predicted"].tolist() == pytest.approx([0.6, 0.5, 0.55])
    assert t["measured"].tolist() == pytest.approx([0.6, 0.5, 0.55])
    assert t["difference"].tolist() == pytest.approx([0, 0, 0], abs=1e-12)
    # equivalence: the interval of the difference lies inside +-margin
    assert ((-0.05 < t["ci_low"]) & (t["ci_high"] < 0.05)).all()
    assert t["outcome"].tolist() == ["as predicted"] * 3
    assert (t["p_value"] < 0.05).all() and t["dropped"].tolist() == [0] * 3
    assert set(t["fit_sets"]) == {"ft-known, ft-unknown"}


def test_a_held_out_mixture_off_the_line_contradicts_prediction_one():
    # mix-50 answers as FT-Known (0.7) where the fit says the midpoint (0.5): difference 0.2;
    # mix-25 is on the line; pooled, the mean difference is 0.1
    t = held_out({**ZERO_SHOT, "mix-25": 0.6, "mix-50": 0.7})
    assert t["difference"].tolist() == pytest.approx([0.0, 0.2, 0.1], abs=1e-12)
    assert t["outcome"].tolist() == ["as predicted", "contradicted", "contradicted"]
    assert t.loc["mix-50", "ci_low"] > 0.05 and t.loc["pooled", "ci_low"] > 0.05
    # every replicate outside the margin: p = 2 (0 + 1) / (300 + 1)
    assert t.loc["mix-50", "p_value"] == pytest.approx(2 / 301)


def test_fitting_on_every_set_holds_nothing_out():
    t = held_out({**ZERO_SHOT, "mix-25": 0.6},
                 fit_sets=("ft-known", "mix-25", "mix-50", "ft-unknown"))
    assert list(t.index) == ["pooled"] and t.loc["pooled", "outcome"] == "not measured"
    assert np.isnan(t.loc["pooled", "difference"])
    assert t.loc["pooled", "note"].startswith("no set held out")
