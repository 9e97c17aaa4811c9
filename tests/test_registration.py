"""Claims registered before the run: recorded when evaluation starts, read by the findings
(registered vs exploratory, Holm over the registered family), and a registration changed after
evaluation ran refused by ``kgfact run``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kgfact.errors import KgfactError
from kgfact.findings import findings
from kgfact.pipeline import load_config
from kgfact.registration import Registration, check_unchanged
from kgfact.rundir import RunDir, config_json

from .test_findings import _prediction_rows

STUDY = Registration(primary="interventions-track-theory",
                     secondary=("unknown-hurts-at-convergence", "few-shot-shrinks-gap"),
                     augmentation="graded", quantiles=6)


def test_a_registration_is_checked_and_has_a_stable_digest():
    assert STUDY.digest() == Registration(**{**STUDY.__dict__}).digest()
    assert STUDY.digest() != Registration(primary="interventions-track-theory").digest()
    assert [STUDY.role(c) for c in ("interventions-track-theory", "few-shot-shrinks-gap",
                                    "cot-shrinks-gap")] == ["primary", "secondary",
                                                            "exploratory"]
    assert Registration().empty and not STUDY.empty
    with pytest.raises(KgfactError, match="both as primary and as secondary"):
        Registration(primary="a", secondary=("a",))
    with pytest.raises(KgfactError, match=r"^registered claim\(s\) 'nope' do not exist; the "
                                          r"claims are a, b$"):
        Registration(secondary=("nope",)).check_claims(["a", "b"])
    assert STUDY.theory_matches("graded", 6) == []
    assert STUDY.theory_matches("default", 4) == [
        "A(P) 'default' where 'graded' was registered", "4 A(P) bins where 6 were registered"]


def test_a_config_registering_an_unknown_claim_is_one_line():
    with pytest.raises(KgfactError, match="registered claim\\(s\\) 'gap-is-big' do not exist"):
        load_config("smoke", ['evaluate.registration.primary="gap-is-big"'])


def record_evaluation(run: RunDir, registration: Registration) -> RunDir:
    """``run`` with an evaluation recorded as started under ``registration``."""
    evaluate = {"bootstrap": 200, "strategies": ["random"],
                "registration": config_json(r=registration)["r"]}
    with run.stage("evaluate", {"evaluate": evaluate}):
        run.annotate("evaluate", registration={"sha256": registration.digest()})
    return run


def registered_run(tmp_path, registration: Registration) -> RunDir:
    """FT-Known right and FT-Unknown wrong on every query in distribution at CONVERGENCE
    (zero-shot and few-shot alike), evaluated under ``registration``."""
    rows = []
    for set_ in ("ft-known", "ft-unknown"):
        known = set_ == "ft-known"
        for mode in ("zero-shot", "few-shot"):
            rows += _prediction_rows(set_, "convergence", mode, "id", "P36", lambda s, q: known)
    run = record_evaluation(RunDir(tmp_path / "run").create(), registration)
    run.write_table("predictions", pd.DataFrame(rows))
    return run


def test_findings_say_which_claims_ran_as_registered(tmp_path):
    table = findings(registered_run(tmp_path, STUDY), n_boot=200).set_index("claim")
    assert table.loc["interventions-track-theory", "registered"] == "primary"
    assert table.loc["few-shot-shrinks-gap", "registered"] == "secondary"
    assert table.loc["gap-widens-with-training", "registered"] == "exploratory"
    # Holm's family is the registered claims: only they are adjusted
    hurts = table.loc["unknown-hurts-at-convergence"]
    assert hurts["verdict"] == hurts["holm_verdict"] == "supported"
    assert np.isfinite(hurts["p_holm"])
    assert table.loc[table["registered"] == "exploratory", "p_holm"].isna().all()


def test_theory_claims_run_off_the_registration_are_exploratory(tmp_path):
    """The real theory stage, run with another A(P) variant or bins than registered, then as
    registered."""
    from kgfact.cli import main

    from .test_theory import write_run

    run = record_evaluation(write_run(tmp_path / "run"), STUDY)
    for flags, differs in (
            ([], "A(P) 'default' where 'graded' was registered; 4 A(P) bins where 6 were "
                 "registered"),
            (["--augmentation", "graded"], "4 A(P) bins where 6 were registered"),
            (["--augmentation", "graded", "--quantiles", "6"], None)):
        assert main(["theory", str(run.path), "--n-boot", "20", "--min-bucket", "1",
                     *flags]) == 0
        table = findings(run, n_boot=50).set_index("claim")
        row = table.loc["interventions-track-theory"]
        if differs is None:
            assert row["registered"] == "primary" and "the theory ran with" not in row["note"]
        else:
            assert row["registered"] == "exploratory", flags
            assert (f"registered as primary, but the theory ran with {differs}: exploratory"
                    in row["note"])
        # a claim that does not read the theory keeps its role
        assert table.loc["few-shot-shrinks-gap", "registered"] == "secondary"


def test_a_run_evaluated_before_registration_existed_is_all_exploratory(tmp_path):
    run = registered_run(tmp_path, STUDY)
    manifest = run.manifest()
    del manifest["stages"]["evaluate"]["registration"]
    run._write_manifest(manifest)
    assert set(findings(run, n_boot=200)["registered"]) == {"exploratory"}


def test_a_registration_changed_after_evaluation_is_refused():
    recorded = {"shots": 4, "registration": config_json(r=STUDY)["r"]}
    changed = {"shots": 4, "registration": config_json(
        r=Registration(primary="few-shot-shrinks-gap"))["r"]}
    with pytest.raises(KgfactError, match=r"^runs/x: the registration changed after evaluation "
                                          r"ran \(primary 'interventions-track-theory' -> "
                                          r"'few-shot-shrinks-gap'; secondary .*\); restore it"):
        check_unchanged(recorded, changed, "runs/x")
    check_unchanged(recorded, dict(recorded), "runs/x")  # unchanged
    # evaluated again anyway (another setting changed): the new registration is its own
    check_unchanged(recorded, {**changed, "shots": 2}, "runs/x")
