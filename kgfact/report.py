"""``kgfact report``: a run's findings as one self-contained HTML page and a Markdown file.

Every number and figure comes from the run's tables. Each figure function takes a
:class:`~kgfact.rundir.RunDir` and returns a matplotlib ``Figure``, so notebooks redraw the
report's figures through the same code; a section whose tables the run lacks (a run stopped
before evaluation, a fit with too few points) says so instead of failing the report.

Written to the run directory: the ``findings`` table (:mod:`kgfact.findings`, which heads the
report with a forest plot, the table with marked verdicts and each caveat stated once below it),
``report.html`` (figures embedded as base64 PNG), ``report.md`` and its figures under
``report/``. Every number of every table is written by :func:`number`.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kgfact.contract import CATEGORIES, protocol_of
from kgfact.errors import KgfactError
from kgfact.markdown import markdown_table
from kgfact.rundir import RunDir, atomic_write_text
from kgfact.stages import STAGES

STAGE = "report"
REPORT_FILES = ("report.html", "report.md")
FIGURE_DIR = "report"


def _subplots(*grid: int, figsize: tuple[float, float], **kw):
    """A figure and its axes without pyplot: no global state, no display needed, and a
    notebook shows the returned figure like any other."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*grid, **kw)


def _run(run: RunDir | str | Path) -> RunDir:
    return RunDir.of(run).require_manifest()


