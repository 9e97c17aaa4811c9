"""The factuality gap's crossed paired bootstrap, Gekhman's clustered regression and findings,
on synthetic predictions and dynamics shaped like those evaluate and finetune write."""

from __future__ import annotations

import doctest
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import kgfact.gap
from kgfact.errors import KgfactError
from kgfact.gap import (NO_PROMPT, bootstrap_mean_ci, bootstrap_p, crossed_bootstrap,
                        crossed_contrast, factuality_gap, finding, gekhman_other_sets,
                        gekhman_regression, paired_cells)
from kgfact.prompts import SET_DEPENDENT


def predictions(correct, seeds=(0,), relations=("P17", "P36"), prompts=3, queries=8,
                strategy="random") -> pd.DataFrame:
    """Few-shot predictions of FT-Known and FT-Unknown at CONVERGENCE, one row per (set, seed,
    relation, exemplar set p, query), ``correct(set, seed, relation, p, query)`` deciding."""
    rows = []
    for name in ("ft-known", "ft-unknown"):
        owner = name if strategy in SET_DEPENDENT else "-"
        for s in seeds:
            for r in relations:
                for p in range(prompts):
                    for q in range(queries):
                        rows.append({
                            "model": f"{name}@convergence", "set": name, "seed": s,
                            "checkpoint": "convergence", "mode": "few-shot", "strategy": strategy,
                            "distribution": "id", "relation": r,
                            "prompt_id": f"few-shot/{strategy}/{owner}/{r}/{p}",
                            "qid": f"{r}-{q}", "correct": bool(correct(name, s, r, p, q)),
                            "abstained": False})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("strategy", ["random", "from-ft"])
def test_identical_models_have_a_zero_width_interval_only_when_paired(strategy):
    # both models answer alike, and how they answer varies with seed, exemplar set and query:
    # only a bootstrap applying one draw to both models sees no spread
    pattern = np.random.default_rng(7).random((2, 2, 3, 8)) < 0.5
    relations = ("P17", "P36")
    frame = predictions(lambda name, s, r, p, q: pattern[s, relations.index(r), p, q],
                        seeds=(0, 1), relations=relations, strategy=strategy)
    gap = factuality_gap(frame, n_boot=500).iloc[0]
    assert (gap["gap"], gap["ci_low"], gap["ci_high"]) == (0.0, 0.0, 0.0)
    assert (gap["n"], gap["n_seeds"], gap["n_prompts"]) == (16, 2, 3)
    assert gap["seeds"] == [0, 1] and gap["seed_gaps"] == [0.0, 0.0]
    assert gap["acc_known"] == gap["acc_unknown"] == pattern.mean()
    # the same data resampled apart for each model gives a wide interval
    cells = paired_cells(frame)
    apart = (crossed_bootstrap(cells.assign(d=cells["known"]), 500, 1)
             - crossed_bootstrap(cells.assign(d=cells["unknown"]), 500, 2))
    low, high = np.percentile(apart, [2.5, 97.5])
    assert low < -0.1 and high > 0.1


@pytest.mark.parametrize("factor", ["seed", "prompt"])
def test_interval_resamples_seeds_and_exemplar_sets(factor):
    # FT-Known beats FT-Unknown on every query under seed (exemplar set) 0 and ties under 1:
    # the gap's uncertainty is all in which seeds (exemplar sets) were drawn
    if factor == "seed":
        frame = predictions(lambda name, s, r, p, q: name == "ft-known" or s == 1,
                            seeds=(0, 1), relations=("P17",), prompts=2, queries=10)
    else:
        frame = predictions(lambda name, s, r, p, q: name == "ft-known" or p == 1,
                            prompts=2, queries=10)
    gap = factuality_gap(frame, n_boot=2000).iloc[0]
    assert (gap["gap"], gap["ci_low"], gap["ci_high"]) == (0.5, 0.0, 1.0)
    assert gap["finding"] == "inconclusive"
    assert gap["seed_gaps"] == ([1.0, 0.0] if factor == "seed" else [0.5])
    # a bootstrap over queries alone (every query's gap is 0.5) sees no uncertainty at all
    cells = paired_cells(frame)
    per_query = (cells["known"] - cells["unknown"]).groupby(cells["qid"]).mean()
    assert bootstrap_mean_ci(per_query.to_numpy()) == (0.5, 0.5)


