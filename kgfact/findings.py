"""The findings table: one row per claim of the literature, decided by its interval.

Each claim kgfact tests (Gekhman et al. 2024; Gong et al. 2025; the prompt-subgraph theory) is
one row with its estimate, its 95% interval and a verdict from :func:`kgfact.gap.finding`:
*supported* when the interval lies on the expected side of the threshold, *contradicted* when
it lies on the other side, *inconclusive* otherwise, and *not measured* when the run has no
data for it (the ``note`` says why). A claim of no practical difference (``expected`` "equal")
is decided by two one-sided tests against its ``margin``: supported only when the interval lies
inside ``threshold ± margin``. The verdict never comes from the point estimate.

Beside the verdict each measured claim has the ``p_value`` of its decision
(:func:`kgfact.gap.bootstrap_p` on its replicates; for the regression's slopes, the interval
and p-value that decide the regression table's finding: the crossed bootstrap over clusters
and test questions where the dynamics recorded each question, the clustered t-test's
otherwise, with the table's ``note`` saying which) and, since the table tests many claims at
once, Holm's step-down adjustment over the measured claims (``p_holm``) and the verdict it
leaves (``holm_verdict``: decided only where ``p_holm`` is under 0.05). A measured claim
without a p-value enters the family as p = 1. ``dropped`` counts the bootstrap replicates left
out of the interval (a compared group without weight in them), and the ``note`` says so, and
says when an estimate lies outside its own interval (a statistic biased under resampling).

Every interval resamples training seeds, exemplar sets and test queries together
(:func:`kgfact.gap.crossed_contrast`), so a claim holds across seeds and exemplar sets, not for
one draw of them. Comparisons use the gap at CONVERGENCE in zero-shot unless they compare
checkpoints or prompts; ``caveat`` names recipe artefacts that bear on a row (a CONVERGENCE the
epoch limit imposed before the set was fitted; a model that answers new questions with its own
training answers), which the reader must weigh before reading the verdict as a finding.

The table is written by ``kgfact report`` (table ``findings``) and heads the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from kgfact.contract import memorised, mixture_name, protocol_of, read_set
from kgfact.errors import KgfactError
from kgfact.gap import (EXPECTED, NO_PROMPT, bootstrap_p, crossed_contrast,
                        crossed_mean, finding, paired_cells)
from kgfact.rundir import RunDir
from kgfact.registration import Registration
from kgfact.theory.controls import CONTROLS
from kgfact.theory.metrics import GRADED
from kgfact.theory.predict import OUTSIDE_INTERVAL

# FT-Known's accuracy under which a gap is floored: the gap cannot exceed it, so a smaller gap
# may only be a lower accuracy
FLOOR = 0.10
COLUMNS = ["claim", "statement", "estimate", "ci_low", "ci_high", "expected", "threshold",
           "verdict", "n", "source", "caveat", "note", "margin", "p_value", "p_holm",
           "holm_verdict", "dropped", "share_estimate", "share_ci_low", "share_ci_high",
           "registered"]
# the claims read through the theory stage: exploratory when it ran off the registration
THEORY_CLAIMS = frozenset({"theory-tracks-reductions", "interventions-track-theory"})


@dataclass(frozen=True)
class Claim:
    """One claim: what is estimated, the side it is expected on, and how it is measured."""

    name: str = field(metadata={"help": "Short id of the claim."})
    statement: str = field(metadata={"help": "The claim in words."})
    expected: str = field(metadata={
        "help": "'above' or 'below' the threshold, or 'equal': within threshold ± margin."})
    measure: Callable[[RunDir, dict], dict] = field(metadata={
        "help": "Returns estimate, ci_low, ci_high and p_value, or their Bootstrapped as "
                "'boot'; n and source (or a note)."})
    threshold: float = field(default=0.0, metadata={"help": "What the estimate is compared to."})
    margin: float | None = field(default=None, metadata={
        "help": "Equivalence margin of an 'equal' claim (two one-sided tests); None otherwise."})
    checkpoint: str | None = field(default="convergence", metadata={
        "help": "Checkpoint whose recipe artefacts are named in the caveat."})


def _predictions(run: RunDir, context: dict) -> pd.DataFrame:
    """The run's predictions, read once per :func:`findings` call."""
    if "predictions" not in context:
        context["predictions"] = run.read_table("predictions")
    return context["predictions"]


