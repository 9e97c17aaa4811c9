"""The findings table: one row per claim of the literature, decided by its interval.

Each claim kgfact tests (Gekhman et al. 2024; Gong et al. 2025; the prompt-subgraph theory) is
one row with its estimate, its 95% interval and a verdict from :func:`kgfact.gap.finding`:
*supported* when the interval lies on the expected side of the threshold, *contradicted* when
it lies on the other side, *inconclusive* otherwise, and *not measured* when the run has no
data for it (the ``note`` says why). The verdict never comes from the point estimate.

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

from kgfact.errors import KgfactError
from kgfact.finetune import memorised
from kgfact.ftsets import read_set
from kgfact.gap import EXPECTED, NO_PROMPT, crossed_contrast, finding, paired_cells
from kgfact.rundir import RunDir
from kgfact.slick import protocol_of
from kgfact.theory.metrics import GRADED

# a gap under this is "no practical harm": Gekhman et al. report EARLY_STOP gaps of a few points
NEGLIGIBLE = 0.05
COLUMNS = ["claim", "statement", "estimate", "ci_low", "ci_high", "expected", "threshold",
           "verdict", "n", "source", "caveat", "note"]


@dataclass(frozen=True)
class Claim:
    """One claim: what is estimated, the side it is expected on, and how it is measured."""

    name: str = field(metadata={"help": "Short id of the claim."})
    statement: str = field(metadata={"help": "The claim in words."})
    expected: str = field(metadata={"help": "'above' or 'below' the threshold."})
    measure: Callable[[RunDir, dict], dict] = field(metadata={
        "help": "Returns estimate, ci_low, ci_high, n and source (or a note)."})
    threshold: float = field(default=0.0, metadata={"help": "What the estimate is compared to."})
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


def _contrast(run: RunDir, context: dict, where: dict, group: str, first: str, second: str
              ) -> dict:
    """The gap of cells with ``group == first`` minus that of ``group == second``."""
    cells = _cells(run, context)
    for key, value in where.items():
        cells = cells[cells[key].isin(value if isinstance(value, list) else [value])]
    estimate, low, high = crossed_contrast(cells, group, first, second,
                                           n_boot=context["n_boot"], seed=context["seed"])
    missing = [g for g in (first, second) if not (cells[group] == g).any()]
    return {"estimate": estimate, "ci_low": low, "ci_high": high,
            "n": int(cells["qid"].nunique()),
            "source": f"predictions: gap({first}) - gap({second}), "
                      + ", ".join(f"{k} {v}" for k, v in where.items()),
            "note": f"no cells for {' or '.join(missing)}" if missing else ""}


def _gap_row(run: RunDir, context: dict, checkpoint: str) -> dict:
    gap = run.read_table("gap")
    row = gap[(gap["mode"] == "zero-shot") & (gap["distribution"] == "id")
              & (gap["checkpoint"] == checkpoint)]
    if row.empty:
        return {"note": f"the gap table has no zero-shot in-distribution {checkpoint} row"}
    r = row.iloc[0]
    return {"estimate": r["gap"], "ci_low": r["ci_low"], "ci_high": r["ci_high"], "n": r["n"],
            "source": f"gap: zero-shot, id, {checkpoint}"}


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
        return {"estimate": row["coef"], "ci_low": row["ci_low"], "ci_high": row["ci_high"],
                "n": int(row["n_points"]),
                "source": f"regression: {term} over {row['sets']} "
                          f"({int(row['n_clusters'])} clusters)"}
    return measure


def _theory(run: RunDir, context: dict) -> dict:
    config = run.manifest().get("stages", {}).get("theory", {}).get("config") or {}
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
            "n": int(r["n_buckets"]),
            "source": "theory_stats: Spearman of predicted vs measured reduction over A(P) "
                      "buckets (few-shot and CoT, both checkpoints)",
            "note": r.get("note", "") or ""}


def _idk(run: RunDir, context: dict) -> dict:
    p = _predictions(run, context)
    sets = set(p["set"].dropna())
    if "idk-relabel" not in sets:
        return {"note": "idk-relabel was not evaluated (add it to finetune.sets and "
                        "evaluate.sets)"}
    share = (run.manifest().get("stages", {}).get("ftsets", {}).get("config") or {}).get(
        "relabel_share", 0.5)
    base = {0.0: "ft-known", 1.0: "ft-unknown"}.get(share, f"mix-{round(100 * share)}")
    if base not in sets:
        return {"note": f"{base}, the set idk-relabel relabels, was not evaluated"}
    p = p[p["set"].isin(["idk-relabel", base]) & (p["mode"] == "zero-shot")
          & (p["distribution"] == "id") & (p["checkpoint"] == "convergence")]
    cells = p.assign(prompt=NO_PROMPT, seed=p["seed"].fillna(0) if "seed" in p else 0,
                     right=(p["correct"] & ~p["abstained"]).astype(float),
                     answered=(~p["abstained"]).astype(float))
    estimate, low, high = crossed_contrast(cells, "set", "idk-relabel", base, value="right",
                                           weight="answered", n_boot=context["n_boot"],
                                           seed=context["seed"])
    return {"estimate": estimate, "ci_low": low, "ci_high": high,
            "n": int(cells["qid"].nunique()),
            "source": f"predictions: accuracy on answered, idk-relabel - {base}, zero-shot, "
                      "id, convergence"}


CLAIMS = (
    Claim("unknown-hurts-at-convergence",
          "Fine-tuning on Unknown facts lowers in-distribution accuracy at CONVERGENCE "
          "(gap FT-Known - FT-Unknown, zero-shot, above 0)", EXPECTED["gap"],
          lambda run, c: _gap_row(run, c, "convergence")),
    Claim("unknown-harmless-at-early-stop",
          f"At EARLY_STOP the gap is negligible (zero-shot, in distribution, below "
          f"{NEGLIGIBLE})", "below", lambda run, c: _gap_row(run, c, "early_stop"),
          threshold=NEGLIGIBLE, checkpoint="early_stop"),
    Claim("gap-widens-with-training",
          "The gap widens from EARLY_STOP to CONVERGENCE (zero-shot, in distribution)",
          "above", lambda run, c: _contrast(run, c, {"mode": "zero-shot", "distribution": "id"},
                                            "checkpoint", "convergence", "early_stop")),
    Claim("gap-shrinks-near-id",
          "The gap is smaller near-ID (ID-split relations no set trained on) than in "
          "distribution (zero-shot, CONVERGENCE)", "above",
          lambda run, c: _contrast(run, c, {"mode": "zero-shot", "checkpoint": "convergence"},
                                   "distribution", "id", "near-id")),
    Claim("gap-shrinks-ood",
          "The gap is smaller out of distribution than in distribution (zero-shot, "
          "CONVERGENCE)", "above",
          lambda run, c: _contrast(run, c, {"mode": "zero-shot", "checkpoint": "convergence"},
                                   "distribution", "id", "ood")),
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
    Claim("theory-tracks-reductions",
          "The theory's predicted gap reductions track the measured ones (Spearman above 0)",
          "above", _theory, checkpoint=None),
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


def findings(run: RunDir | str, n_boot: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The findings table of ``run`` (module docstring): one row per claim in :data:`CLAIMS`.

    ``n_boot`` defaults to the evaluation's ``bootstrap`` setting.
    """
    run = RunDir.of(run)
    evaluation = (run.manifest().get("stages", {}).get("evaluate", {}).get("config") or {}
                  ).get("evaluate", {})
    strategies = [s for s in evaluation.get("strategies", ["random"]) if s != "none"]
    context = {"n_boot": n_boot or evaluation.get("bootstrap", 2000), "seed": seed,
               "strategy": "random" if "random" in strategies else strategies[0]}
    done: dict[str | None, str] = {}  # each checkpoint's caveats, computed once

    def caveat(checkpoint: str | None) -> str:
        if checkpoint not in done:
            done[checkpoint] = caveats(run, checkpoint)
        return done[checkpoint]

    rows = []
    for claim in CLAIMS:
        try:
            got = claim.measure(run, context)
        except KgfactError as exc:  # a table the run lacks: the claim is not measured
            got = {"note": str(exc)}
        measured = "estimate" in got and np.isfinite(got["estimate"])
        values = [got.get(k, np.nan) for k in ("estimate", "ci_low", "ci_high")]
        verdict = (finding(*values, claim.expected, claim.threshold) if measured
                   else "not measured")
        rows.append((claim.name, claim.statement, *values, claim.expected, claim.threshold,
                     verdict, got.get("n"), got.get("source", ""),
                     caveat(claim.checkpoint) if measured else "", got.get("note", "")))
    return pd.DataFrame(rows, columns=COLUMNS)
