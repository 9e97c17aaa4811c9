"""The findings table: contrasts paired by one crossed draw, verdicts from intervals, exact
values on a synthetic run, and claims a run cannot measure said so."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import kgfact.gap
from kgfact.cli import main
from kgfact.findings import CLAIMS, claim_names, findings, holm
from kgfact.gap import NO_PROMPT, crossed_contrast
from kgfact.registration import Registration
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
                        ("alpha-predicts-held-out", "no theory_heldout table"),
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


def test_prediction_one_is_decided_on_the_held_out_sets_at_convergence(run):
    # a registration may name the claim
    Registration(primary="alpha-predicts-held-out").check_claims(claim_names())
    note = ("3 of 200 bootstrap replicates not finite (...): the interval and p-value come "
            "from the rest; the estimate lies outside its own interval [0.015, 0.030]: ...")
    row = {"unknown_share": np.nan, "u": np.nan, "n": 30, "n_queries": 5, "measured": 0.5,
           "predicted": 0.49, "margin": 0.05, "outcome": "as predicted", "p_value": 0.01,
           "dropped": 3, "fit_sets": "ft-known, ft-unknown"}
    run.write_table("theory_heldout", pd.DataFrame([
        row | {"checkpoint": "convergence", "set": "mix-50", "difference": 0.01,
               "ci_low": 0.015, "ci_high": 0.03, "note": note},
        row | {"checkpoint": "convergence", "set": "pooled", "difference": 0.01,
               "ci_low": 0.015, "ci_high": 0.03, "note": note},
        row | {"checkpoint": "early_stop", "set": "pooled", "difference": 0.3,
               "ci_low": 0.2, "ci_high": 0.4, "outcome": "contradicted", "note": ""}]))
    r = findings(run, n_boot=200).set_index("claim").loc["alpha-predicts-held-out"]
    assert (r["estimate"], r["ci_low"], r["ci_high"], r["p_value"], r["n"]) == (
        0.01, 0.015, 0.03, 0.01, 5)
    # equivalence within the registered margin: the interval lies inside +-0.05
    assert (r["expected"], r["margin"], r["verdict"]) == ("equal", 0.05, "supported")
    assert r["source"].endswith("fitted on ft-known, ft-unknown, mean over mix-50 "
                                "(convergence)")
    # the table's notes are carried over, the interval's said once
    assert "3 of 200 bootstrap replicates not finite" in r["note"]
    assert r["note"].count("outside its own interval") == 1
    # nothing held out: not measured, and the note says why
    run.write_table("theory_heldout", pd.DataFrame([
        row | {"checkpoint": "convergence", "set": "pooled", "difference": np.nan,
               "ci_low": np.nan, "ci_high": np.nan, "outcome": "not measured",
               "note": "no set held out: every evaluated set ..."}]))
    r = findings(run, n_boot=200).set_index("claim").loc["alpha-predicts-held-out"]
    assert r["verdict"] == "not measured" and r["note"].startswith("no set held out")


# -- Gekhman's regression: the claims read the interval that includes question noise ---------
def _noisy_dynamics() -> pd.DataFrame:
    """Dynamics whose points lie on a line with b_unk = -0.05 to within one of 30 test
    questions: the clustered interval finds b_unk below 0, the crossed bootstrap does not."""
    from .test_gap import GRID_SETS, OTHER, dynamics, thresholds, with_questions

    return with_questions(dynamics(GRID_SETS | OTHER, seeds=(0, 1), epochs=3),
                          thresholds(-0.05))


def test_the_regression_claims_read_the_interval_with_question_noise(run):
    table = kgfact.gap.gekhman_regression(_noisy_dynamics(), n_boot=300).set_index("term")
    run.write_table("regression", table.reset_index())
    got = findings(run, n_boot=200).set_index("claim")
    for claim, term in (("known-fit-raises-accuracy", "known_fit"),
                        ("unknown-fit-lowers-accuracy", "unknown_fit")):
        row, reg = got.loc[claim], table.loc[term]
        assert (row["estimate"], row["ci_low"], row["ci_high"], row["p_value"]) == (
            reg["coef"], reg["boot_ci_low"], reg["boot_ci_high"], reg["boot_p_value"]), claim
        assert reg["note"] in row["note"], claim
        assert row["verdict"] == reg["finding"], claim
    # the clustered interval alone would find b_unk below 0; question noise leaves it open
    assert table.loc["unknown_fit", "ci_high"] < 0
    assert got.loc["unknown-fit-lowers-accuracy", "verdict"] == "inconclusive"


def test_regression_claims_of_dynamics_without_per_question_records_read_the_clustered_one(run):
    table = kgfact.gap.gekhman_regression(
        _noisy_dynamics().drop(columns=["test_qids", "test_correct"]), n_boot=300)
    run.write_table("regression", table)
    row = findings(run, n_boot=200).set_index("claim").loc["unknown-fit-lowers-accuracy"]
    reg = table.set_index("term").loc["unknown_fit"]
    assert (row["ci_low"], row["ci_high"], row["p_value"]) == (
        reg["ci_low"], reg["ci_high"], reg["p_value"])
    assert row["verdict"] == reg["finding"] == "supported"
    assert row["note"].startswith("question noise not included: 40 of the 40 dynamics rows")


def test_evaluation_passes_its_bootstrap_settings_to_the_regression(tmp_path):
    from kgfact.evaluate import EvalConfig, evaluate
    from kgfact.models import ModelConfig
    from kgfact.sampling import Generation
    from tests import ftworld

    class Atlantis:
        """The base model (no adapter is trained), answering every query "Atlantis"."""

        adapter = None

        def generate(self, requests, config, on_done=None):
            return [Generation(r.key, " Atlantis", ()) for r in requests]

    run = ftworld.make_ft_run(tmp_path / "run")
    dynamics = _noisy_dynamics()
    run.write_table("dynamics", dynamics)
    evaluate(run, EvalConfig(modes=("zero-shot",), bootstrap=120, seed=7), ModelConfig(),
             backend=Atlantis(), progress=False)
    pd.testing.assert_frame_equal(
        run.read_table("regression"),
        kgfact.gap.gekhman_regression(dynamics, n_boot=120, seed=7))
    pd.testing.assert_frame_equal(
        run.read_table("regression_other"),
        kgfact.gap.gekhman_other_sets(dynamics, n_boot=120, seed=7),
        check_dtype=False)  # the seed column of other sets' points: object, read as int
    assert run.read_table("regression")["n_boot"].tolist() == [120] * 3


def test_the_docs_list_every_claim_in_the_tables_order():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "evaluation.md").read_text()
    table = text.split("| claim | estimate | expected |\n")[1].split("\n\n")[0]
    listed = [line.split("`")[1] for line in table.splitlines()[1:]]  # after the rule
    assert listed == claim_names()


def test_a_control_claim_is_read_in_its_registered_mode(run):
    """The path-hint control exists only under CoT: its claim reads the CoT row."""
    rows = [{"control": "path-hint-vs-side-steps", "checkpoint": "convergence", "mode": mode,
             "treatment": "path-hint", "baseline": "side-steps", "difference": diff,
             "ci_low": diff - 0.1, "ci_high": diff + 0.05, "p_value": 0.02, "n_queries": n}
            for mode, diff, n in (("cot", -0.3, 7), ("few-shot", 0.2, 9))]
    run.write_table("theory_controls", pd.DataFrame(rows))
    r = findings(run, n_boot=200).set_index("claim").loc["control-path-hint-vs-side-steps"]
    assert (r["estimate"], r["ci_low"], r["ci_high"], r["n"], r["verdict"]) == (
        -0.3, -0.4, -0.25, 7, "supported")
    assert r["source"].endswith("cot, id, convergence")
    assert "(cot, in distribution, CONVERGENCE)" in r["statement"]
    run.write_table("theory_controls", pd.DataFrame(rows[1:]))
    r = findings(run, n_boot=200).set_index("claim").loc["control-path-hint-vs-side-steps"]
    assert r["verdict"] == "not measured"
    assert r["note"] == "not evaluated: add path-hint and side-steps to evaluate.strategies"
    # evaluated, yet the graph gave no query a path hint: the note says so, not "add them"
    run.annotate("evaluate", config={"evaluate": {"strategies": ["path-hint", "side-steps"]}},
                 report={"path_hint_share": {"P36": 0.0, "P17": 0.25}})
    r = findings(run, n_boot=200).set_index("claim").loc["control-path-hint-vs-side-steps"]
    assert r["note"] == ("evaluated, but no test query had both a path-hint and a side-steps "
                         "prompt in cot (share of queries with a path-hint prompt: P17 0.25, "
                         "P36 0.00)")