def test_gap_point_estimates_exactly():
    known = {0: [[1, 1, 0], [1, 0, 0]], 1: [[1, 1, 1], [1, 1, 0]]}  # seed -> p -> query
    unknown = {0: [[0, 1, 0], [0, 0, 0]], 1: [[1, 0, 0], [1, 0, 0]]}
    table = {"ft-known": known, "ft-unknown": unknown}
    frame = predictions(lambda name, s, r, p, q: table[name][s][p][q], seeds=(0, 1),
                        relations=("P17",), prompts=2, queries=3)
    only_known = frame.iloc[:1].assign(qid="P17-9")  # a query FT-Unknown never answered
    base = frame.iloc[:1].assign(set=None, model="base", correct=False)
    gap = factuality_gap(pd.concat([frame, only_known, base]), n_boot=200).iloc[0]
    assert gap["acc_known"] == pytest.approx(8 / 12)
    assert gap["acc_unknown"] == pytest.approx(3 / 12)
    assert gap["gap"] == pytest.approx(5 / 12)
    assert gap["seed_gaps"] == pytest.approx([2 / 6, 3 / 6])
    assert (gap["n"], gap["n_seeds"], gap["n_prompts"]) == (3, 2, 2)
    # without a seed column the table is one seed, labelled 0
    single = factuality_gap(frame.drop(columns="seed"), n_boot=200).iloc[0]
    assert single["gap"] == pytest.approx(5 / 12) and single["seeds"] == [0]
    assert single["n_seeds"] == 1 and single["seed_gaps"] == pytest.approx([5 / 12])
    with pytest.raises(KgfactError, match="needs predictions of both"):
        factuality_gap(frame[frame["set"] == "ft-known"])


@pytest.mark.parametrize("known_right, expected", [(True, "supported"),
                                                   (False, "contradicted")])
def test_gap_finding_column(known_right, expected):
    frame = predictions(lambda name, s, r, p, q: (name == "ft-known") == known_right)
    gap = factuality_gap(frame, n_boot=200).iloc[0]
    sign = 1.0 if known_right else -1.0
    assert (gap["gap"], gap["ci_low"], gap["ci_high"], gap["finding"]) == (
        sign, sign, sign, expected)


def test_crossed_bootstrap_is_the_weighted_mean_of_each_draw(monkeypatch):
    # unbalanced on purpose: missing cells, relations with different exemplar-set counts
    rng = np.random.default_rng(3)
    cells = pd.DataFrame([(s, r, str(p), f"{r}-{q}", rng.integers(-1, 2))
                          for s in (4, 9) for r, n_p in (("P17", 2), ("P36", 3))
                          for p in range(n_p) for q in range(5)],
                         columns=["seed", "relation", "prompt", "qid", "d"])
    cells = cells.drop(index=rng.choice(len(cells), 12, replace=False)).reset_index(drop=True)
    draws = []  # the seeds' draw, then per relation (in order) the exemplar sets' and queries'
    original = kgfact.gap._draw_counts

    def recorded(*args):
        draws.append(original(*args))
        return draws[-1]

    monkeypatch.setattr(kgfact.gap, "_draw_counts", recorded)
    replicates = crossed_bootstrap(cells, n_boot=50, seed=5)
    w_seed, by_relation = draws[0], dict(zip(("P17", "P36"), zip(draws[1::2], draws[2::2])))
    expected = []
    for b in range(50):
        weights = np.array([
            w_seed[b, [4, 9].index(c.seed)] * by_relation[c.relation][0][b, int(c.prompt)]
            * by_relation[c.relation][1][b, int(c.qid.split("-")[1])]
            for c in cells.itertuples()])
        expected.append((weights * cells["d"]).sum() / weights.sum())
    assert replicates == pytest.approx(np.array(expected), nan_ok=True)
    assert all(d.sum(axis=1).tolist() == [d.shape[1]] * 50 for d in draws)