# -- numbers -----------------------------------------------------------------------------------
def number(value) -> str:
    """How the report writes every value of its tables: an integer in full; any other number
    with three decimals, or with two significant digits when it is not 0 and under 0.01 in size
    (a p-value of 0.0004 is no 0.000); "–" for a missing value; anything else as text.

    >>> [number(v) for v in (0.29166, -0.05556, 0.02089, 0.00041, -0.0, 1.0, 12, float("nan"))]
    ['0.292', '-0.056', '0.021', '0.00041', '0.000', '1.000', '12', '–']
    """
    if isinstance(value, (bool, np.bool_, str)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if np.isnan(value):
            return "–"
        if value != 0 and abs(value) < 0.01:
            return f"{value:.2g}"
        return f"{value + 0.0:.3f}"  # + 0.0 turns -0.0 into 0.0: no "-0.000"
    return "–" if value is None or value is pd.NA else str(value)


def interval(estimate, low, high) -> str:
    """``estimate [low, high]``, each written by :func:`number`; "–" when all three are
    missing."""
    if pd.isna([estimate, low, high]).all():
        return number(np.nan)
    return f"{number(estimate)} [{number(low)}, {number(high)}]"


# -- tables ------------------------------------------------------------------------------------
def category_mix(run: RunDir) -> pd.DataFrame:
    """SliCK questions per relation, split and category (counts; columns in category order),
    and how many of the Known ones are guesses (:mod:`kgfact.guessing`)."""
    slick = _run(run).read_table("slick")
    mix = (pd.crosstab([slick["relation"], slick["split"]], slick["category"])
           .reindex(columns=list(CATEGORIES), fill_value=0).rename_axis(columns=None))
    if "guess" in slick:  # tables from before guesses were flagged have no column
        known_guess = slick["guess"] & (slick["category"] != "Unknown")
        mix["Known guesses"] = known_guess.groupby([slick["relation"], slick["split"]]).sum()
    return mix.reset_index()


def slick_protocol(run: RunDir) -> pd.DataFrame:
    """Which SliCK protocol labelled the run, and what it leaves unmeasured."""
    protocol = protocol_of(_run(run))
    return pd.DataFrame({"protocol": [protocol], "P_correct(T>0) and p_correct": [
        "measured for every question" if protocol == "full" else
        "missing except for Unknown questions (greedy decides the others; samples are drawn "
        "only until the first right one)"]})


def knowledge_vs_graph(run: RunDir) -> pd.DataFrame:
    """Each SliCK question with its subject's popularity, degree and PageRank in the run's KG."""
    from kgfact.graph import KnowledgeGraph, degree_table, pagerank_table

    run = _run(run)
    kg = KnowledgeGraph.from_tables(run.read_table("triples"), run.read_table("entities"))
    nodes = degree_table(kg)[["id", "degree"]].merge(pagerank_table(kg)[["id", "pagerank"]],
                                                     on="id")
    qa = run.read_table("qa")[["qid", "subject", "popularity"]]
    return (run.read_table("slick").merge(qa, on="qid")
            .merge(nodes, left_on="subject", right_on="id", how="left").drop(columns="id"))


def graph_correlations(run: RunDir) -> pd.DataFrame:
    """Spearman correlation of P_Correct(T=0) with each subject graph measure."""
    from scipy.stats import spearmanr

    data = knowledge_vs_graph(run)
    rows = []
    for measure in ("popularity", "degree", "pagerank"):
        d = data[["p_correct_greedy", measure]].astype(float).dropna()
        # undefined (nan) for too few subjects or a constant side, as on tiny runs
        varied = len(d) > 2 and d.nunique().min() > 1
        rho = spearmanr(d["p_correct_greedy"], d[measure]).statistic if varied else np.nan
        rows.append((measure, float(rho), len(d)))
    return pd.DataFrame(rows, columns=["measure", "spearman_rho", "n"])


def kg_tables(run: RunDir) -> dict[str, pd.DataFrame]:
    """Graph metrics of the run's knowledge graph: summary, relations, top PageRank."""
    from kgfact.graph import (KnowledgeGraph, degree_table, pagerank_table, relation_counts,
                              summary)

    run = _run(run)
    kg = KnowledgeGraph.from_tables(run.read_table("triples"), run.read_table("entities"))
    top = pagerank_table(kg).merge(degree_table(kg)[["id", "degree"]], on="id")
    return {"summary": pd.DataFrame([summary(kg)]), "relations": relation_counts(kg),
            "top PageRank": top.nlargest(10, "pagerank").reset_index(drop=True)}


def subgraph_metrics(run: RunDir) -> pd.DataFrame:
    """Mean prompt-induced-subgraph metrics and A(P) per model set, mode and strategy."""
    from kgfact.theory.metrics import METRICS, group_means

    metrics = _run(run).read_table("theory_metrics")
    cols = [c for c in [*METRICS.names(), "A"] if c in metrics]
    keys = ["set", "mode", "strategy"]
    # prompts without a set are the base model's (and every model's set-independent ones)
    data = metrics[cols].astype(float).join(metrics[keys].fillna("base"))
    return group_means(data, keys, cols).assign(units=data.groupby(keys).size()).reset_index()


def cot_step_counts(run: RunDir) -> pd.DataFrame:
    """Chain-of-thought steps per model and verification status."""
    steps = _run(run).read_table("cot_steps")
    if steps.empty:  # else a figure of nothing: say why in the section instead
        raise KgfactError("no chain-of-thought step to verify: the run evaluated no CoT prompt, "
                          "or no CoT answer stated a step")
    return steps.groupby(["model", "status"]).size().unstack(fill_value=0).reset_index()


# -- figures -----------------------------------------------------------------------------------
# verdict: (mark, colour, matplotlib marker) in the findings table and the forest plot
VERDICTS = {"supported": ("✓", "#1a7f37", "o"), "contradicted": ("✗", "#c62828", "X"),
            "inconclusive": ("?", "#b26b00", "D"), "not measured": ("–", "#6e7781", "")}
# the axis of each claim whose estimate is not in units of accuracy; only estimates on one axis
# are comparable, so the forest plot draws one panel per axis
SCALES = {"theory-tracks-reductions": "Spearman's rho, predicted vs measured gap reduction"}
ACCURACY_SCALE = ("accuracy difference (gaps and their contrasts; Gekhman's slopes: accuracy "
                  "per share of the set fitted)")


def _verdict(verdict: str) -> tuple[str, str, str]:
    """Mark, colour and marker of ``verdict`` (a verdict the report does not know: no mark)."""
    return VERDICTS.get(verdict, ("", VERDICTS["not measured"][1], "s"))


def _margin(row: pd.Series) -> float:
    """The equivalence margin of an 'equal' claim (NaN when the table has none)."""
    return float(row.get("margin", np.nan))


def _extent(rows: pd.DataFrame) -> tuple[float, float]:
    """x limits showing every estimate, interval bound, threshold and margin of ``rows``."""
    margin = rows["margin"] if "margin" in rows else np.nan
    values = pd.concat([rows[c] for c in ("estimate", "ci_low", "ci_high", "threshold")]
                       + [rows["threshold"] - margin, rows["threshold"] + margin]).astype(float)
    values = values[np.isfinite(values)]
    lo, hi = float(values.min()), float(values.max())
    pad = 0.08 * (hi - lo) if hi > lo else 0.5
    return lo - pad, hi + pad


def fig_findings(run: RunDir):
    """Forest plot of the findings: one row per claim, numbered as in the report's table, with
    its estimate and 95% interval against its threshold; the side the claim expects is shaded
    (for a claim of no difference, threshold ± margin); marker and colour give the verdict,
    written at the right with Holm's where it differs. Claims on another scale than accuracy
    (:data:`SCALES`) get a panel of their own."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.transforms import blended_transform_factory

    table = _run(run).read_table("findings").reset_index(drop=True)
    scale = table["claim"].map(SCALES).fillna(ACCURACY_SCALE)
    groups = list(dict.fromkeys(scale))
    height = 0.4 * len(table) + 1.1 * len(groups) + 0.5
    fig, axes = _subplots(len(groups), 1, figsize=(10, height), squeeze=False, gridspec_kw={
        "height_ratios": [int((scale == g).sum()) for g in groups]})
    expected_colour = VERDICTS["supported"][1]
    for ax, group in zip(axes[:, 0], groups):
        rows = table[scale == group]
        lo, hi = _extent(rows)
        right = blended_transform_factory(ax.transAxes, ax.transData)
        for y, (_, row) in enumerate(rows.iterrows()):
            t, m = float(row["threshold"]), _margin(row)
            side = {"above": (t, hi), "below": (lo, t), "equal": (t - m, t + m)}.get(
                row["expected"])
            if side and np.isfinite(side).all():
                ax.fill_betweenx([y - 0.4, y + 0.4], *side, color=expected_colour, alpha=0.12,
                                 lw=0)
            ax.plot([t, t], [y - 0.4, y + 0.4], color="black", lw=1)
            mark, colour, marker = _verdict(row["verdict"])
            estimate, low, high = (float(row[c]) for c in ("estimate", "ci_low", "ci_high"))
            if np.isfinite(estimate):
                ax.plot([low, high], [y, y], color=colour, lw=2.2, solid_capstyle="butt")
                ax.plot(estimate, y, marker=marker, ms=8, color=colour,
                        mfc="white" if row["verdict"] == "inconclusive" else colour)
            else:
                ax.text(t, y, "  not measured", color=colour, va="center", fontsize="small",
                        style="italic")
            holm = row.get("holm_verdict", row["verdict"])
            ax.text(1.01, y, f"{mark} {row['verdict']}" + (
                f" (Holm: {holm})" if holm != row["verdict"] else ""),
                transform=right, color=colour, va="center", fontsize="small")
        ax.set_yticks(range(len(rows)), [f"{k + 1}  {c}" for k, c in rows["claim"].items()])
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set_xlim(lo, hi)
        ax.set_xlabel(group, fontsize="small")
    handles = [Line2D([], [], ls="", marker=marker, ms=7, color=colour, label=verdict,
                      mfc="white" if verdict == "inconclusive" else colour)
               for verdict, (_, colour, marker) in VERDICTS.items() if marker]
    handles += [Line2D([], [], color="grey", lw=2.2, label="95% interval"),
                Line2D([], [], color="black", lw=1, label="threshold"),
                Patch(color=expected_colour, alpha=0.12, label="expected side or margin")]
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize="small",
               frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / height))
    return fig


def fig_categories(run: RunDir):
    """Stacked bars: share of each SliCK category per relation and split."""
    mix = category_mix(run)
    labels = mix["relation"] + " " + mix["split"]
    shares = mix[list(CATEGORIES)].div(mix[list(CATEGORIES)].sum(axis=1), axis=0)
    fig, ax = _subplots(figsize=(7, 0.45 * len(mix) + 1.2))
    left = np.zeros(len(mix))
    for cat, colour in zip(CATEGORIES, ("#1a9850", "#91cf60", "#fee08b", "#d73027")):
        ax.barh(labels, shares[cat], left=left, color=colour, label=cat)
        left += shares[cat].to_numpy()
    ax.set_xlabel("share of questions")
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.legend(ncol=4, fontsize="small", loc="lower center", bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout()
    return fig


def fig_pcorrect_graph(run: RunDir):
    """P_Correct(T=0) against subject popularity, degree and PageRank, with binned means."""
    data = knowledge_vs_graph(run)
    fig, axes = _subplots(1, 3, figsize=(11, 3.4), sharey=True)
    for ax, measure in zip(axes, ("popularity", "degree", "pagerank")):
        d = data[["p_correct_greedy", measure]].astype(float).dropna()
        d = d[d[measure] > 0]
        ax.scatter(d[measure], d["p_correct_greedy"], s=10, alpha=0.35)
        if len(d) >= 10:
            bins = pd.qcut(np.log(d[measure]), q=min(8, d[measure].nunique()), duplicates="drop")
            mean = d.groupby(bins, observed=True).agg(x=(measure, "median"),
                                                      y=("p_correct_greedy", "mean"))
            ax.plot(mean["x"], mean["y"], "o-", color="black", label="binned mean")
            ax.legend(fontsize="small")
        ax.set_xscale("log")
        ax.set_xlabel(f"subject {measure}")
    axes[0].set_ylabel("P_Correct (greedy)")
    fig.tight_layout()
    return fig


def fig_accuracy_vs_unknown(run: RunDir):
    """Test accuracy against the % Unknown of the training set at EARLY_STOP and CONVERGENCE,
    with Gekhman's regression at full fit (acc = b0 + b_kn (1 - u) + b_unk u)."""
    run = _run(run)
    dyn = run.read_table("dynamics")
    size = dyn["n_known"] + dyn["n_unknown"]
    dyn = dyn.assign(unknown_pct=100 * dyn["n_unknown"] / size)
    fig, ax = _subplots(figsize=(6, 4))
    for column, marker, label in (("early_stop", "o", "EARLY_STOP"),
                                  ("convergence", "s", "CONVERGENCE")):
        pts = dyn[dyn[column].astype(bool)]
        ax.scatter(pts["unknown_pct"], pts["test_accuracy"], marker=marker, s=50, label=label)
    if run.has_table("regression"):
        reg = run.read_table("regression").set_index("term")["coef"]
        u = np.linspace(0, 1, 50)
        ax.plot(100 * u, reg["const"] + reg["known_fit"] * (1 - u) + reg["unknown_fit"] * u,
                "k--", label="regression, full fit")
    ax.set_xlabel("% Unknown in the fine-tuning set")
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def fig_dynamics(run: RunDir):
    """Training dynamics: share of each SliCK category's training examples fitted per epoch
    (mean over training seeds; the dotted line marks the earliest EARLY_STOP of a seed)."""
    dyn = _run(run).read_table("dynamics")
    sets = list(dict.fromkeys(dyn["set"]))
    fig, axes = _subplots(1, len(sets), figsize=(4.2 * len(sets), 3.4), sharey=True,
                             squeeze=False)
    for ax, name in zip(axes[0], sets):
        # with several training seeds, each epoch's mean over the seeds that reached it
        d = dyn[dyn["set"] == name].groupby("epoch", as_index=False).mean(numeric_only=True)
        for cat in CATEGORIES:
            if f"fit_{cat}" in d and d[f"fit_{cat}"].notna().any():
                ax.plot(d["epoch"], d[f"fit_{cat}"], "o-", label=cat)
        stop = d.loc[d["early_stop"] > 0, "epoch"]
        if len(stop):
            ax.axvline(stop.iloc[0], color="grey", ls=":", label="EARLY_STOP")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        if ax.get_legend_handles_labels()[0]:  # a set with no fitted shares has nothing to label
            ax.legend(fontsize="small")
    axes[0][0].set_ylabel("share of training examples fitted")
    fig.tight_layout()
    return fig


def fig_gap(run: RunDir):
    """Factuality gap (FT-Known minus FT-Unknown accuracy) with 95% CIs per prompt mode and
    strategy, checkpoint and distribution."""
    gap = _run(run).read_table("gap")
    dists = list(dict.fromkeys(gap["distribution"]))
    fig, axes = _subplots(1, len(dists), figsize=(5.5 * len(dists), 3.6), sharey=True,
                             squeeze=False)
    for ax, dist in zip(axes[0], dists):
        g = gap[gap["distribution"] == dist]
        g = g.set_index(g["mode"] + "\n" + g["strategy"])
        prompts = list(dict.fromkeys(g.index))
        x = np.arange(len(prompts))
        for k, ckpt in enumerate(dict.fromkeys(g["checkpoint"])):
            c = g[g["checkpoint"] == ckpt].reindex(prompts)
            ax.errorbar(x + 0.15 * (k - 0.5), c["gap"],
                        yerr=[c["gap"] - c["ci_low"], c["ci_high"] - c["gap"]],
                        fmt="o", capsize=3, label=ckpt)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(x, prompts, fontsize="small")
        ax.set_title(f"{dist.upper()} test queries")
        ax.legend(fontsize="small")
    axes[0][0].set_ylabel("gap: acc(FT-Known) - acc(FT-Unknown)")
    fig.tight_layout()
    return fig


def primary_predictions(run: RunDir) -> pd.DataFrame:
    """The theory's A(P) quantile buckets under its primary A(P) that had enough units to be
    tested (the buckets the findings' theory claim is computed on); the one bucket per
    checkpoint and mode of the ``all`` family when none had."""
    run = _run(run)
    config = run.stage_config("theory") or {}
    pred = run.read_table("theory_predictions")
    pred = pred[(pred["augmentation"] == config.get("augmentation", "default"))
                & pred["used"].astype(bool)]
    quantiles = pred[pred["family"] == "a_quantile"]
    return quantiles if len(quantiles) else pred[pred["family"] == "all"]


def fig_predicted_vs_measured(run: RunDir):
    """Predicted against measured gap reduction (zero-shot gap minus the prompt's gap), and
    predicted against measured gap with the measured gap's 95% CI, per A(P) bucket."""
    pred = primary_predictions(run)
    fig, (left, right) = _subplots(1, 2, figsize=(10, 4.2))
    for mode, d in pred.groupby("mode"):
        left.scatter(d["predicted_reduction"], d["measured_reduction"], label=mode)
        right.errorbar(d["predicted_gap"], d["measured_gap"],
                       yerr=[d["measured_gap"] - d["ci_low"], d["ci_high"] - d["measured_gap"]],
                       fmt="o", capsize=2, alpha=0.8, label=mode)
    for ax, what in ((left, "gap reduction"), (right, "gap")):
        cols = (["predicted_reduction", "measured_reduction"] if ax is left
                else ["predicted_gap", "ci_low", "ci_high"])
        lo, hi = float(pred[cols].min().min()), float(pred[cols].max().max())
        ax.plot([lo, hi], [lo, hi], "k:", lw=1, label="y = x")
        ax.set_xlabel(f"predicted {what}")
        ax.set_ylabel(f"measured {what}")
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def _theory_tables(run: RunDir) -> dict[str, pd.DataFrame]:
    config = run.stage_config("theory") or {}
    stats = run.read_table("theory_stats")
    stats = stats[stats["augmentation"].isin([config.get("augmentation", "default"), "none"])
                  & stats["family"].isin(["all", "a_quantile", "ood", "training"])]
    controls = run.read_table("theory_controls")
    return {**(held_out_table(run) if run.has_table("theory_heldout") else {}),
            "predictions per bucket": primary_predictions(run).drop(
                columns=["augmentation", "family", "used"]),
            "agreement statistics": stats,
            "controls": controls[["control", "checkpoint", "mode", "treatment", "baseline",
                                  "predicted", "measured", "difference", "ci_low", "ci_high",
                                  "outcome", "n_queries"]]}


def held_out_table(run: RunDir) -> dict[str, pd.DataFrame]:
    """Prediction 1 on the sets held out of the fit (``theory_heldout``): each held-out set's
    and their pooled zero-shot in-distribution accuracy, measured against c + α·u(D), per
    checkpoint; the sets α and c were fitted on are the caption."""
    held = run.read_table("theory_heldout")
    return {f"prediction 1 on the sets held out of the fit (α and c fitted on "
            f"{held['fit_sets'].iloc[0]})": held[[
                "checkpoint", "set", "u", "n_queries", "measured", "predicted", "difference",
                "ci_low", "ci_high", "margin", "outcome", "p_value", "note"]]}


def fig_cot_steps(run: RunDir):
    """Chain-of-thought steps per model by verification status."""
    counts = cot_step_counts(run).set_index("model")
    fig, ax = _subplots(figsize=(7, 0.4 * len(counts) + 1.4))
    counts.plot.barh(stacked=True, ax=ax)
    ax.set_xlabel("CoT steps")
    ax.invert_yaxis()
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


# -- the report --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Block:
    """Part of a section that writes its own HTML and Markdown (the findings table and its
    caveats), where a plain table would not do."""

    html: str
    md: str


@dataclass
class Section:
    """One part of the report: text, an optional figure with its caption, and tables (a
    DataFrame or a :class:`Block` each)."""

    title: str
    text: str
    figure: Callable | None = None
    tables: Callable[[RunDir], dict[str, pd.DataFrame | Block]] | None = None
    caption: str = ""
    rendered: dict = field(default_factory=dict)


def _gap_table(run: RunDir) -> dict[str, pd.DataFrame]:
    return {"gap": run.read_table("gap")}


def _accuracy_table(run: RunDir) -> dict[str, pd.DataFrame]:
    acc = run.read_table("accuracy")
    acc = acc[(acc["relation"] == "all") & (acc["category"] == "all")]
    tables = {"accuracy (all relations and categories)": acc.pivot_table(
        index="model", columns=["distribution", "mode", "strategy"], values="accuracy")
        .reset_index()}
    if run.has_table("regression"):
        tables.update(regression_table(run))
    return tables


# dynamics columns the report leaves out: the fit it plots, and each test question's record
# (a JSON list of question ids and a string of 0/1, one per question: for the regression)
DYNAMICS_HIDDEN = ("train_fit", "test_qids", "test_correct")
# Gekhman's regression: what differs by coefficient (the fit's size and note are the caption)
REGRESSION = ["term", "coef", "std_err", "ci_low", "ci_high", "p_value", "boot_ci_low",
              "boot_ci_high", "boot_p_value", "boot_dropped", "expected", "finding"]


def regression_table(run: RunDir) -> dict[str, pd.DataFrame]:
    """Gekhman's regression, one row per coefficient with its clustered interval and, where the
    dynamics recorded each test question, the crossed bootstrap's (``boot_ci_low``,
    ``boot_ci_high``), which then decides the finding; the caption gives the fit's size and the
    table's ``note`` (which interval decides), once."""
    reg = run.read_table("regression")
    first = reg.iloc[0]
    size = [f"{int(first['n_points'])} points in {int(first['n_clusters'])} clusters"]
    if pd.notna(first.get("n_questions")):
        size.append(f"{int(first['n_questions'])} test questions, "
                    f"{int(first['n_boot'])} bootstrap replicates")
    caption = (f"Gekhman's regression over {first['sets']} ({', '.join(size)}; R² "
               f"{number(first['r_squared'])})")
    if pd.notna(first.get("note")) and first.get("note"):
        caption += f": {first['note']}"
    return {caption: reg[[c for c in REGRESSION if c in reg]]}


def _footnotes(cells: Iterable, sep: str | None) -> tuple[list[list[int]], list[str]]:
    """Each distinct item of ``cells`` once, in order of first appearance, and the indices of
    each cell's items; a cell holds several items joined by ``sep`` (one when ``sep`` is None),
    and one that is no text (NaN) holds none."""
    items: dict[str, int] = {}
    refs = []
    for cell in cells:
        parts = (cell.split(sep) if sep else [cell]) if isinstance(cell, str) else []
        parts = [part.strip() for part in parts if part.strip()]
        refs.append([items.setdefault(part, len(items)) for part in dict.fromkeys(parts)])
    return refs, list(items)


def _expected(row: pd.Series) -> str:
    """Where the claim expects its interval: ``> t``, ``< t`` or ``within t ± margin``."""
    t = number(float(row["threshold"]))
    if row["expected"] == "equal":
        return f"within {t} ± {number(_margin(row))}"
    return {"above": f"> {t}", "below": f"< {t}"}.get(row["expected"], f"{row['expected']} {t}")


# findings columns drawn into the table's own cells; any other column is shown as it is
_FINDINGS_DRAWN = {"claim", "statement", "estimate", "ci_low", "ci_high", "expected",
                   "threshold", "verdict", "n", "source", "caveat", "note", "margin",
                   "p_value", "p_holm", "holm_verdict", "dropped", "share_estimate",
                   "share_ci_low", "share_ci_high"}


def _findings_block(run: RunDir) -> dict[str, Block]:
    """The findings table at a glance: ``estimate [low, high]``, verdicts (and Holm's, where the
    table has them) marked, rows numbered as in the forest plot, and each caveat and note stated
    once in a numbered list below, referenced from the rows it concerns."""
    table = run.read_table("findings").reset_index(drop=True)
    blank = pd.Series("", index=table.index)
    # a caveat cell joins the recipe artefacts of its row, each of which may concern many rows;
    # a note is about its own row
    caveat_refs, caveats = _footnotes(table.get("caveat", blank), "; ")
    note_refs, notes = _footnotes(table.get("note", blank), None)
    note_refs = [[len(caveats) + i for i in refs] for refs in note_refs]

    def small(text: str) -> str:
        return f"<div class=small>{html.escape(text)}</div>"

    def verdict(value) -> tuple[str, str, str]:
        return (f"{_verdict(value)[0]} {value}".strip(), "",
                f"v v-{str(value).replace(' ', '-')}")

    def refs(indices: list[int]) -> tuple[str, str, str]:
        return (" ".join(f"[{i + 1}]" for i in indices),
                " ".join(f'<a href="#fn{i + 1}">[{i + 1}]</a>' for i in indices), "refs")

    def claim(row) -> tuple[str, str, str]:
        source = row.get("source", "")
        source = source if isinstance(source, str) else ""
        return (f"{row['statement']} *({source})*" if source else str(row["statement"]),
                html.escape(str(row["statement"])) + (small(source) if source else ""),
                "claim")

    def estimate(row) -> tuple[str, str, str]:
        text = interval(row["estimate"], row["ci_low"], row["ci_high"])
        share = [float(row.get(f"share_{c}", np.nan)) for c in ("estimate", "ci_low", "ci_high")]
        if not np.isfinite(share[0]):
            return text, "", ""
        extra = f"as a share of FT-Known's accuracy: {interval(*share)}"
        return f"{text}; {extra}", html.escape(text) + small(extra), ""

    def count(value) -> str:
        return number(int(value)) if pd.notna(value) else number(np.nan)

    columns: dict[str, Callable[[int, pd.Series], tuple[str, str, str]]] = {
        "#": lambda k, row: (str(k + 1), "", ""),
        "claim": lambda k, row: claim(row),
        "expected": lambda k, row: (_expected(row), "", ""),
        "estimate [95% interval]": lambda k, row: estimate(row),
        "verdict": lambda k, row: verdict(row["verdict"]),
    }
    if "holm_verdict" in table:
        columns["Holm's verdict"] = lambda k, row: verdict(row["holm_verdict"])
    for name, label in (("p_value", "p"), ("p_holm", "p (Holm)")):
        if name in table:
            columns[label] = lambda k, row, name=name: (number(float(row[name])), "", "")
    columns["n"] = lambda k, row: (count(row.get("n")), "", "")
    if caveats:
        columns["caveats"] = lambda k, row: refs(caveat_refs[k])
    if notes:
        columns["notes"] = lambda k, row: refs(note_refs[k])
    for name in (c for c in table if c not in _FINDINGS_DRAWN):
        columns[name] = lambda k, row, name=name: (number(row[name]), "", "")

    cells = [[get(k, row) for get in columns.values()] for k, row in table.iterrows()]
    md_table = markdown_table(pd.DataFrame([[text for text, _, _ in row] for row in cells],
                                           columns=list(columns)))
    html_rows = "".join(
        "<tr>" + "".join((f'<td class="{cls}">' if cls else "<td>")
                         + (inner or html.escape(text)) + "</td>"
                         for text, inner, cls in row) + "</tr>"
        for row in cells)
    key = " · ".join(f"{mark} {name}" for name, (mark, _, _) in VERDICTS.items())
    page = [f"<p class=key>{html.escape(key)}</p>",
            "<table class='t findings'><thead><tr>"
            + "".join(f"<th>{html.escape(c)}</th>" for c in columns)
            + f"</tr></thead><tbody>{html_rows}</tbody></table>"]
    md = [key, "", md_table]
    for title, items, first in (("Caveats", caveats, 1), ("Notes", notes, len(caveats) + 1)):
        if items:
            page.append(f"<h3>{title}</h3><ol start={first}>" + "".join(
                f'<li id="fn{first + i}">{html.escape(item)}</li>'
                for i, item in enumerate(items)) + "</ol>")
            md += ["", f"**{title}**", ""] + [f"{first + i}. {item}"
                                               for i, item in enumerate(items)]
    return {"findings (95% intervals over training seeds, exemplar sets and test queries)":
            Block("".join(page), "\n".join(md))}


SECTIONS = (
    Section("Findings",
            "Each claim of the literature this run tests, with its estimate, 95% interval and "
            "verdict: supported when the interval lies on the expected side of the threshold, "
            "contradicted when on the other side, inconclusive otherwise (never from the point "
            "estimate); Holm's verdict keeps a decision only where the p-value adjusted for "
            "the table's many claims is under 0.05. A caveat names a recipe artefact to weigh "
            "before reading a verdict as a finding.", fig_findings, _findings_block,
            "Forest plot: each claim's estimate (marker) and 95% interval (bar), one row per "
            "claim, numbered as in the table. The x axis is the estimate in the claim's own "
            "units, without rescaling: accuracy differences share one panel (gaps between "
            "FT-Known and FT-Unknown, differences of such gaps, and Gekhman's slopes, the "
            "change in accuracy from fitting none to all of a set); a claim on another scale "
            "(the theory's rank correlation) has a panel of its own. The black tick is the "
            "claim's threshold; the shaded band is the side where the claim expects its "
            "interval (for a claim of no difference, the threshold ± its margin). Marker and "
            "colour give the verdict, written at the right with Holm's where it differs."),
    Section("SliCK knowledge categories",
            "Share of questions per SliCK category (HighlyKnown, MaybeKnown, WeaklyKnown, "
            "Unknown), per relation and split. A Known fact is a guess when its answer is the "
            "model's default answer for the relation or is spelled out in the question; the "
            "baselines are the accuracies of always giving the most frequent train answer and "
            "of always giving the model's default.", fig_categories,
            lambda run: {"protocol": slick_protocol(run),
                         "questions per category": category_mix(run),
                         **({"accuracy without knowledge": run.read_table("guess_baselines")}
                            if run.has_table("guess_baselines") else {})}),
    Section("What the model knows and the graph",
            "P_Correct(T=0) of each SliCK question against its subject's popularity, degree and "
            "PageRank in the run's knowledge graph.", fig_pcorrect_graph,
            lambda run: {"Spearman correlations": graph_correlations(run)}),
    Section("Accuracy vs % Unknown",
            "Test accuracy of each trained set at EARLY_STOP and CONVERGENCE against its share "
            "of Unknown examples, with Gekhman's linear model evaluated at full fit.",
            fig_accuracy_vs_unknown, _accuracy_table),
    Section("Training dynamics",
            "Share of the training examples of each SliCK category the model fits after every "
            "epoch.", fig_dynamics,
            lambda run: {"dynamics": run.read_table("dynamics").drop(
                columns=list(DYNAMICS_HIDDEN), errors="ignore")}),
    Section("Factuality gap",
            "acc(FT-Known) - acc(FT-Unknown) on the same test queries, per prompt mode and "
            "exemplar strategy, EARLY_STOP and CONVERGENCE, in (ID) and out of distribution "
            "(OOD), with paired bootstrap 95% CIs.", fig_gap, _gap_table),
    Section("Predicted vs measured gap reduction",
            "The prompt-subgraph theory's predicted against measured gap reduction and gap per "
            "A(P) bucket (buckets by checkpoint, mode and strategy, primary A(P)); prediction 1 "
            "on the sets held out of the fit of α and c, agreement statistics and the controls' "
            "outcomes, with bootstrap CIs.",
            fig_predicted_vs_measured, _theory_tables),
    Section("Graph metrics of the knowledge graph",
            "Size and shape of the run's knowledge graph, edges per relation, and the entities "
            "with the highest PageRank.", None, kg_tables),
    Section("Graph metrics of the prompt-induced subgraphs",
            "Mean metrics of the subgraph each prompt induces, per model set, prompt mode and "
            "strategy (units: prompt-query pairs).", None,
            lambda run: {"prompt subgraphs": subgraph_metrics(run)}),
    Section("Chain-of-thought step verification",
            "Each CoT step checked against the knowledge graph.", fig_cot_steps,
            lambda run: {"steps per status": cot_step_counts(run)}),
)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _md_table(df: pd.DataFrame) -> str:
    return markdown_table(df, number)


def _html_table(df: pd.DataFrame) -> str:
    return df.astype(object).map(number).to_html(index=False, border=0, classes="t")


def render(run: RunDir) -> list[Section]:
    """Each section with its figure (PNG bytes) and tables, or the reason they are missing."""
    out = []
    for s in SECTIONS:
        rendered: dict = {}
        try:
            rendered["png"] = _png(s.figure(run)) if s.figure else None
            rendered["tables"] = s.tables(run) if s.tables else {}
        except KgfactError as exc:  # a missing or unreadable table: say which
            rendered = {"missing": str(exc)}
        out.append(Section(s.title, s.text, s.figure, s.tables, s.caption, rendered))
    return out


def _header(run: RunDir) -> tuple[str, list[tuple[str, str]]]:
    manifest = run.manifest()
    stages = manifest.get("stages", {})
    timings = [(step, _step_time(step, info)) for step in STAGES
               if (info := stages.get(step))]
    model = (run.stage_config("slick") or {}).get("model", {}).get("name", "?")
    git = next((i.get("git") for i in stages.values() if i.get("git")), None)
    title = f"kgfact report: {run.path.name} (model {model}, git {str(git)[:10]})"
    return title, timings


def _step_time(step: str, info: dict) -> str:
    # the report step is recorded as running while it writes this very page; a time from an
    # earlier run of it would be stale, so neither is shown
    if step == "report" and info.get("status") == "running":
        return "this report"
    return f"{info['seconds']:.0f} s" if "seconds" in info else info["status"]


def write_report(run: RunDir | str | Path) -> list[Path]:
    """Write ``report.html`` (self-contained), ``report.md`` and ``report/*.png``; returns the
    paths of the two pages."""
    from kgfact.findings import findings

    run = _run(run)
    with run.stage(STAGE, {}):
        if run.has_table("predictions"):
            run.write_table("findings", findings(run))
        return _write_pages(run)


def run_stage(run: RunDir | str | Path, config: None = None, *,
              progress: bool = True) -> list[Path]:
    """The report stage (:mod:`kgfact.stages`): :func:`write_report`."""
    return write_report(run)


def _write_pages(run: RunDir) -> list[Path]:
    sections = render(run)
    title, timings = _header(run)
    fig_dir = run.path / FIGURE_DIR
    fig_dir.mkdir(exist_ok=True)
    md = [f"# {title}", ""]
    body = [f"<h1>{html.escape(title)}</h1>"]
    for k, s in enumerate(sections, 1):
        md += [f"## {s.title}", "", s.text, ""]
        body += [f"<h2>{html.escape(s.title)}</h2>", f"<p>{html.escape(s.text)}</p>"]
        if "missing" in s.rendered:
            md += [f"*Not available: {s.rendered['missing']}*", ""]
            body.append(f"<p class=missing>Not available: "
                        f"{html.escape(s.rendered['missing'])}</p>")
            continue
        if s.rendered["png"]:
            name = f"fig{k}.png"
            (fig_dir / name).write_bytes(s.rendered["png"])
            md += [f"![{s.title}]({FIGURE_DIR}/{name})", ""]
            body.append(f'<img alt="{html.escape(s.title)}" src="data:image/png;base64,'
                        f'{base64.b64encode(s.rendered["png"]).decode()}">')
            if s.caption:
                md += [f"*{s.caption}*", ""]
                body.append(f"<p class=caption>{html.escape(s.caption)}</p>")
        for caption, table in s.rendered["tables"].items():
            block = table if isinstance(table, Block) else Block(_html_table(table),
                                                                _md_table(table))
            md += [f"**{caption}**", "", block.md, ""]
            body += [f"<h3>{html.escape(caption)}</h3>", block.html]
    if timings:  # last: the findings open the report
        t = pd.DataFrame(timings, columns=["step", "time"])
        md += ["## Steps", "", _md_table(t), ""]
        body += ["<h2>Steps</h2>", _html_table(t)]
    verdicts = "".join(f".v-{name.replace(' ', '-')}{{color:{colour}}}"
                       for name, (_, colour, _) in VERDICTS.items())
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table.t{border-collapse:collapse;font-size:13px;margin:0.5em 0;display:block;"
             "overflow-x:auto;font-variant-numeric:tabular-nums}"
             "table.t td,table.t th{border-bottom:1px solid #ddd;padding:2px 8px;"
             "text-align:right;vertical-align:top}img{max-width:100%}.missing{color:#a33}"
             ".caption,.key{font-size:13px;color:#555}.small{font-size:11px;color:#777}"
             "table.findings td{white-space:nowrap}table.findings .small,table.t td.refs"
             "{white-space:normal}table.t td.claim{text-align:left;white-space:normal;"
             "min-width:16em}table.t td.v{text-align:left;font-weight:bold}"
             f"{verdicts}ol{{font-size:13px}}")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n")
    paths = [run.path / name for name in REPORT_FILES]
    atomic_write_text(paths[0], page)
    atomic_write_text(paths[1], "\n".join(md))
    return paths