def _cells(run: RunDir, context: dict) -> pd.DataFrame:
    """Paired FT-Known/FT-Unknown cells of the run (zero-shot cells have no exemplar set)."""
    if "cells" not in context:
        cells = paired_cells(_predictions(run, context))
        cells["prompt"] = cells["prompt"].where(cells["strategy"] != "none", NO_PROMPT)
        cells["d"] = cells["known"] - cells["unknown"]
        context["cells"] = cells
    return context["cells"]


def _where(cells: pd.DataFrame, where: dict) -> pd.DataFrame:
    """The cells whose column ``key`` is ``value`` (or one of a list) for each of ``where``."""
    for key, value in where.items():
        cells = cells[cells[key].isin(value if isinstance(value, list) else [value])]
    return cells


def _contrast(run: RunDir, context: dict, where: dict, group: str, first: str, second: str
              ) -> dict:
    """The gap of cells with ``group == first`` minus that of ``group == second``; ``n`` counts
    the queries of ``second`` (the near-ID or OOD distribution, the prompted mode, EARLY_STOP)."""
    cells = _where(_cells(run, context), where)
    boot = crossed_contrast(cells, group, first, second, n_boot=context["n_boot"],
                            seed=context["seed"], level=context["level"])
    missing = [g for g in (first, second) if not (cells[group] == g).any()]
    return {"boot": boot, "n": int(cells.loc[cells[group] == second, "qid"].nunique()),
            "source": f"predictions: gap({first}) - gap({second}), "
                      + ", ".join(f"{k} {v}" for k, v in where.items()),
            "note": f"no cells for {' or '.join(missing)}" if missing else ""}


def _distribution_contrast(distribution: str) -> Callable[[RunDir, dict], dict]:
    """The ID gap minus the ``distribution`` gap, and the same of the gaps as a share of
    FT-Known's accuracy (``share``), with a floor caveat where that accuracy is under
    :data:`FLOOR`."""
    where = {"mode": "zero-shot", "checkpoint": "convergence"}

    def measure(run: RunDir, context: dict) -> dict:
        got = _contrast(run, context, where, "distribution", "id", distribution)
        cells = _where(_cells(run, context), where)
        share = crossed_contrast(cells, "distribution", "id", distribution, weight="known",
                                 n_boot=context["n_boot"], seed=context["seed"], level=context["level"])
        accuracy = cells.groupby("distribution")["known"].mean()
        floored = [f"{accuracy[g]:.2f} {g}" for g in ("id", distribution)
                   if g in accuracy and accuracy[g] < FLOOR]
        notes = [got["note"]] + ([f"share of accuracy: {share.dropped} of {context['n_boot']} "
                                  "replicates dropped (FT-Known right on none of their draws)"]
                                 if share.dropped and np.isfinite(share.estimate) else [])
        return got | {
            "share": share, "note": "; ".join(n for n in notes if n),
            "caveat": ("FT-Known's zero-shot accuracy is " + " and ".join(floored)
                       + f", under {FLOOR:.2f}: the gap there cannot exceed it, so a smaller "
                       "gap may only be a lower accuracy (floor); share_* divides the gap by "
                       "the accuracy") if floored else ""}
    return measure