def test_a_zero_shot_placeholder_leaves_each_relations_exemplar_weight_fixed():
    # zero-shot gap 0.5 everywhere; few-shot gap 1 in P17 and 0 in P36, alike under both of a
    # relation's exemplar sets. However its two real exemplar sets are drawn, each relation keeps
    # the weight of two sets, so the few-shot gap is 0.5 in every replicate. Drawing the
    # zero-shot placeholder with them gave each relation a random few-shot weight (0 to 3 sets)
    # and a wide interval, and dropped the replicates that gave both relations none.
    cells = pd.DataFrame(
        [("zero", 0, r, NO_PROMPT, f"{r}-{q}", 0.5) for r in ("P17", "P36") for q in range(4)]
        + [("few", 0, r, p, f"{r}-{q}", float(r == "P17")) for r in ("P17", "P36")
           for p in ("0", "1") for q in range(4)],
        columns=["mode", "seed", "relation", "prompt", "qid", "d"])
    got = crossed_contrast(cells, "mode", "zero", "few", n_boot=500)
    assert (got.estimate, got.ci_low, got.ci_high, got.dropped) == (0.0, 0.0, 0.0, 0)


# -- Gekhman's regression --------------------------------------------------------------------------
B0, B_KN, B_UNK = 0.2, 0.5, -0.3
GRID = {"ft-known": 0, "mix-25": 10, "mix-50": 20, "mix-75": 30, "ft-unknown": 40}  # N_unk
GRID_SETS = {name: (40 - n, n) for name, n in GRID.items()}  # set -> (n_known, n_unknown)
OTHER = {"highly-known": (40, 0), "unknown": (0, 40), "natural": (30, 10),
         "idk-relabel": (20, 20), "filtered": (20, 0)}  # set -> (n_known, n_unknown)


def dynamics(sets: dict[str, tuple[int, int]], seeds=(0, 1), epochs=4, noise=None
             ) -> pd.DataFrame:
    """Dynamics rows like finetune's: epoch 0 is the base model (it fits half of each set's
    Known examples), later epochs fit more of both kinds; test accuracy on Gekhman's line
    (the base model's at the mean of the grid sets' epoch-0 fits), plus ``noise(set, seed,
    epoch)``. Sets outside the grid get accuracy 0.95, far off the line."""
    rows = []
    for name, (n_known, n_unknown) in sets.items():
        for s in seeds:
            for e in range(epochs + 1):
                known_fit = round(n_known * min(1.0, 0.5 + 0.15 * e + 0.05 * s))
                unknown_fit = round(n_unknown * min(1.0, 0.2 * e + 0.05 * s * (e > 0)))
                rows.append({"set": name, "seed": s, "epoch": e, "loss": 1.0 / (e + 1),
                             "n_known": n_known, "n_unknown": n_unknown,
                             "n_known_fit": known_fit, "n_unknown_fit": unknown_fit,
                             "dev_accuracy": 0.3, "early_stop": e == 2,
                             "convergence": e == epochs})
    frame = pd.DataFrame(rows)
    size = frame["n_known"] + frame["n_unknown"]
    line = B0 + B_KN * frame["n_known_fit"] / size + B_UNK * frame["n_unknown_fit"] / size
    base_line = line[(frame["epoch"] == 0) & frame["set"].isin(GRID)].mean()
    accuracy = line.where(frame["epoch"] > 0, base_line)
    if noise is not None:
        accuracy += [noise(r.set, r.seed, r.epoch) for r in frame.itertuples()]
    return frame.assign(test_accuracy=accuracy.where(frame["set"].isin(GRID), 0.95))



