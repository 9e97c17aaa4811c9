"""The findings table: contrasts paired by one crossed draw, verdicts from intervals, exact
values on a synthetic run, and claims a run cannot measure said so."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import kgfact.gap
from kgfact.cli import main
from kgfact.findings import CLAIMS, findings, holm
from kgfact.gap import NO_PROMPT, crossed_contrast
from kgfact.rundir import RunDir


def cells(d_of, seeds=(0, 1, 2), relations=("P17", "P36"), prompts=(0, 1), queries=6,
          groups=("a", "b")) -> pd.DataFrame:
    """One row per (group, seed, relation, prompt, query) with ``d = d_of(group, s, r, p, q)``."""
    return pd.DataFrame([{"g": g, "seed": s, "relation": r, "prompt": p, "qid": f"{r}-{q}",
                          "d": d_of(g, s, r, p, q)}
                         for g in groups for s in seeds for r in relations for p in prompts
                         for q in range(queries)])


def test_a_contrast_of_paired_cells_has_no_spread_from_what_they_share():
    # the same noisy cells in both groups, shifted by 0.5: each draw weighs them alike
    rng = np.random.default_rng(3)
    noise = {k: rng.random() for k in range(1000)}
    frame = cells(lambda g, s, r, p, q: noise[hash((s, r, p, q)) % 1000] + (g == "a") * 0.5)
    estimate, low, high = crossed_contrast(frame, "g", "a", "b", n_boot=300)[:3]
    assert (estimate, low, high) == pytest.approx((0.5, 0.5, 0.5))
    # the two groups drawn apart (other queries in each) are not paired: a real spread
    apart = frame.assign(qid=frame["qid"] + frame["g"])
    _, low, high = crossed_contrast(apart, "g", "a", "b", n_boot=300)[:3]
    assert high - low > 0.1


def test_a_contrast_resamples_seeds():
    # every query and exemplar set alike; group a's advantage is 1 under seed 0, 0 otherwise
    frame = cells(lambda g, s, r, p, q: float(g == "a" and s == 0))
    estimate, low, high = crossed_contrast(frame, "g", "a", "b", n_boot=4000)[:3]
    assert estimate == pytest.approx(1 / 3)
    # drawing seed 0 never (prob. 8/27) or three times (1/27, above 2.5 %): the interval is
    # [0, 1]; a bootstrap of queries alone would see no spread at all
    assert (low, high) == (0.0, 1.0)


def test_a_prompt_without_exemplars_is_never_resampled():
    # zero-shot (no exemplar set) against few-shot whose two exemplar sets differ by 1
    zero = cells(lambda g, s, r, p, q: 0.5, groups=("zero",), prompts=(NO_PROMPT,))
    few = cells(lambda g, s, r, p, q: float(p == 0), groups=("few",))
    frame = pd.concat([zero, few], ignore_index=True)
    estimate, low, high = crossed_contrast(frame, "g", "zero", "few", n_boot=500)[:3]
    assert estimate == 0.0
    # the spread is the few-shot exemplar sets' alone: P17 and P36 each draw both sets twice
    # with probability 1/4 (gap -0.5 or +0.5 in that relation): the interval is [-0.5, 0.5]
    assert (low, high) == (-0.5, 0.5)
    assert np.isnan(crossed_contrast(frame, "g", "zero", "missing")[:3]).all()


def _prediction_rows(set_, checkpoint, mode, distribution, relation, correct, seeds=(0, 1, 2),
                     prompts=(0, 1), queries=5):
    strategy = "none" if mode == "zero-shot" else "random"
    return [{"model": f"{set_}@{checkpoint}/seed-{s}", "set": set_, "seed": s,
             "checkpoint": checkpoint, "mode": mode, "strategy": strategy,
             "distribution": distribution, "relation": relation,
             "prompt_id": f"{mode}/{strategy}/-/{relation}/{p}", "qid": f"{relation}-{q}",
             "correct": bool(correct(s, q)), "abstained": False,
             "memorised": set_ == "ft-unknown" and s == 1}
            for s in seeds for p in (prompts if mode != "zero-shot" else (0,))
            for q in range(queries)]


@pytest.fixture
def run(tmp_path):
    """FT-Known right on every in-distribution query at CONVERGENCE and FT-Unknown wrong; at
    EARLY_STOP both right; near-ID (P131) both right; few-shot both right; no CoT, no OOD."""
    rows = []
    for set_ in ("ft-known", "ft-unknown"):
        known = set_ == "ft-known"
        rows += _prediction_rows(set_, "convergence", "zero-shot", "id", "P36",
                                 lambda s, q: known)
        rows += _prediction_rows(set_, "early_stop", "zero-shot", "id", "P36",
                                 lambda s, q: True)
        rows += _prediction_rows(set_, "convergence", "zero-shot", "near-id", "P131",
                                 lambda s, q: True)
        rows += _prediction_rows(set_, "convergence", "few-shot", "id", "P36",
                                 lambda s, q: True)
    run = RunDir(tmp_path / "run").create()
    with run.stage("evaluate", {"evaluate": {"bootstrap": 200, "strategies": ["random"]}}):
        pass  # the manifest entry findings read their settings from
    predictions = pd.DataFrame(rows)
    run.write_table("predictions", predictions)
    from kgfact.gap import factuality_gap

    run.write_table("gap", factuality_gap(predictions, n_boot=200))
    run.write_table("dynamics", pd.DataFrame({
        "set": ["ft-unknown", "ft-known"], "seed": [1, 0], "epoch": [4, 3],
        "early_stop": [False, True], "convergence": [True, True],
        "epoch_limit": [True, False], "memorised_rate": [0.75, 0.1], "n_known": [0, 8],
        "n_unknown": [8, 0], "test_accuracy": [0.2, 0.4]}))
    return run


def test_findings_on_a_synthetic_run(run):
    table = findings(run, n_boot=200).set_index("claim")
    assert list(table.index) == [c.name for c in CLAIMS]
    want = {  # claim: (estimate, ci_low, ci_high, verdict)
        "unknown-hurts-at-convergence": (1.0, 1.0, 1.0, "supported"),
        "unknown-harmless-at-early-stop": (0.0, 0.0, 0.0, "supported"),
        "gap-widens-with-training": (1.0, 1.0, 1.0, "supported"),
        "gap-shrinks-near-id": (1.0, 1.0, 1.0, "supported"),
        "few-shot-shrinks-gap": (1.0, 1.0, 1.0, "supported"),
    }
    for claim, (estimate, low, high, verdict) in want.items():
        row = table.loc[claim]
        assert (row["estimate"], row["ci_low"], row["ci_high"], row["verdict"]) == (
            estimate, low, high, verdict), claim
    for claim, note in (("gap-shrinks-ood", "no cells for ood"),
                        ("cot-shrinks-gap", "no cells for cot"),
                        ("known-fit-raises-accuracy", "no regression table"),
                        ("theory-tracks-reductions", "no theory_stats table"),
                        ("idk-raises-answered-accuracy", "idk-relabel was not evaluated")):
        assert table.loc[claim, "verdict"] == "not measured"
        assert note in table.loc[claim, "note"]
    # the recipe's artefacts are named beside the claims they bear on
    caveat = table.loc["unknown-hurts-at-convergence", "caveat"]
    assert "epoch limit before the set was fitted for ft-unknown/seed-1" in caveat
    # seed 1 of FT-Unknown gives its own training answers, all wrong at CONVERGENCE
    assert "wrong answers are the model's own training answers" in caveat
    # (no questions in this run: nothing to expect from confusion within a relation)
    assert "ft-unknown/seed-1 (1.00, against 0.00 from" in caveat and "seed-0 (" not in caveat
    assert table.loc["unknown-harmless-at-early-stop", "caveat"] == ""


def test_the_collapse_caveat_allows_for_confusion_within_a_closed_answer_set(run):
    # FT-Unknown seed 1 answers every wrong in-distribution query with a training answer (rate
    # 1.00). Five capitals, a set trained on two: a wrong answer drawn from a query's other gold
    # answers is a training answer 1/4 (gold City0, City1) or 2/4 (City2-4) of the time: 0.40
    run.write_table("qa", pd.DataFrame({"qid": [f"P36-{q}" for q in range(5)],
                                        "relation": "P36",
                                        "answer": [f"City{q}" for q in range(5)]}))
    run.write_table("ftsets/ft-unknown", pd.DataFrame({"qid": ["t0", "t1"],
                                                       "answer": ["City0", "City1"]}))
    caveat = findings(run, n_boot=50).set_index("claim").loc["unknown-hurts-at-convergence",
                                                               "caveat"]
    assert ("ft-unknown/seed-1 (1.00, against 0.40 from confusing answers within the relation)"
            in caveat)
    # two answers shared by all questions, both trained on: any wrong answer is a training
    # answer, so the same rate is no sign of collapse
    run.write_table("qa", pd.DataFrame({"qid": [f"P36-{q}" for q in range(5)],
                                        "relation": "P36",
                                        "answer": [f"City{q % 2}" for q in range(5)]}))
    caveat = findings(run, n_boot=50).set_index("claim").loc["unknown-hurts-at-convergence",
                                                               "caveat"]
    assert "collapse" not in caveat and "epoch limit" in caveat


def test_a_contradicted_claim_and_the_report_command(run, capsys):
    predictions = run.read_table("predictions")
    # FT-Unknown now right and FT-Known wrong at CONVERGENCE, zero-shot, in distribution
    flip = ((predictions["checkpoint"] == "convergence") & (predictions["mode"] == "zero-shot")
            & (predictions["distribution"] == "id"))
    predictions.loc[flip, "correct"] = predictions.loc[flip, "set"] == "ft-unknown"
    run.write_table("predictions", predictions)
    from kgfact.gap import factuality_gap

    run.write_table("gap", factuality_gap(predictions, n_boot=200))
    assert main(["report", str(run.path)]) == 0
    out = capsys.readouterr().out
    table = run.read_table("findings").set_index("claim")
    assert table.loc["unknown-hurts-at-convergence", "verdict"] == "contradicted"
    assert table.loc["gap-widens-with-training", "estimate"] == -1.0
    assert "unknown-hurts-at-convergence" in out and "contradicted" in out
    assert "| unknown" not in (run.path / "report.md").read_text()  # claim ids are not shown
    assert "Fine-tuning on Unknown facts lowers" in (run.path / "report.md").read_text()


def _replace_rows(run, where, rows):
    """Replace the predictions matching ``where(predictions)`` with ``rows``, and the gap."""
    predictions = run.read_table("predictions")
    predictions = pd.concat([predictions[~where(predictions)], pd.DataFrame(rows)],
                            ignore_index=True)
    run.write_table("predictions", predictions)
    run.write_table("gap", kgfact.gap.factuality_gap(predictions, n_boot=200))


def test_a_large_negative_gap_is_not_negligible(run):
    # at EARLY_STOP FT-Unknown is now right and FT-Known wrong: a gap of -1, far below the old
    # threshold of 0.05 but no "negligible" gap: equivalence within +-0.05 is contradicted
    _replace_rows(run, lambda p: p["checkpoint"] == "early_stop", [
        row for set_ in ("ft-known", "ft-unknown") for row in _prediction_rows(
            set_, "early_stop", "zero-shot", "id", "P36", lambda s, q: set_ == "ft-unknown")])
    row = findings(run, n_boot=200).set_index("claim").loc["unknown-harmless-at-early-stop"]
    assert (row["estimate"], row["ci_low"], row["ci_high"]) == (-1.0, -1.0, -1.0)
    assert row["verdict"] == "contradicted"  # was "supported": below 0.05
    assert (row["expected"], row["threshold"], row["margin"]) == ("equal", 0.0, 0.05)
    assert row["holm_verdict"] == "contradicted"
    assert row["p_value"] == pytest.approx(2 / 201)


def test_p_values_and_holm_verdicts_on_a_synthetic_run(run):
    table = findings(run, n_boot=200).set_index("claim")
    measured = table.index[table["verdict"] != "not measured"]
    assert list(measured) == ["unknown-hurts-at-convergence", "unknown-harmless-at-early-stop",
                              "gap-widens-with-training", "gap-shrinks-near-id",
                              "few-shot-shrinks-gap"]
    # every replicate on the same side, 200 replicates: p = 2 (0 + 1) / 201; Holm over the
    # five measured claims multiplies the smallest by 5 (then 4, 3, ... kept monotone)
    assert table.loc[measured, "p_value"].tolist() == pytest.approx([2 / 201] * 5)
    assert table.loc[measured, "p_holm"].tolist() == pytest.approx([10 / 201] * 5)
    assert table.loc[measured, "holm_verdict"].tolist() == ["supported"] * 5
    unmeasured = table.drop(index=measured)
    assert unmeasured["p_value"].isna().all() and unmeasured["p_holm"].isna().all()
    assert set(unmeasured["holm_verdict"]) == {"not measured"}
    assert table.loc[measured, "dropped"].tolist() == [0] * 5
    assert unmeasured["dropped"].isna().all()


def test_holm_on_hand_worked_p_values():
    from statsmodels.stats.multitest import multipletests

    p = [0.01, 0.04, 0.03, 0.005, np.nan]
    verdicts = ["supported", "supported", "contradicted", "supported", "not measured"]
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04 -> 0.06 (monotone)
    p_holm, verdict = holm(p, verdicts, alpha=0.05)
    assert p_holm[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02]) and np.isnan(p_holm[4])
    assert p_holm[:4] == pytest.approx(multipletests(p[:4], method="holm")[1])
    assert verdict == ["supported", "inconclusive", "inconclusive", "supported", "not measured"]
    # a measured claim without a p-value counts as p = 1: three tests, that one never decided
    p_holm, verdict = holm([0.01, np.nan, 0.012], ["supported", "supported", "inconclusive"])
    assert p_holm == pytest.approx([0.03, 1.0, 0.03])
    assert verdict == ["supported", "inconclusive", "inconclusive"]


def test_near_id_and_ood_contrasts_count_their_distributions_queries_and_shares(run):
    # OOD (P30, 4 queries): FT-Unknown never right, FT-Known right once in 12 (seed 0, query 0)
    _replace_rows(run, lambda p: p["distribution"] == "ood", [
        row for set_ in ("ft-known", "ft-unknown") for row in _prediction_rows(
            set_, "convergence", "zero-shot", "ood", "P30",
            lambda s, q: set_ == "ft-known" and s == q == 0, queries=4)])
    table = findings(run, n_boot=200).set_index("claim")
    near, ood = table.loc["gap-shrinks-near-id"], table.loc["gap-shrinks-ood"]
    assert (near["n"], ood["n"]) == (5, 4)  # not the 5 in-distribution queries besides
    assert ood["estimate"] == pytest.approx(1 - 1 / 12)
    # as a share of FT-Known's accuracy: ID 1/1, near-ID 0/1, OOD (1/12)/(1/12)
    assert (near["share_estimate"], near["share_ci_low"], near["share_ci_high"]) == (1.0, 1.0,
                                                                                    1.0)
    assert (ood["share_estimate"], ood["share_ci_low"], ood["share_ci_high"]) == (0.0, 0.0, 0.0)
    assert ("FT-Known's zero-shot accuracy is 0.08 ood, under 0.10: the gap there cannot "
            "exceed it") in ood["caveat"]
    assert "under 0.10" not in near["caveat"]
    # the share is undefined in the replicates that drew FT-Known's one right answer away
    assert "share of accuracy: " in ood["note"] and "replicates dropped" in ood["note"]


def test_dropped_replicates_are_counted_and_said(run):
    # near-ID answered under training seed 0 only: a replicate that does not draw seed 0 has no
    # near-ID cell and is dropped, counted and named
    _replace_rows(run, lambda p: (p["distribution"] == "near-id") & (p["seed"] != 0), [])
    row = findings(run, n_boot=200).set_index("claim").loc["gap-shrinks-near-id"]
    seeds = kgfact.gap._draw_counts(np.random.default_rng(0), 3, 200)  # the first draw
    dropped = int((seeds[:, 0] == 0).sum())
    assert 0 < dropped < 200 and row["dropped"] == dropped
    assert (f"{dropped} of 200 bootstrap replicates dropped (a compared group had no weight "
            "in them)") in row["note"]
    assert row["verdict"] == "supported"


def test_an_estimate_outside_its_interval_is_said(run):
    run.write_table("theory_stats", pd.DataFrame({
        "augmentation": ["default"], "family": ["a_quantile"], "checkpoint": ["all"],
        "mode": ["all"], "statistic": ["spearman_reduction"], "value": [0.808],
        "ci_low": [-0.169], "ci_high": [0.75], "n_buckets": [24], "note": [""]}))
    row = findings(run, n_boot=200).set_index("claim").loc["theory-tracks-reductions"]
    assert (row["estimate"], row["verdict"], row["n"]) == (0.808, "inconclusive", 24)
    assert "the estimate 0.808 lies outside its own interval [-0.169, 0.750]" in row["note"]
    # theory_stats gives no p-value: the claim enters Holm's family as p = 1
    assert np.isnan(row["p_value"]) and row["p_holm"] == 1.0
    assert "no p-value" in row["note"] and row["holm_verdict"] == "inconclusive"