def _gap_row(run: RunDir, context: dict, checkpoint: str) -> dict:
    """The zero-shot in-distribution gap at ``checkpoint``, from the same cells and draws as the
    ``gap`` table's row."""
    where = {"mode": "zero-shot", "distribution": "id", "checkpoint": checkpoint}
    cells = _where(_cells(run, context), where)
    if cells.empty:
        return {"note": f"no zero-shot in-distribution {checkpoint} predictions of both "
                        "ft-known and ft-unknown"}
    return {"boot": crossed_mean(cells, context["n_boot"], context["seed"], context["level"]),
            "n": int(cells["qid"].nunique()),
            "source": f"predictions: gap, zero-shot, id, {checkpoint}"}


def _mode_contrast(mode: str) -> Callable[[RunDir, dict], dict]:
    def measure(run: RunDir, context: dict) -> dict:
        cells = _cells(run, context)
        keep = (cells["mode"] == "zero-shot") | (cells["strategy"] == context["strategy"])
        context_cells = dict(context, cells=cells[keep])
        return _contrast(run, context_cells, {"checkpoint": "convergence",
                                              "distribution": "id",
                                              "mode": ["zero-shot", mode]},
                         "mode", "zero-shot", mode)
    return measure


def _regression(term: str) -> Callable[[RunDir, dict], dict]:
    def measure(run: RunDir, context: dict) -> dict:
        if not run.has_table("regression"):
            return {"note": "no regression table (too few grid points or clusters)"}
        row = run.read_table("regression").set_index("term").loc[term]
        # the crossed bootstrap (clusters and test questions) decides the table's finding
        # where the dynamics recorded each question; the clustered interval otherwise
        boot = "boot_" if pd.notna(row.get("boot_ci_low")) else ""
        return {"estimate": row["coef"], "ci_low": row[f"{boot}ci_low"],
                "ci_high": row[f"{boot}ci_high"], "p_value": row[f"{boot}p_value"],
                "n": int(row["n_points"]),
                "source": f"regression: {term} over {row['sets']} "
                          f"({int(row['n_clusters'])} clusters)",
                "note": row.get("note") if pd.notna(row.get("note")) else ""}
    return measure