def design(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The expected fit's X, y and clusters: every trained grid point, and the base model once
    at the mean of the grid sets' epoch-0 rows."""
    grid = frame[frame["set"].isin(GRID)]
    size = grid["n_known"] + grid["n_unknown"]
    x = np.column_stack([np.ones(len(grid)), grid["n_known_fit"] / size,
                         grid["n_unknown_fit"] / size])
    untrained = (grid["epoch"] == 0).to_numpy()
    y = grid["test_accuracy"].to_numpy()
    clusters = (grid["set"] + "/" + grid["seed"].astype(str)).to_numpy()
    return (np.vstack([x[untrained].mean(axis=0), x[~untrained]]),
            np.concatenate([[y[untrained].mean()], y[~untrained]]),
            np.concatenate([["base"], clusters[~untrained]]))


def clustered(x, y, clusters):
    """OLS coefficients and the cluster-robust covariance with the small-sample factor
    G/(G-1) (N-1)/(N-K), written out."""
    bread = np.linalg.inv(x.T @ x)
    coef = bread @ x.T @ y
    u = y - x @ coef
    scores = [x[clusters == g].T @ u[clusters == g] for g in np.unique(clusters)]
    meat = sum(np.outer(s, s) for s in scores)
    (n, k), g = x.shape, len(scores)
    return coef, bread @ meat @ bread * g / (g - 1) * (n - 1) / (n - k)


def test_gekhman_recovers_exact_coefficients_from_the_grid_alone():
    frame = dynamics(GRID_SETS | OTHER)
    table = gekhman_regression(frame).set_index("term")
    assert table["coef"].tolist() == pytest.approx([B0, B_KN, B_UNK], abs=1e-12)
    assert table["r_squared"].iloc[0] == pytest.approx(1.0)
    # 5 sets x 2 seeds x 4 trained epochs, and the base model once; 10 clusters and the base
    assert (table["n_points"].iloc[0], table["n_clusters"].iloc[0]) == (41, 11)
    assert table["sets"].iloc[0] == "ft-known,ft-unknown,mix-25,mix-50,mix-75"
    assert table["finding"].tolist()[1:] == ["supported", "supported"]
    assert table["expected"].tolist()[1:] == ["above", "below"]
    assert table[["expected", "finding"]].iloc[0].isna().all()  # no claim about the intercept
    other = gekhman_other_sets(frame)
    assert sorted(set(other["set"])) == sorted(OTHER) and len(other) == 5 * 2 * 4
    line = B0 + B_KN * other["known_fit"] + B_UNK * other["unknown_fit"]
    assert other["predicted"].to_numpy() == pytest.approx(line.to_numpy(), abs=1e-12)
    assert other["residual"].to_numpy() == pytest.approx((0.95 - line).to_numpy(), abs=1e-12)
    assert gekhman_other_sets(dynamics(GRID_SETS)).empty


def test_gekhman_noisy_fit_is_clustered_ols_with_the_base_model_once():
    rng = np.random.default_rng(11)
    effects = {(name, s): rng.normal(0, 0.02) for name in GRID for s in (0, 1, 2)}
    frame = dynamics(GRID_SETS | OTHER, seeds=(0, 1, 2),
                     noise=lambda name, s, e: effects.get((name, s), 0) + rng.normal(0, 0.01))
    table = gekhman_regression(frame).set_index("term")
    x, y, clusters = design(frame)
    coef, cov = clustered(x, y, clusters)
    se = np.sqrt(np.diag(cov))
    half = stats.t.ppf(0.975, len(set(clusters)) - 1) * se
    assert table["coef"].to_numpy() == pytest.approx(coef, rel=1e-9)
    assert table["std_err"].to_numpy() == pytest.approx(se, rel=1e-9)
    assert table["ci_low"].to_numpy() == pytest.approx(coef - half, rel=1e-9)
    assert table["ci_high"].to_numpy() == pytest.approx(coef + half, rel=1e-9)
    assert (table["ci_low"] < [B0, B_KN, B_UNK]).all()
    assert (table["ci_high"] > [B0, B_KN, B_UNK]).all()
    assert (table["n_points"].iloc[0], table["n_clusters"].iloc[0]) == (61, 16)
    other = gekhman_other_sets(frame)
    xo = np.column_stack([np.ones(len(other)), other["known_fit"], other["unknown_fit"]])
    half_o = (stats.t.ppf(0.975, len(set(clusters)) - 1)
              * np.sqrt(np.einsum("ij,jk,ik->i", xo, cov, xo)))
    assert other["pred_ci_low"].to_numpy() == pytest.approx(xo @ coef - half_o, rel=1e-9)
    assert other["pred_ci_high"].to_numpy() == pytest.approx(xo @ coef + half_o, rel=1e-9)


def test_gekhman_needs_four_clusters_of_the_grid():
    two_sets = {k: GRID_SETS[k] for k in ("ft-known", "ft-unknown")}
    with pytest.raises(KgfactError, match="in at least 4 .* have 9 points in 3"):
        gekhman_regression(dynamics(two_sets, seeds=(0,)))
    assert gekhman_regression(dynamics(two_sets, seeds=(0, 1)))["n_clusters"].iloc[0] == 5
    with pytest.raises(KgfactError, match="have 0 points"):
        gekhman_other_sets(dynamics(OTHER))


# -- Gekhman's regression: test questions resampled too ---------------------------------------
BOOT = ["boot_ci_low", "boot_ci_high", "boot_p_value", "boot_dropped"]
CLUSTERED = ["term", "coef", "std_err", "t", "p_value", "ci_low", "ci_high", "r_squared",
             "n_points", "n_clusters", "accuracy", "sets", "expected"]


def with_questions(frame: pd.DataFrame, correct) -> pd.DataFrame:
    """``frame`` with the per-question record finetune writes: ``correct(row)`` gives each row's
    correctness on the same test questions, and ``test_accuracy`` is its mean."""
    bits = [np.asarray(correct(r), dtype=bool) for r in frame.itertuples()]
    qids = json.dumps([f"P36/Q{j:02d}" for j in range(len(bits[0]))])  # sorted as listed
    return frame.assign(test_qids=qids, test_accuracy=[float(b.mean()) for b in bits],
                        test_correct=["".join("1" if ok else "0" for ok in b) for b in bits])


def line(b_unk: float):
    """A row's accuracy on a line with Unknown slope ``b_unk``."""
    return lambda r: 0.3 + 0.3 * r.n_known_fit / 40 + b_unk * r.n_unknown_fit / 40


def thresholds(b_unk: float, n: int = 30):
    """Question j is answered right when the row's line lies above (j + 0.5) / n: accuracies
    on the line to within a question, but which questions are drawn moves every point."""
    return lambda r: line(b_unk)(r) > (np.arange(n) + 0.5) / n


def slow_boot(frame: pd.DataFrame, n_boot: int, seed: int) -> np.ndarray:
    """The crossed bootstrap written out: per replicate, each drawn cluster's points repeated
    as often as it was drawn, each point's accuracy the mean over the drawn questions (repeats
    included) of its rows' correctness, and OLS by least squares. Draws as the module draws
    them: clusters (sorted) from the first seeded stream, questions from the second."""
    x, _, clusters = design(frame)
    grid = frame[frame["set"].isin(GRID)]
    bits = np.array([[c == "1" for c in s] for s in grid["test_correct"]], dtype=float)
    untrained = (grid["epoch"] == 0).to_numpy()
    by_point = np.vstack([bits[untrained].mean(axis=0), bits[~untrained]])
    labels = np.unique(clusters)
    cluster_rng, question_rng = map(np.random.default_rng, np.random.SeedSequence(seed).spawn(2))
    draws = zip(kgfact.gap._draw_counts(cluster_rng, len(labels), n_boot).astype(int),
                kgfact.gap._draw_counts(question_rng, bits.shape[1], n_boot).astype(int))
    out = []
    for w_cluster, w_question in draws:
        y = by_point[:, np.repeat(np.arange(bits.shape[1]), w_question)].mean(axis=1)
        take = np.concatenate([np.tile(np.flatnonzero(clusters == g), m)
                               for g, m in zip(labels, w_cluster)])
        out.append(np.linalg.lstsq(x[take], y[take], rcond=None)[0])
    return np.array(out)


def test_gekhman_question_noise_widens_the_interval_and_decides_the_finding():
    """Every point's accuracy lies on the line to within one of its 30 questions, so the
    clustered interval is narrow and finds b_unk = -0.05 below 0; which questions were drawn
    moves every point, and with them resampled the interval covers 0."""
    frame = with_questions(dynamics(GRID_SETS | OTHER, seeds=(0, 1), epochs=3),
                           thresholds(-0.05))
    table = gekhman_regression(frame, n_boot=1000).set_index("term")
    assert (table["ci_high"].loc["unknown_fit"] < 0
            and finding(*table.loc["unknown_fit", ["coef", "ci_low", "ci_high"]], "below")
            == "supported")
    clustered = table["ci_high"] - table["ci_low"]
    assert ((table["boot_ci_high"] - table["boot_ci_low"]) > 3 * clustered).all()
    assert table["finding"].tolist()[1:] == ["supported", "inconclusive"]
    assert table.loc["unknown_fit", "boot_ci_low"] < 0 < table.loc["unknown_fit", "boot_ci_high"]
    assert (table[["n_questions", "n_boot", "boot_dropped"]].to_numpy() == [30, 1000, 0]).all()
    assert (table["note"] == "ci_low/ci_high: clustered by (set, seed); boot_ci_low/"
            "boot_ci_high: crossed bootstrap over the 11 clusters and the 30 test questions, "
            "which decides the finding").all()
    # the replicates are the slow refits, drawn from the seed
    want = np.percentile(slow_boot(frame, 1000, 0), [2.5, 97.5], axis=0)
    assert table["boot_ci_low"].to_numpy() == pytest.approx(want[0], rel=1e-9)
    assert table["boot_ci_high"].to_numpy() == pytest.approx(want[1], rel=1e-9)
    pd.testing.assert_frame_equal(gekhman_regression(frame, n_boot=1000),
                                  table.reset_index())
    assert not np.array_equal(gekhman_regression(frame, n_boot=1000, seed=1)["boot_ci_low"],
                              table["boot_ci_low"])
    # the other sets' predictions get the same replicates' interval, wider than the clustered
    other = gekhman_other_sets(frame, n_boot=1000)
    x = np.column_stack([np.ones(len(other)), other["known_fit"], other["unknown_fit"]])
    low, high = np.percentile(x @ slow_boot(frame, 1000, 0).T, [2.5, 97.5], axis=1)
    assert other["boot_pred_ci_low"].to_numpy() == pytest.approx(low, rel=1e-9)
    assert other["boot_pred_ci_high"].to_numpy() == pytest.approx(high, rel=1e-9)
    assert ((other["boot_pred_ci_high"] - other["boot_pred_ci_low"])
            > (other["pred_ci_high"] - other["pred_ci_low"])).all()


def test_gekhman_questions_answered_alike_add_nothing_to_the_cluster_bootstrap():
    """A row answers all its questions alike: drawing questions changes no point, so the
    interval is the cluster bootstrap's, exactly (one question is that bootstrap)."""
    def alike(n):
        return lambda r: [line(-0.3)(r) > 0.45] * n

    frame = dynamics(GRID_SETS, seeds=(0, 1, 2), epochs=3)
    thirty = gekhman_regression(with_questions(frame, alike(30)), n_boot=500)
    one = gekhman_regression(with_questions(frame, alike(1)), n_boot=500)
    assert (thirty["n_questions"].iloc[0], one["n_questions"].iloc[0]) == (30, 1)
    pd.testing.assert_frame_equal(thirty[CLUSTERED + BOOT + ["finding"]],
                                  one[CLUSTERED + BOOT + ["finding"]], check_exact=True)
    want = np.percentile(slow_boot(with_questions(frame, alike(1)), 500, 0), [2.5, 97.5], axis=0)
    assert one["boot_ci_low"].to_numpy() == pytest.approx(want[0], rel=1e-9)
    assert one["boot_ci_high"].to_numpy() == pytest.approx(want[1], rel=1e-9)


def test_gekhman_without_per_question_correctness_is_the_clustered_table_with_a_note():
    """Dynamics from before kgfact recorded each test question (or a run resumed across that
    change): the clustered table as it was, its findings from the clustered interval."""
    frame = with_questions(dynamics(GRID_SETS | OTHER, seeds=(0, 1), epochs=3),
                           thresholds(-0.05))
    new = gekhman_regression(frame, n_boot=200)
    old = gekhman_regression(frame.drop(columns=["test_qids", "test_correct"]), n_boot=200)
    assert old.columns.tolist() == CLUSTERED + ["finding", "note"]
    pd.testing.assert_frame_equal(old[CLUSTERED], new[CLUSTERED], check_exact=True)
    assert old["finding"].tolist()[1:] == ["supported", "supported"]  # as before: clustered
    assert (old["note"] == "question noise not included: 40 of the 40 dynamics rows behind "
            "the grid points have no per-question correctness (test_correct; trained before "
            "kgfact recorded it); the finding uses the clustered interval").all()
    resumed = frame.assign(test_correct=frame["test_correct"].where(frame["epoch"] > 1))
    assert gekhman_regression(resumed, n_boot=200)["note"].iloc[0].startswith(
        "question noise not included: 20 of the 40 dynamics rows")
    other = gekhman_other_sets(frame.drop(columns=["test_qids", "test_correct"]))
    assert other.columns.tolist() == [
        "set", "seed", "epoch", "known_fit", "unknown_fit", "accuracy", "predicted",
        "pred_ci_low", "pred_ci_high", "residual", "note"]
    pd.testing.assert_frame_equal(other.drop(columns="note"), gekhman_other_sets(frame).drop(
        columns=["boot_pred_ci_low", "boot_pred_ci_high", "note"]), check_exact=True)


# -- findings --------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, verdict", [
    ((0.3, 0.1, 0.5), "supported"),
    ((0.3, 0.1, 0.5, "below"), "contradicted"),
    ((-0.3, -0.5, -0.1), "contradicted"),
    ((-0.3, -0.5, -0.1, "below"), "supported"),
    ((0.3, 0.0, 0.5), "inconclusive"),           # touching the threshold is not beyond it
    ((0.3, -0.1, 0.5), "inconclusive"),
    ((0.3, 0.2, 0.5, "above", 0.25), "inconclusive"),
    ((0.3, 0.26, 0.5, "above", 0.25), "supported"),
    ((0.3, 0.1, 0.2, "below", 0.25), "supported"),
    ((-5.0, 0.1, 0.5), "supported"),             # the estimate never decides
    ((5.0, -0.5, -0.1), "contradicted"),
    ((np.nan, np.nan, np.nan), "inconclusive"),  # nothing measured
    ((0.3, np.nan, 0.5), "inconclusive"),
])
def test_finding(args, verdict):
    assert finding(*args) == verdict


