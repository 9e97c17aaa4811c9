"""The ``theory`` stage: metrics, step verification and predictions for a run directory.

Reads ``triples``, ``entities``, ``qa``, ``slick``, ``ftsets`` (+ ``ftsets/<set>``), ``prompts``,
``prompt_edges`` and ``predictions``; writes ``theory_prompt_edges``, ``theory_metrics``,
``cot_steps``, ``theory_fit``, ``theory_heldout`` (prediction 1 on the sets held out of the
fit), ``theory_predictions``, ``theory_stats``, ``theory_ood`` and ``theory_controls``,
``theory_primary`` (the primary test) and ``theory_report.md``: predicted vs measured in
Markdown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kgfact.config import check_fields
from kgfact.errors import KgfactError
from kgfact.markdown import markdown_table
from kgfact.prompts import modes_with
from kgfact.rundir import RunDir, atomic_write_text
from kgfact.theory.controls import CONTROLS
from kgfact.theory.graphs import TRIPLE, FineTuningSet, ModelKnowledge, flag_edges
from kgfact.theory.metrics import (AUGMENTATIONS, GRADED, METRICS, MetricConfig, MetricEngine,
                                   PromptTable, group_means)
from kgfact.theory.predict import GapStudy, PredictionConfig, relation_distances
from kgfact.theory.steps import STATUSES, StepParser, verify_steps

STAGE = "theory"
REPORT = "theory_report.md"


@dataclass(frozen=True)
class TheoryConfig:
    """Everything the theory stage can be told."""

    metrics: MetricConfig = field(default_factory=MetricConfig, metadata={
        "help": "Radii of the graph metrics."})
    prediction: PredictionConfig = field(default_factory=PredictionConfig, metadata={
        "help": "Fit, buckets and bootstrap."})
    augmentation: str = field(default="default", metadata={
        "help": "A(P) of theory_metrics and the controls."})
    augmentations: tuple[str, ...] | None = field(default=None, metadata={
        "help": "A(P) functions compared in the predictions; None: every registered one."})
    controls: tuple[str, ...] | None = field(default=None, metadata={
        "help": "Controlled comparisons to report; None: every registered one."})

    def __post_init__(self) -> None:
        check_fields(self)
        AUGMENTATIONS.get(self.augmentation)
        for name in self.augmentations or ():
            AUGMENTATIONS.get(name)
        for name in self.controls or ():
            CONTROLS.get(name)


def _read(run: RunDir, name: str) -> pd.DataFrame:
    return run.read_table(name, check_columns=True)


def run_theory(run: RunDir | str | Path, config: TheoryConfig = TheoryConfig()
               ) -> dict[str, pd.DataFrame]:
    """Compute and write every theory table of ``run``; returns them by name.

    Prompts used with a fine-tuning set are judged against that set's ``D``; prompts of the
    base model (``set`` missing) against the union of the FT-Known and FT-Unknown sets, the two
    models whose gap the theory predicts.
    """
    run = RunDir.of(run).require_manifest()
    pcfg = config.prediction
    triples, qa, slick, entities = (_read(run, n) for n in ("triples", "qa", "slick", "entities"))
    prompts, edges, predictions, index = (_read(run, n) for n in
                                          ("prompts", "prompt_edges", "predictions", "ftsets"))
    share = dict(zip(index["set"], index["unknown_share"].astype(float)))
    wanted = sorted({*prompts["set"].dropna(), *predictions["set"].dropna(), pcfg.known_set,
                     pcfg.unknown_set} & set(share))
    ft_tables = {n: run.read_table(f"ftsets/{n}") for n in wanted}
    knowledge = ModelKnowledge.from_tables(triples, qa, slick, entities,
                                           extra=[edges, *ft_tables.values()])
    ftsets = {n: FineTuningSet.from_table(n, ft_tables[n], knowledge) for n in wanted}
    for name in (pcfg.known_set, pcfg.unknown_set):
        if name not in ftsets:
            raise KgfactError(f"fine-tuning set {name!r} is missing from {run.path}/ftsets")
    reference = FineTuningSet.from_table(
        "reference", pd.concat([ft_tables[pcfg.known_set], ft_tables[pcfg.unknown_set]]),
        knowledge)

    with run.stage(STAGE, config) as info:
        edges = edges.merge(prompts[["prompt_id", "set"]], on="prompt_id", how="left")
        flagged = pd.concat([flag_edges(group.drop(columns="set"), knowledge,
                                        ftsets.get(name, reference))
                             for name, group in edges.groupby(edges["set"].fillna(""))]
                            or [flag_edges(edges.drop(columns="set"), knowledge, None)],
                            ignore_index=True)
        table = PromptTable.build(prompts, flagged, knowledge)
        units = predictions[["prompt_id", "qid"]].drop_duplicates().merge(
            qa[["qid", *TRIPLE]], on="qid", how="left").reset_index(drop=True)
        if units["subject"].isna().any():
            raise KgfactError(f"predictions name qid(s) missing from qa: "
                              f"{', '.join(units['qid'][units['subject'].isna()].unique()[:5])}")
        engine = MetricEngine(knowledge, table, config.metrics)
        values = engine.compute(units)
        augs = list(dict.fromkeys([config.augmentation,
                                   *(config.augmentations or AUGMENTATIONS.names())]))
        # lazy SliCK leaves p_correct unmeasured: an A(P) built on it is refused when asked
        # for, and otherwise left out of the comparison (and said so)
        not_measured = [] if knowledge.graded_measured else [n for n in augs if n in GRADED]
        asked = [n for n in not_measured if n == config.augmentation
                 or n in (config.augmentations or ())]
        if asked:
            raise KgfactError(f"A(P) {asked[0]!r} needs p_correct, the share of right SliCK "
                              "answers, which this run's SliCK protocol 'lazy' does not measure; "
                              "label with 'kgfact slick --protocol full --force' or choose "
                              "another --augmentation")
        augs = [n for n in augs if n not in not_measured]
        a = pd.DataFrame({n: AUGMENTATIONS.get(n)(values) for n in augs}, index=units.index)
        metrics = units.merge(prompts[["prompt_id", "set", "strategy"]], on="prompt_id",
                              how="left")
        metrics = pd.concat([metrics, values, a[[config.augmentation]].rename(
            columns={config.augmentation: "A"})], axis=1)
        metrics = metrics[["prompt_id", "qid", "set", "mode", "strategy", *TRIPLE,
                           *METRICS.names(), "A"]]

        # the answers of modes with steps (CoT) state steps to verify
        stepped = predictions[modes_with(predictions["mode"], "steps")]
        steps = verify_steps(stepped, StepParser(knowledge, entities), flagged)

        ft_relations = sorted(set(ftsets[pcfg.known_set].relations)
                              | set(ftsets[pcfg.unknown_set].relations))
        distances = relation_distances(triples, ft_relations,
                                       sorted(predictions["relation"].unique()))
        controls = {n: CONTROLS.get(n) for n in (config.controls or CONTROLS.names())}
        # a relabelled set (idk-relabel) trains its Unknown facts as "I don't know": u(D) does
        # not say what it learnt, so it is not held out to test prediction 1 unless named
        named = {pcfg.known_set, pcfg.unknown_set, *(pcfg.fit_sets or ())}
        relabelled = {n for n, t in ft_tables.items()
                      if "relabelled" in t and t["relabelled"].any() and n not in named}
        study = GapStudy(predictions, prompts,
                         {n: s for n, s in share.items() if n not in relabelled},
                         pd.concat([units[["prompt_id", "qid"]], a], axis=1), distances,
                         controls, pcfg, primary=config.augmentation)
        tables = study.tables()
        tables["theory_controls"] = _metric_changes(tables["theory_controls"], metrics)
        # edge codes depend on the run's codec: useless outside this process
        tables = {"theory_prompt_edges": flagged.drop(columns="code"), "theory_metrics": metrics,
                  "cot_steps": steps, **tables}
        for name, df in tables.items():
            run.write_table(name, df)
        atomic_write_text(run.path / REPORT, report_markdown(tables, config, tuple(not_measured)))
        info["report"] = {**_report(tables, config), "not_measured": not_measured}
    return tables


def _metric_changes(controls: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """Add ``d_<metric>``: mean metric of the treatment's units minus the baseline's, per mode,
    so a reader can check that a control moved its own metric and no other."""
    means = group_means(metrics, ["mode", "strategy"], METRICS.names())
    out = controls.copy()
    for name in METRICS.names():
        t = means[name].reindex(pd.MultiIndex.from_frame(out[["mode", "treatment"]])).to_numpy()
        b = means[name].reindex(pd.MultiIndex.from_frame(out[["mode", "baseline"]])).to_numpy()
        out[f"d_{name}"] = t - b
    return out


def _report(tables: dict[str, pd.DataFrame], config: TheoryConfig) -> dict:
    """Headline numbers for the manifest."""
    stats = tables["theory_stats"]
    main = stats[(stats["augmentation"] == config.augmentation) & (stats["family"] == "all")
                 & (stats["mode"] == "all")]
    steps = tables["cot_steps"]
    return {
        "units": len(tables["theory_metrics"]),
        "cot_steps": {s: int(n) for s, n in steps["status"].value_counts().items()},
        "alpha": {c: float(a) for c, a in tables["theory_fit"].groupby("checkpoint")["alpha"]
                  .first().items()},
        "statistics": {s: (None if np.isnan(v) else round(float(v), 4))
                       for s, v in zip(main["statistic"], main["value"])},
    }


def _cell(value) -> str:
    if isinstance(value, (float, np.floating)):
        return "–" if np.isnan(value) else f"{value:+.3f}"
    return str(value)


def _ci(point: float, low: float, high: float) -> str:
    return f"{_cell(point)} [{_cell(low)}, {_cell(high)}]"


def _markdown_table(df: pd.DataFrame) -> str:
    return markdown_table(df, _cell)


def report_markdown(tables: dict[str, pd.DataFrame], config: TheoryConfig,
                    not_measured: tuple[str, ...] = ()) -> str:
    """The stage's tables as a Markdown report: fit, predicted vs measured, statistics, OOD,
    controls and CoT step verification, every estimate with its bootstrap interval;
    ``not_measured`` names the A(P) left out because SliCK did not measure p_correct."""
    level = f"{100 * config.prediction.level:g}%"
    fit = tables["theory_fit"].drop_duplicates("checkpoint")
    preds = tables["theory_predictions"]
    preds = preds[(preds["augmentation"] == config.augmentation) & (preds["family"] == "all")]
    stats = tables["theory_stats"]
    main = stats[(stats["family"] == "all") & (stats["mode"] == "all")]
    ood, controls, steps = tables["theory_ood"], tables["theory_controls"], tables["cot_steps"]
    ood = ood[~modes_with(ood["mode"], "exemplars")]
    parts = [
        "# Theory: predicted vs measured factuality gaps",
        f"Intervals: {level} crossed bootstrap over training seeds, exemplar sets and test "
        "queries "
        f"({config.prediction.n_boot} replicates, seed {config.prediction.seed})."
        + (f" Not compared: A(P) {', '.join(not_measured)}, which needs p_correct, not measured "
           "by this run's SliCK protocol 'lazy'." if not_measured else ""),
        "## Primary test: measured vs predicted reductions across the designed interventions",
        _primary_markdown(tables["theory_primary"], level),
        "## Fit of α on zero-shot in-distribution accuracy",
        _markdown_table(pd.DataFrame({
            "checkpoint": fit["checkpoint"],
            "α": [_ci(*r) for r in fit[["alpha", "alpha_ci_low", "alpha_ci_high"]].to_numpy()],
            "predicted zero-shot gap": fit["predicted_gap_known_unknown"]})),
        "## Prediction 1 on the sets held out of the fit",
        _held_out_markdown(tables["theory_heldout"], level),
        f"## Exploratory: predicted vs measured gap per bucket (A = {config.augmentation})",
        "Buckets group observational units (A(P) is not varied by design within them); read "
        "them as exploratory, whatever their intervals.",
        _markdown_table(pd.DataFrame({
            "checkpoint": preds["checkpoint"], "mode": preds["mode"],
            "strategy": preds["strategy"], "units": preds["n"], "mean A": preds["A_mean"],
            "zero-shot Δ": preds["zero_shot_gap"],
            "measured Δ*": [_ci(*r) for r in preds[["measured_gap", "ci_low", "ci_high"]]
                            .to_numpy()],
            "predicted Δ*": preds["predicted_gap"], "Δ* ≤ Δ": preds["holds"]})),
        "## Exploratory: statistics over buckets (checkpoint × mode × strategy)",
        _markdown_table(pd.DataFrame({
            "A(P)": main["augmentation"], "statistic": main["statistic"],
            "value": [_ci(*r) for r in main[["value", "ci_low", "ci_high"]].to_numpy()],
            "p": [_p(v) for v in main["p_value"]], "dropped replicates": main["dropped"],
            "buckets": main["n_buckets"]})),
        "## Out of distribution: zero-shot gap vs relation distance",
        _markdown_table(pd.DataFrame({
            "checkpoint": ood["checkpoint"], "relation": ood["relation"],
            "distance": ood["distance"], "hops": ood["hops"], "units": ood["n"],
            "gap": [_ci(*r) for r in ood[["gap", "ci_low", "ci_high"]].to_numpy()]})),
        _markdown_table(stats[stats["family"].isin(["ood", "training"])][
            ["family", "checkpoint", "statistic", "value", "ci_low", "ci_high"]]),
        "## Controlled prompts",
        _markdown_table(pd.DataFrame({
            "control": controls["control"], "checkpoint": controls["checkpoint"],
            "mode": controls["mode"], "stated": controls["expected"],
            "A predicts": controls["predicted"],
            "gap difference": [_ci(*r) for r in controls[["difference", "ci_low", "ci_high"]]
                               .to_numpy()],
            "outcome": controls["outcome"]})),
        "## Generated CoT steps checked against the graph",
        _markdown_table(steps.groupby(["model", "status"]).size().unstack(fill_value=0)
                        .reindex(columns=list(STATUSES), fill_value=0).reset_index()),
    ]
    return "\n\n".join(parts) + "\n"


def _p(value: float) -> str:
    return "–" if np.isnan(value) else f"{value:.3g}"


def _held_out_markdown(held: pd.DataFrame, level: str) -> str:
    """Measured against predicted (c + α·u) zero-shot accuracy of every held-out set, or the
    note saying that no set was held out."""
    if (held["outcome"] == "not measured").all():
        return held["note"].iloc[0] + "."
    return (f"α and c fitted on {held['fit_sets'].iloc[0]}; the difference measured − "
            f"predicted with its {level} interval is *as predicted* when the interval lies "
            f"within ±{held['margin'].iloc[0]:g}.\n\n" + _markdown_table(pd.DataFrame({
                "checkpoint": held["checkpoint"], "set": held["set"], "u": held["u"],
                "measured": held["measured"], "predicted": held["predicted"],
                "difference": [_ci(*r) for r in held[["difference", "ci_low", "ci_high"]]
                               .to_numpy()],
                "outcome": held["outcome"], "p": [_p(v) for v in held["p_value"]]})))


def _primary_markdown(primary: pd.DataFrame, level: str) -> str:
    """The primary test in a few sentences: slope, interval, verdict, power."""
    r = primary.iloc[0]
    if not r["n_units"]:
        return ("Not measured: no unit of the controls' strategies "
                f"({r['strategies']}) was evaluated in distribution.")
    return (f"Slope of measured on predicted reduction (A = {r['augmentation']}, strategies "
            f"{r['strategies']}; one intercept per checkpoint and mode): "
            f"{_ci(r['slope'], r['ci_low'], r['ci_high'])} ({level}), {r['verdict']} "
            f"(p = {r['p_value']:.3g}, above 0); the interval "
            f"{'covers' if r['covers_one'] else 'excludes'} 1, the theory's slope. "
            f"{int(r['n_units'])} units, {int(r['n_queries'])} queries. Power for a slope of "
            f"{r['effect']:g}: {r['power']:.2f} (bootstrap SE {r['se']:.3f}); variance from "
            f"seeds {r['var_seeds']:.3g}, exemplar sets {r['var_exemplar_sets']:.3g}, queries "
            f"{r['var_queries']:.3g}.")


def run_stage(run: RunDir | str | Path, config: TheoryConfig, *,
              progress: bool = True) -> dict[str, pd.DataFrame]:
    """The theory stage (:mod:`kgfact.stages`): :func:`run_theory`."""
    return run_theory(run, config)