def _theory(run: RunDir, context: dict) -> dict:
    config = run.stage_config("theory") or {}
    augmentation = config.get("augmentation", "default")
    if augmentation in GRADED and protocol_of(run) == "lazy":
        return {"note": f"A(P) {augmentation!r} needs p_correct, which SliCK's lazy protocol "
                        "does not measure: label with 'kgfact slick --protocol full --force'"}
    if not run.has_table("theory_stats"):
        return {"note": "no theory_stats table: run 'kgfact theory'"}
    stats = run.read_table("theory_stats")
    row = stats[(stats["augmentation"] == augmentation)
                & (stats["family"] == "a_quantile") & (stats["mode"] == "all")
                & (stats["statistic"] == "spearman_reduction")]
    if row.empty:
        return {"note": "theory_stats has no a_quantile spearman_reduction row"}
    r = row.iloc[0]
    return {"estimate": r["value"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
            "p_value": r.get("p_value", np.nan), "n": int(r["n_buckets"]),
            "source": "theory_stats: Spearman of predicted vs measured reduction over A(P) "
                      "buckets (few-shot and CoT, both checkpoints)",
            "note": _table_note(r.get("note", ""))}


def _table_note(note: str | None) -> str:
    """A theory table's note without its "estimate outside its interval" part, which
    :func:`_notes` says of every claim."""
    return "; ".join(part for part in (note or "").split("; ")
                     if part and not part.startswith(OUTSIDE_INTERVAL))


def _held_out(run: RunDir, context: dict) -> dict:
    """Prediction 1 on the sets held out of the fit of ``α`` and ``c`` (``theory_heldout``):
    measured minus predicted zero-shot in-distribution accuracy, pooled over the held-out sets,
    at CONVERGENCE."""
    if not run.has_table("theory_heldout"):
        return {"note": "no theory_heldout table: run 'kgfact theory'"}
    t = run.read_table("theory_heldout")
    t = t[t["checkpoint"] == "convergence"]
    row = t[t["set"] == "pooled"]
    if row.empty:
        return {"note": "theory_heldout has no convergence row"}
    r = row.iloc[0]
    if r["outcome"] == "not measured":
        return {"note": r["note"]}
    sets = ", ".join(t.loc[t["set"] != "pooled", "set"])
    notes = [_table_note(r["note"])]
    if r["margin"] != context["margin"]:
        notes.append(f"the theory stage tested against ±{r['margin']:g}, the registered "
                     f"margin is ±{context['margin']:g}: its p-value is that of ±{r['margin']:g}")
    return {"estimate": r["difference"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
            "p_value": r["p_value"], "n": int(r["n_queries"]),
            "source": f"theory_heldout: zero-shot ID accuracy minus c + α·u(D), α and c fitted "
                      f"on {r['fit_sets']}, mean over {sets} (convergence)",
            "note": "; ".join(n for n in notes if n)}


def _primary(run: RunDir, context: dict) -> dict:
    """The theory's primary test (``theory_primary``: the slope of measured on predicted gap
    reductions across the designed interventions)."""
    if not run.has_table("theory_primary"):
        return {"note": "no theory_primary table: run 'kgfact theory'"}
    r = run.read_table("theory_primary").iloc[0]
    if not r["n_units"]:
        return {"note": "no designed intervention was evaluated: add the controls' strategies "
                        f"({r['strategies'] or 'known, unknown, other-relation'}) to "
                        "evaluate.strategies"}
    covers = "covers" if r["covers_one"] else "excludes"
    return {"estimate": r["slope"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
            "p_value": r["p_value"], "n": int(r["n_queries"]),
            "source": f"theory_primary: slope over {int(r['n_units'])} units of the strategies "
                      f"{r['strategies']}, A(P) {r['augmentation']}, one intercept per "
                      "(checkpoint, mode)",
            "note": f"the interval {covers} 1 (the theory's slope); power {r['power']:.2f} "
                    f"for a slope of {r['effect']:g}" + (
                        f"; 80 % power needs {r['queries_for_power']:.1f}x the queries"
                        if np.isfinite(r["queries_for_power"]) else
                        "; more queries alone cannot give 80 % power: more seeds or "
                        "exemplar sets are needed")}


def _control(name: str) -> Callable[[RunDir, dict], dict]:
    """Control ``name``'s gap difference (treatment minus baseline) in its mode, CONVERGENCE."""
    mode = CONTROLS.get(name).mode
    def measure(run: RunDir, context: dict) -> dict:
        if not run.has_table("theory_controls"):
            return {"note": "no theory_controls table: run 'kgfact theory'"}
        t = run.read_table("theory_controls")
        row = t[(t["control"] == name) & (t["checkpoint"] == "convergence")
                & (t["mode"] == mode)]
        if row.empty:
            return {"note": _unmeasured_control(run, name)}
        r = row.iloc[0]
        return {"estimate": r["difference"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                "p_value": r.get("p_value", np.nan), "n": int(r["n_queries"]),
                "source": f"theory_controls: gap({r['treatment']}) - gap({r['baseline']}), "
                          f"{mode}, id, convergence"}
    return measure


def _unmeasured_control(run: RunDir, name: str) -> str:
    """Why control ``name`` has no row: its strategies were not evaluated, or were and gave no
    query a prompt (per-query strategies apply only where the graph allows; the evaluation
    recorded each relation's share of queries that had one)."""
    c = CONTROLS.get(name)
    strategies = (run.stage_config("evaluate") or {}).get("evaluate", {}).get("strategies", [])
    if not {c.treatment, c.baseline} <= set(strategies):
        return f"not evaluated: add {c.treatment} and {c.baseline} to evaluate.strategies"
    report = run.stage_entry("evaluate").get("report", {})
    shares = report.get(f"{c.treatment.replace('-', '_')}_share", {})
    per_relation = ", ".join(f"{r} {v:.2f}" for r, v in sorted(shares.items()))
    return (f"evaluated, but no test query had both a {c.treatment} and a {c.baseline} prompt "
            f"in {c.mode}" + (f" (share of queries with a {c.treatment} prompt: {per_relation})"
                              if shares else ""))


def _idk(run: RunDir, context: dict) -> dict:
    p = _predictions(run, context)
    sets = set(p["set"].dropna())
    if "idk-relabel" not in sets:
        return {"note": "idk-relabel was not evaluated (add it to finetune.sets and "
                        "evaluate.sets)"}
    base = mixture_name((run.stage_config("ftsets") or {}).get("relabel_share", 0.5))
    if base not in sets:
        return {"note": f"{base}, the set idk-relabel relabels, was not evaluated"}
    p = p[p["set"].isin(["idk-relabel", base]) & (p["mode"] == "zero-shot")
          & (p["distribution"] == "id") & (p["checkpoint"] == "convergence")]
    cells = p.assign(prompt=NO_PROMPT, seed=p["seed"].fillna(0) if "seed" in p else 0,
                     right=(p["correct"] & ~p["abstained"]).astype(float),
                     answered=(~p["abstained"]).astype(float))
    boot = crossed_contrast(cells, "set", "idk-relabel", base, value="right",
                            weight="answered", n_boot=context["n_boot"], seed=context["seed"],
                            level=context["level"])
    return {"boot": boot, "n": int(cells["qid"].nunique()),
            "source": f"predictions: accuracy on answered, idk-relabel - {base}, zero-shot, "
                      "id, convergence"}


def _control_claim(name: str) -> Claim:
    """The findings claim of control ``name``: its stated order, in its mode, at CONVERGENCE."""
    c = CONTROLS.get(name)
    order = "smaller than" if c.expected == "<" else "practically equal to"
    return Claim(f"control-{name}", f"{c.treatment} exemplars give a gap {order} that of "
                 f"{c.baseline} ones ({c.mode}, in distribution, CONVERGENCE): {c.why}",
                 {"<": "below", "=": "equal"}[c.expected], _control(name))


CLAIMS = (
    Claim("unknown-hurts-at-convergence",
          "Fine-tuning on Unknown facts lowers in-distribution accuracy at CONVERGENCE "
          "(gap FT-Known - FT-Unknown, zero-shot, above 0)", EXPECTED["gap"],
          lambda run, c: _gap_row(run, c, "convergence")),
    Claim("unknown-harmless-at-early-stop",
          "At EARLY_STOP the gap is negligible (zero-shot, in distribution, within the "
          "registered equivalence margin of 0 by two one-sided tests)", "equal",
          lambda run, c: _gap_row(run, c, "early_stop"), checkpoint="early_stop"),
    Claim("gap-widens-with-training",
          "The gap widens from EARLY_STOP to CONVERGENCE (zero-shot, in distribution)",
          "above", lambda run, c: _contrast(run, c, {"mode": "zero-shot", "distribution": "id"},
                                            "checkpoint", "convergence", "early_stop")),
    Claim("gap-shrinks-near-id",
          "The gap is smaller near-ID (ID-split relations no set trained on) than in "
          "distribution (zero-shot, CONVERGENCE)", "above",
          _distribution_contrast("near-id")),
    Claim("gap-shrinks-ood",
          "The gap is smaller out of distribution than in distribution (zero-shot, "
          "CONVERGENCE)", "above",
          _distribution_contrast("ood")),
    Claim("few-shot-shrinks-gap",
          "A few-shot prompt shrinks the gap (zero-shot gap minus few-shot gap, in "
          "distribution, CONVERGENCE)", "above", _mode_contrast("few-shot")),
    Claim("cot-shrinks-gap",
          "A chain-of-thought prompt shrinks the gap (zero-shot gap minus CoT gap, in "
          "distribution, CONVERGENCE)", "above", _mode_contrast("cot")),
    Claim("known-fit-raises-accuracy",
          "Fitting Known examples raises test accuracy (Gekhman's b_kn above 0)",
          EXPECTED["known_fit"], _regression("known_fit"), checkpoint=None),
    Claim("unknown-fit-lowers-accuracy",
          "Fitting Unknown examples lowers test accuracy (Gekhman's b_unk below 0)",
          EXPECTED["unknown_fit"], _regression("unknown_fit"), checkpoint=None),
    Claim("alpha-predicts-held-out",
          "The zero-shot accuracy of a set held out of the fit is c + α·u(D), with α and c "
          "fitted on the other sets (in distribution, CONVERGENCE; mean over the held-out "
          "sets within the registered equivalence margin of 0)", "equal", _held_out),
    Claim("theory-tracks-reductions",
          "The theory's predicted gap reductions track the measured ones (Spearman above 0)",
          "above", _theory, checkpoint=None),
    Claim("interventions-track-theory",
          "Across the designed prompt interventions, measured gap reductions grow with the "
          "predicted ones (slope above 0; the theory says 1)", "above", _primary,
          checkpoint=None),
    *(_control_claim(name) for name in CONTROLS),
    Claim("idk-raises-answered-accuracy",
          "Relabelling Unknown facts 'I don't know' raises accuracy on answered questions "
          "(zero-shot, in distribution, CONVERGENCE)", "above", _idk),
)


# a model collapsed onto its training answers when more than this share of its wrong answers are
# training answers, and that share exceeds by COLLAPSE_EXCESS what confusing answers within the
# relation would give
COLLAPSE_RATE, COLLAPSE_EXCESS = 0.5, 0.25


def expected_memorised(run: RunDir, wrong: pd.DataFrame) -> pd.Series:
    """Per wrong prediction: the memorised-answer rate of a model that confuses answers within
    the relation but never collapsed, i.e. the share of the relation's other gold answers (every
    split, counted with repeats) that are training answers of the prediction's set.

    On a closed answer set (50 US states) most wrong answers are some training answer whatever
    the model does; on capitals few are. 0 where the run lacks the questions or the set.
    """
    out = pd.Series(0.0, index=wrong.index)
    if not run.has_table("qa") or wrong.empty:
        return out
    qa = run.read_table("qa")
    gold = qa.set_index("qid")["answer"]
    for name, rows in wrong.groupby("set").groups.items():
        if not run.has_table(f"ftsets/{name}"):
            continue
        trained = read_set(run, name)["answer"].tolist()
        for relation, at in wrong.loc[rows].groupby("relation").groups.items():
            answers = qa.loc[qa["relation"] == relation, "answer"]
            hit = pd.Series(memorised(answers.tolist(), trained), index=answers.to_numpy())
            count, hits = hit.groupby(level=0).size(), hit.groupby(level=0).sum()
            g = gold.reindex(wrong.loc[at, "qid"]).to_numpy()
            own_n = count.reindex(g).fillna(0).to_numpy()
            own_hits = hits.reindex(g).fillna(0).to_numpy()
            others = len(hit) - own_n
            out[at] = np.divide(hit.sum() - own_hits, others, out=np.zeros(len(at)),
                                where=others > 0)
    return out


def caveats(run: RunDir, checkpoint: str | None) -> str:
    """Recipe artefacts at ``checkpoint``: CONVERGENCE imposed by the epoch limit, and models
    whose *wrong* zero-shot in-distribution answers are mostly their own training answers, well
    beyond what confusing answers within the relation gives (:func:`expected_memorised`):
    collapse onto the training set. Right answers are left out: on a closed answer set, such
    as US states, a right answer is often a training answer too."""
    if checkpoint is None or not run.has_table("dynamics"):
        return ""
    dyn = run.read_table("dynamics")
    notes = []
    if checkpoint == "convergence" and "epoch_limit" in dyn:
        limited = dyn[dyn["epoch_limit"].astype(bool)]
        if len(limited):
            pairs = ", ".join(f"{r.set}/seed-{r.seed}" if "seed" in limited else r.set
                              for r in limited.itertuples())
            notes.append(f"CONVERGENCE imposed by the epoch limit before the set was fitted "
                         f"for {pairs}")
    p = run.read_table("predictions") if run.has_table("predictions") else None
    if p is not None and "memorised" in p:
        wrong = p[(p["checkpoint"] == checkpoint) & (p["mode"] == "zero-shot")
                  & (p["distribution"] == "id") & ~p["correct"].astype(bool)]
        by = wrong.assign(expected=expected_memorised(run, wrong)).groupby(
            ["set", "seed"] if "seed" in wrong else ["set"])
        rate, expected = by["memorised"].mean(), by["expected"].mean()
        high = rate[(rate > COLLAPSE_RATE) & (rate - expected > COLLAPSE_EXCESS)]
        if len(high):
            notes.append("more than half of the wrong answers are the model's own training "
                         "answers (collapse onto the training set) for " + ", ".join(
                             f"{'/seed-'.join(map(str, k)) if isinstance(k, tuple) else k} "
                             f"({v:.2f}, against {expected[k]:.2f} from confusing answers "
                             "within the relation)" for k, v in high.items()))
    return "; ".join(notes)


def holm(p_values: list[float], verdicts: list[str], alpha: float = 0.05
         ) -> tuple[list[float], list[str]]:
    """Holm's step-down adjustment over the measured claims, and the verdicts it leaves.

    Claims ``not measured`` are outside the family (``p_holm`` NaN, verdict kept); a measured
    claim without a p-value (NaN) enters it as p = 1, which keeps the family-wise error rate
    under ``alpha`` and is never decided. A supported or contradicted verdict stays so where its
    adjusted p is under ``alpha``, and becomes inconclusive otherwise.

    >>> holm([0.01, 0.04, np.nan], ["supported", "supported", "not measured"])
    ([0.02, 0.04, nan], ['supported', 'supported', 'not measured'])
    """
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=float)
    family = np.array([v != "not measured" for v in verdicts], dtype=bool)
    adjusted = np.full(len(p), np.nan)
    if family.any():
        adjusted[family] = multipletests(np.nan_to_num(p[family], nan=1.0), alpha=alpha,
                                         method="holm")[1]
    kept = [v if v == "not measured" or (v in ("supported", "contradicted") and a < alpha)
            else "inconclusive" for v, a in zip(verdicts, adjusted)]
    return adjusted.tolist(), kept


def _notes(got: dict, n_boot: int) -> list[str]:
    """What a measured claim's reader must know about its interval and p-value."""
    estimate, low, high = (got.get(k, np.nan) for k in ("estimate", "ci_low", "ci_high"))
    notes = []
    if got.get("dropped", 0) > 0:
        notes.append(f"{int(got['dropped'])} of {n_boot} bootstrap replicates dropped (a "
                     "compared group had no weight in them); the interval and p-value come "
                     "from the rest")
    if np.isfinite([low, high]).all() and not low <= estimate <= high:
        notes.append(f"the estimate {estimate:.3f} lies outside its own interval [{low:.3f}, "
                     f"{high:.3f}]: its replicates are shifted from it (a statistic biased "
                     "under resampling, such as a rank correlation over resampled buckets); "
                     "the verdict reads the interval")
    if not np.isfinite(got.get("p_value", np.nan)):
        notes.append("no p-value (the source table gives none): counted as p = 1 in Holm's "
                     "adjustment")
    return notes


def claim_names() -> list[str]:
    """The names of every claim of :data:`CLAIMS` (what a registration may name)."""
    return [c.name for c in CLAIMS]


def _registered(run: RunDir) -> tuple[Registration, list[str]]:
    """The registration the run's evaluation recorded when it started, and why the theory's
    claims did not run as registered (its A(P) variant or bins differ), if they did not."""
    entry = run.stage_entry("evaluate")
    if "registration" not in entry:  # evaluated before claims could be registered
        return Registration(), []
    registration = Registration.from_json(
        (entry.get("config") or {}).get("evaluate", {}).get("registration"))
    theory = run.stage_config("theory")  # the TheoryConfig itself, as the stage records it
    differs = registration.theory_matches(
        theory.get("augmentation", "default"),
        (theory.get("prediction") or {}).get("quantiles", 4)) if theory else []
    return registration, differs


def findings(run: RunDir | str, n_boot: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The findings table of ``run`` (module docstring): one row per claim in :data:`CLAIMS`.

    ``n_boot`` defaults to the evaluation's ``bootstrap`` setting. Each claim's ``registered``
    role is read from the registration the evaluation recorded (:mod:`kgfact.registration`):
    a theory claim is ``exploratory`` when the theory ran with another A(P) variant or bins
    than those registered, and Holm's adjustment runs over the registered claims (over every
    measured claim when none is registered).
    """
    run = RunDir.of(run)
    evaluation = (run.stage_config("evaluate") or {}).get("evaluate", {})
    strategies = [s for s in evaluation.get("strategies", ["random"]) if s != "none"]
    registration, differs = _registered(run)
    registration.check_claims(claim_names())
    context = {"n_boot": n_boot or evaluation.get("bootstrap", 2000), "seed": seed,
               "level": registration.level, "margin": registration.margin,
               "strategy": "random" if "random" in strategies else strategies[0]}
    done: dict[str | None, str] = {}  # each checkpoint's caveats, computed once

    def caveat(checkpoint: str | None) -> str:
        if checkpoint not in done:
            done[checkpoint] = caveats(run, checkpoint)
        return done[checkpoint]

    rows = []
    for claim in CLAIMS:
        margin = registration.margin if claim.margin is None else claim.margin
        try:
            got = claim.measure(run, context)
        except KgfactError as exc:  # a table the run lacks: the claim is not measured
            got = {"note": str(exc)}
        if "boot" in got:
            boot = got["boot"]
            got |= {"estimate": boot.estimate, "ci_low": boot.ci_low, "ci_high": boot.ci_high,
                    "p_value": bootstrap_p(boot.replicates, claim.expected, claim.threshold,
                                           margin),
                    "dropped": boot.dropped}
        measured = "estimate" in got and np.isfinite(got["estimate"])
        values = [got.get(k, np.nan) for k in ("estimate", "ci_low", "ci_high")]
        verdict = (finding(*values, claim.expected, claim.threshold, margin) if measured
                   else "not measured")
        notes = [got.get("note", "")] + (_notes(got, context["n_boot"]) if measured else [])
        artefacts = [caveat(claim.checkpoint), got.get("caveat", "")] if measured else []
        share = got["share"][:3] if "share" in got and measured else (np.nan,) * 3
        p_value, dropped = ((got.get("p_value", np.nan), got.get("dropped", np.nan)) if measured
                            else (np.nan, np.nan))
        role = registration.role(claim.name)
        if role != "exploratory" and claim.name in THEORY_CLAIMS and differs:
            notes.append(f"registered as {role}, but the theory ran with {'; '.join(differs)}: "
                         "exploratory")
            role = "exploratory"
        rows.append((claim.name, claim.statement, *values, claim.expected, claim.threshold,
                     verdict, got.get("n"), got.get("source", ""),
                     "; ".join(c for c in artefacts if c), "; ".join(n for n in notes if n),
                     margin if claim.expected == "equal" else np.nan, p_value,
                     np.nan, verdict, dropped, *share, role))  # p_holm, holm_verdict: below
    table = pd.DataFrame(rows, columns=COLUMNS).astype({"margin": float, "p_value": float,
                                                        "dropped": float})
    # Holm's family: the registered claims, or every claim when none is registered
    registered = table["registered"] != "exploratory"
    family = registered if registered.any() else pd.Series(True, index=table.index)
    p_holm, kept = holm(table["p_value"].tolist(),
                        table["verdict"].where(family, "not measured").tolist(),
                        1 - registration.level)
    table["p_holm"] = p_holm
    table["holm_verdict"] = np.where(family, kept, table["verdict"])
    return table