@pytest.mark.parametrize("args, verdict", [
    ((0.01, -0.02, 0.03), "supported"),          # a tight interval inside +-0.05
    ((-0.3, -0.5, -0.1), "contradicted"),        # a large negative gap is not negligible
    ((0.3, 0.1, 0.5), "contradicted"),
    ((0.0, -0.3, 0.3), "inconclusive"),          # containing 0 is not equivalence
    ((-0.04, -0.08, 0.0), "inconclusive"),       # reaching past one end of the margin
    ((0.0, -0.05, 0.02), "inconclusive"),        # touching the margin is not inside it
    ((0.2, 0.05, 0.3), "inconclusive"),          # touching it is not beyond it either
    ((0.5, 0.42, 0.45, 0.5, 0.1), "supported"),  # threshold 0.5, margin 0.1
    ((0.5, 0.35, 0.45, 0.5, 0.1), "inconclusive"),
    ((np.nan, np.nan, np.nan), "inconclusive"),
])
def test_finding_of_equivalence_is_two_one_sided_tests(args, verdict):
    estimate, low, high, *rest = args
    threshold, margin = rest or (0.0, 0.05)
    assert finding(estimate, low, high, "equal", threshold, margin) == verdict
    if not rest:  # 0.05 is the default margin
        assert finding(estimate, low, high, "equal") == verdict


def test_bootstrap_p_of_each_decision():
    reps = np.array([-0.2, -0.1, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, np.nan])
    # two-sided against 0: 3 of the 9 finite replicates are <= 0, 7 are >= 0; add-one
    assert bootstrap_p(reps, "above") == pytest.approx(2 * (1 + 3) / 10)
    assert bootstrap_p(reps, "below") == bootstrap_p(reps, "above")
    assert bootstrap_p(reps, "above", threshold=0.45) == pytest.approx(2 * (1 + 2) / 10)
    assert bootstrap_p(np.full(7, 0.0), "above") == 1.0  # all replicates on the threshold
    assert bootstrap_p(np.full(199, 0.3), "above") == pytest.approx(2 / 200)
    # equal, margin 0.25: at or below -0.25 none, at or above 0.25 four (TOST p 5/10); at or
    # above -0.25 all nine, at or below 0.25 five (outside-the-margin p 6/10)
    assert bootstrap_p(reps, "equal", margin=0.25) == pytest.approx(1.0)
    tight = np.array([-0.01, 0.0, 0.02, 0.01] * 50)
    assert bootstrap_p(tight, "equal", margin=0.05) == pytest.approx(2 * 1 / 201)
    far = np.array([-0.4, -0.3, -0.5] * 60)
    assert bootstrap_p(far, "equal", margin=0.05) == pytest.approx(2 * 1 / 181)
    # p < 0.05 exactly where the verdict is decided
    for r in (reps, tight, far, np.full(199, 0.3)):
        for expected in ("above", "equal"):
            low, high = np.nanpercentile(r, [2.5, 97.5])
            decided = finding(0.0, low, high, expected) != "inconclusive"
            assert (bootstrap_p(r, expected) < 0.05) == decided, (r, expected)
    assert np.isnan(bootstrap_p(np.full(5, np.nan), "above"))


def test_finding_rejects_bad_arguments():
    with pytest.raises(KgfactError, match="expected 'up': use above, below or equal"):
        finding(0.3, 0.1, 0.5, "up")
    with pytest.raises(KgfactError, match="equivalence margin 0.0: use a positive margin"):
        finding(0.3, 0.1, 0.5, "equal", margin=0.0)
    with pytest.raises(KgfactError, match=r"interval \[0.5, 0.1\] has its low end above"):
        finding(0.3, 0.5, 0.1)


def test_doctests():
    assert doctest.testmod(kgfact.gap).failed == 0
