"""``kgfact report``: self-contained HTML and Markdown whose numbers come from the run's tables,
and which renders in headless Chromium."""

from __future__ import annotations

import base64
import io
import math
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kgfact.cli import main
from kgfact.report import (ACCURACY_SCALE, SCALES, SECTIONS, VERDICTS, fig_findings, number,
                           write_report)
from kgfact.rundir import RunDir

SCREENSHOT = Path(__file__).resolve().parents[1] / "benchmarks" / "report_screenshot.sh"


def chromium() -> str:
    """Chromium's path (CI installs it; a test needing it is skipped elsewhere when absent)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        if os.environ.get("CI"):
            pytest.fail("Chromium must be installed in CI (.ci/run installs it)")
        pytest.skip("chromium is not installed")
    return browser


@pytest.fixture(scope="module")
def report(smoke_run, tmp_path_factory):
    """The smoke run's report, written again by ``kgfact report`` into a copy of the run."""
    run = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(smoke_run, run)
    for name in ("report.html", "report.md"):
        (run / name).unlink()
    assert main(["report", str(run)]) == 0
    return run


@pytest.mark.slow
def test_html_is_self_contained_with_every_section(report):
    page = (report / "report.html").read_text()
    assert "<script" not in page and not re.search(r'src="(?!data:)', page)
    for section in SECTIONS:
        assert f"<h2>{section.title}</h2>" in page
    assert "Not available" not in page, re.findall(r"Not available: [^<]*", page)
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == sum(s.figure is not None for s in SECTIONS)
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)


@pytest.mark.slow
def test_numbers_come_from_the_tables(report):
    run = RunDir(report)
    page, md = (report / "report.html").read_text(), (report / "report.md").read_text()
    for value in run.read_table("gap")["gap"]:
        assert number(value) in page and number(value) in md
    counts = run.read_table("slick").groupby("relation").size()
    mix = run.read_table("slick").query("category == 'Unknown'").groupby("relation").size()
    assert counts.sum() > 0 and all(f"| {rel} |" in md for rel in mix.index)
    figures = sorted((report / "report").glob("fig*.png"))
    assert len(figures) == md.count("![")


def test_a_partial_run_reports_what_is_missing(tmp_path):
    from tests.ftworld import make_run

    run = make_run(tmp_path / "run")
    slick = run.read_table("slick")
    run.write_table("slick", slick.assign(p_correct_greedy=(slick["category"] != "Unknown") * 1.0,
                                          p_correct_sample=0.5))
    write_report(run)
    md = (run.path / "report.md").read_text()
    assert "## SliCK knowledge categories" in md and "![SliCK" in md
    assert "*Not available:" in md and "dynamics.parquet does not exist" in md


def test_a_run_without_cot_steps_says_so_instead_of_a_figure(tmp_path):
    from tests.ftworld import make_run

    run = make_run(tmp_path / "run")
    slick = run.read_table("slick")
    run.write_table("slick", slick.assign(p_correct_greedy=(slick["category"] != "Unknown") * 1.0,
                                          p_correct_sample=0.5))
    run.write_table("cot_steps", pd.DataFrame({"model": pd.Series([], dtype=str),
                                               "status": pd.Series([], dtype=str)}))
    write_report(run)
    assert ("*Not available: no chain-of-thought step to verify: the run evaluated no CoT "
            "prompt, or no CoT answer stated a step*") in (run.path / "report.md").read_text()


@pytest.mark.slow
def test_report_renders_in_headless_chromium(report, tmp_path):
    """The documented screenshot script, in Chromium."""
    chromium()
    png = tmp_path / "report.png"
    subprocess.run(["bash", str(SCREENSHOT), str(report / "report.html"), str(png)],
                   check=True, timeout=120, capture_output=True)
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 20_000  # a page, not a blank


@pytest.mark.slow
def test_the_step_table_of_kgfact_run_names_its_own_step(smoke_run):
    """``kgfact run`` writes the report while its report step is recorded as running."""
    steps = (smoke_run / "report.md").read_text().split("## Steps")[1].split("\n## ")[0]
    assert "| report | this report |" in steps and "running" not in steps
    assert "| build |" in steps and re.search(r"\| slick \| \d+ s \|", steps)


# -- the findings at a glance, on a hand-built findings table ----------------------------------
NAN = float("nan")
FINDINGS = pd.DataFrame([
    # claim, statement, estimate, ci_low, ci_high, expected, threshold, margin, verdict,
    # holm_verdict, p_value, p_holm, n, source, caveat, note, share (estimate, low, high)
    ("unknown-hurts-at-convergence", "S1", 0.29166, 0.02089, 0.5, "above", 0.0, NAN,
     "supported", "supported", 0.0004, 0.0016, 24.0, "src one",
     "epoch limit hit; collapse onto the training set", "", NAN, NAN, NAN),
    ("unknown-harmless-at-early-stop", "S2", -0.05556, -0.1, -0.0123, "equal", 0.0, 0.05,
     "contradicted", "inconclusive", 0.03, 0.09, 24.0, "src two",
     "collapse onto the training set", "", NAN, NAN, NAN),
    ("theory-tracks-reductions", "S3", 0.6, -0.2, 0.9, "above", 0.0, NAN,
     "inconclusive", "inconclusive", 0.2, 0.6, 8.0, "src three", "",
     "estimate outside its interval; the verdict reads the interval", NAN, NAN, NAN),
    ("gap-shrinks-near-id", "S4", 0.1, 0.05, 0.15, "above", 0.0, NAN,
     "supported", "supported", 0.001, 0.004, 12.0, "src four",
     "collapse onto the training set; floor: accuracy under 0.10", "", 0.25, 0.125, 0.375),
    ("idk-raises-answered-accuracy", "S5", NAN, NAN, NAN, "above", 0.0, NAN,
     "not measured", "not measured", NAN, NAN, NAN, "", "", "idk-relabel was not evaluated",
     NAN, NAN, NAN),
], columns=["claim", "statement", "estimate", "ci_low", "ci_high", "expected", "threshold",
            "margin", "verdict", "holm_verdict", "p_value", "p_holm", "n", "source", "caveat",
            "note", "share_estimate", "share_ci_low", "share_ci_high"]).assign(
    effect=[1.23456, NAN, NAN, NAN, NAN])  # a column the report does not know: shown as it is

# every number written by the report's one rule: three decimals, two significant digits under
# 0.01, integers whole
RULE = re.compile(r"-?\d+\.\d{3}|-?0\.0*[1-9]\d?|-?[1-9](\.\d)?e-\d+|-?\d+")


@pytest.fixture(scope="module")
def glance(tmp_path_factory):
    """A run without evaluation whose findings table is :data:`FINDINGS`, and its report."""
    from tests.ftworld import make_run

    run = make_run(tmp_path_factory.mktemp("glance") / "run")
    slick = run.read_table("slick")
    run.write_table("slick", slick.assign(p_correct_greedy=(slick["category"] != "Unknown") * 1.0,
                                          p_correct_sample=0.5))
    run.write_table("findings", FINDINGS)
    write_report(run)
    return run


@pytest.mark.parametrize("value, text", [
    (0.29166, "0.292"), (-0.05556, "-0.056"), (0.02089, "0.021"), (0.00041, "0.00041"),
    (-0.0, "0.000"), (1.0, "1.000"), (3e-7, "3e-07"), (1234.5678, "1234.568"),
    (np.float32(0.5), "0.500"), (12, "12"), (np.int64(7), "7"), (NAN, "–"), (None, "–"),
    (True, "True"), ("ft-known", "ft-known")])
def test_one_rule_writes_every_number(value, text):
    assert number(value) == text


@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e9, max_value=1e9))
def test_a_number_is_written_to_the_rule_and_reads_back(x):
    text = number(x)
    assert RULE.fullmatch(text)
    if x == 0 or abs(x) >= 0.01:  # three decimals
        assert re.fullmatch(r"-?\d+\.\d{3}", text) and abs(float(text) - x) <= 0.0005 + 1e-9
    else:  # two significant digits
        assert math.isclose(float(text), x, rel_tol=0.05)


def test_the_findings_table_reads_at_a_glance(glance):
    md = (glance.path / "report.md").read_text()
    findings = md.split("## Findings")[1].split("\n## ")[0]
    assert findings.index("![Findings](report/fig1.png)") < findings.index("| # | claim |")
    table = [line for line in findings.splitlines()
             if line.startswith("| ") and not line.startswith("| ---")]
    assert table == [
        "| # | claim | expected | estimate [95% interval] | verdict | Holm's verdict | p "
        "| p (Holm) | n | caveats | notes | effect |",
        "| 1 | S1 *(src one)* | > 0.000 | 0.292 [0.021, 0.500] | ✓ supported | ✓ supported "
        "| 0.0004 | 0.0016 | 24 | [1] [2] |  | 1.235 |",
        "| 2 | S2 *(src two)* | within 0.000 ± 0.050 | -0.056 [-0.100, -0.012] "
        "| ✗ contradicted | ? inconclusive | 0.030 | 0.090 | 24 | [2] |  | – |",
        "| 3 | S3 *(src three)* | > 0.000 | 0.600 [-0.200, 0.900] | ? inconclusive "
        "| ? inconclusive | 0.200 | 0.600 | 8 |  | [4] | – |",
        "| 4 | S4 *(src four)* | > 0.000 | 0.100 [0.050, 0.150]; as a share of FT-Known's "
        "accuracy: 0.250 [0.125, 0.375] | ✓ supported | ✓ supported | 0.001 | 0.004 | 12 "
        "| [2] [3] |  | – |",
        "| 5 | S5 | > 0.000 | – | – not measured | – not measured | – | – | – |  | [5] | – |"]
    # each caveat (a row's caveats are joined by "; ") and each note stated once, numbered
    assert findings.split("**Caveats**\n\n")[1].split("\n\n")[0].splitlines() == [
        "1. epoch limit hit", "2. collapse onto the training set",
        "3. floor: accuracy under 0.10"]
    assert findings.split("**Notes**\n\n")[1].split("\n\n")[0].splitlines() == [
        "4. estimate outside its interval; the verdict reads the interval",
        "5. idk-relabel was not evaluated"]
    page = (glance.path / "report.html").read_text()
    for text in ("collapse onto the training set", "epoch limit hit", "the verdict reads"):
        assert md.count(text) == 1 and page.count(text) == 1
    # the findings open the report; the steps close it
    assert re.findall(r"<h2>([^<]*)</h2>", page)[0] == "Findings"
    assert md.index("## Findings") < md.index("## SliCK") < md.index("## Steps")
    # every number of every table of the report follows the rule
    for line in md.splitlines():
        if line.startswith("| "):
            for token in re.findall(r"(?<![\w.])-?\d[\d.e-]*", line):
                assert RULE.fullmatch(token.rstrip(".")), (token, line)


def test_the_forest_plot_draws_each_claim_against_its_threshold(glance):
    fig = fig_findings(glance)
    accuracy, spearman = (ax for ax in fig.axes)
    assert accuracy.get_xlabel() == ACCURACY_SCALE
    assert spearman.get_xlabel() == SCALES["theory-tracks-reductions"]
    assert [t.get_text() for t in accuracy.get_yticklabels()] == [
        "1  unknown-hurts-at-convergence", "2  unknown-harmless-at-early-stop",
        "4  gap-shrinks-near-id", "5  idk-raises-answered-accuracy"]
    assert [t.get_text() for t in spearman.get_yticklabels()] == ["3  theory-tracks-reductions"]

    def points(ax):  # (marker, colour, x, y) of each estimate
        return [(line.get_marker(), line.get_color(), *line.get_xydata()[0])
                for line in ax.lines if line.get_marker() not in ("None", "")]

    def bars(ax, colour):  # (low, high, y) of each interval of that colour
        return [tuple(line.get_xdata()) + (line.get_ydata()[0],) for line in ax.lines
                if line.get_marker() in ("None", "") and line.get_color() == colour]

    green, red, amber = (VERDICTS[v][1] for v in ("supported", "contradicted", "inconclusive"))
    assert points(accuracy) == [("o", green, 0.29166, 0), ("X", red, -0.05556, 1),
                                ("o", green, 0.1, 2)]
    assert bars(accuracy, green) == [(0.02089, 0.5, 0), (0.05, 0.15, 2)]
    assert points(spearman) == [("D", amber, 0.6, 0)]
    # a threshold tick on every row, the not-measured one included
    assert bars(accuracy, "black") == [(0.0, 0.0, y - 0.4) for y in range(4)]
    # the expected side: above the threshold, or within the margin for the claim of no
    # difference
    bands = [(round(p.get_paths()[0].vertices[:, 0].min(), 6),
              round(p.get_paths()[0].vertices[:, 0].max(), 6)) for p in accuracy.collections]
    assert bands[1] == (-0.05, 0.05) and bands[0][0] == 0.0 and bands[0][1] > 0.5
    texts = [t.get_text() for t in accuracy.texts]
    assert texts == ["✓ supported", "✗ contradicted (Holm: inconclusive)", "✓ supported",
                     "  not measured", "– not measured"]


class _Dom(HTMLParser):
    """The texts of the ``h2`` titles, of each ``tr`` of the findings table and of each ``li``
    in a DOM, and the ``src`` of each ``img`` with the title before it."""

    def __init__(self, dom: str):
        super().__init__()
        self.titles, self.rows, self.items, self.images = [], [], [], []
        self._text, self._in = None, []
        self.feed(dom)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._in.append("findings" in attrs.get("class", ""))
        elif tag == "tr" and self._in and self._in[-1]:
            self.rows.append([])
        elif tag in ("td", "th") and self._in and self._in[-1]:
            self.rows[-1].append("")
        elif tag in ("h2", "li"):
            self._text = ""
        elif tag == "img":
            self.images.append((self.titles[-1], attrs["src"]))

    def handle_endtag(self, tag):
        if tag == "table":
            self._in.pop()
        elif tag in ("h2", "li"):
            (self.titles if tag == "h2" else self.items).append(self._text)
            self._text = None

    def handle_data(self, data):
        if self._text is not None:
            self._text += data
        elif self._in and self._in[-1] and self.rows and self.rows[-1]:
            self.rows[-1][-1] += data.strip() if not self.rows[-1][-1] else " " + data.strip()


def test_the_findings_render_in_headless_chromium(glance, tmp_path):
    """As Chromium reads the page: the forest plot under the findings title, drawn at its own
    size (the plot's pixels are in the screenshot), the verdicts marked, each caveat once."""
    from PIL import Image

    page = glance.path / "report.html"
    dom = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                          f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                          page.as_uri()], check=True, timeout=120, capture_output=True,
                         text=True).stdout
    parsed = _Dom(dom)
    assert parsed.titles[0] == "Findings" and parsed.titles[-1] == "Steps"
    title, src = parsed.images[0]
    assert title == "Findings" and src.startswith("data:image/png;base64,")
    assert parsed.rows[1][3:6] == ["0.292 [0.021, 0.500]", "✓ supported", "✓ supported"]
    assert parsed.rows[2][2:6] == ["within 0.000 ± 0.050", "-0.056 [-0.100, -0.012]",
                                   "✗ contradicted", "? inconclusive"]
    assert parsed.rows[5][4] == "– not measured"
    assert parsed.items == ["epoch limit hit", "collapse onto the training set",
                            "floor: accuracy under 0.10",
                            "estimate outside its interval; the verdict reads the interval",
                            "idk-relabel was not evaluated"]
    png = tmp_path / "report.png"
    subprocess.run(["bash", str(SCREENSHOT), str(page), str(png), "1200,2400"], check=True,
                   timeout=120, capture_output=True)
    shot = np.asarray(Image.open(png).convert("RGB"))
    plot = np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
                      .convert("RGB"))
    # the plot's busiest row of pixels, found unscaled in some row of the screenshot
    row = plot[int(np.argmax((plot != 255).any(axis=2).sum(axis=1)))].tobytes()
    offsets = [line.tobytes().find(row) for line in shot]
    assert any(o >= 0 and o % 3 == 0 for o in offsets)


def test_a_findings_table_without_p_values_holm_or_margins(tmp_path):
    """A findings table from before p-values, Holm's verdicts and margins: the report shows
    what it has and leaves those columns out."""
    from kgfact.report import _findings_block

    run = RunDir(tmp_path / "run").create()
    with run.stage("report", {}):
        pass  # a manifest: a kgfact run
    run.write_table("findings", FINDINGS.drop(columns=[
        "margin", "p_value", "p_holm", "holm_verdict", "share_estimate", "share_ci_low",
        "share_ci_high", "effect"]))
    (block,) = _findings_block(run).values()
    assert block.md.splitlines()[2:5] == [
        "| # | claim | expected | estimate [95% interval] | verdict | n | caveats | notes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        "| 1 | S1 *(src one)* | > 0.000 | 0.292 [0.021, 0.500] | ✓ supported | 24 | [1] [2] |  |"]
    assert "| 2 | S2 *(src two)* | within 0.000 ± – | -0.056" in block.md
    fig = fig_findings(run)
    assert [t.get_text() for t in fig.axes[0].texts][:2] == ["✓ supported", "✗ contradicted"]


# -- what the report and `kgfact theory` show of the regression, dynamics and prediction 1 -----
HELD_OUT_LINE = ("prediction 1, zero-shot ID accuracy minus c + α·u(D) on the sets held out of "
                 "the fit at CONVERGENCE: ")


def test_the_report_shows_prediction_one_the_regressions_intervals_and_no_question_records(
        tmp_path, capsys):
    from kgfact.evaluate import accuracy_table
    from kgfact.gap import gekhman_regression
    from kgfact.report import REGRESSION

    from .test_findings import _noisy_dynamics
    from .test_theory import write_run

    run = write_run(tmp_path / "run")
    assert main(["theory", str(run.path), "--n-boot", "20", "--min-bucket", "1"]) == 0
    held = run.read_table("theory_heldout")  # only FT-Known and FT-Unknown: none held out
    assert HELD_OUT_LINE + f"not measured: {held['note'].iloc[0]}" in (
        capsys.readouterr().out.splitlines())
    dynamics = _noisy_dynamics()  # with each test question's record
    run.write_table("dynamics", dynamics)
    regression = gekhman_regression(dynamics, n_boot=200)
    run.write_table("regression", regression)
    run.write_table("accuracy", accuracy_table(run.read_table("predictions").assign(
        memorised=False)))
    write_report(run)
    md, page = (run.path / "report.md").read_text(), (run.path / "report.html").read_text()

    def section(title: str) -> str:
        return md.split(f"## {title}\n")[1].split("\n## ")[0]

    # the dynamics table without the per-question record
    assert "test_qids" not in md + page and "test_correct" not in md + page
    assert ("| set | seed | epoch | loss | n_known | n_unknown | n_known_fit | n_unknown_fit "
            "| dev_accuracy | early_stop | convergence | test_accuracy |"
            ) in section("Training dynamics").splitlines()
    # the regression: both intervals per coefficient, the note said once, in the caption (and
    # once among the findings' notes, for the two slopes' claims)
    note = regression["note"].iloc[0]
    accuracy = section("Accuracy vs % Unknown")
    assert note.endswith("which decides the finding") and accuracy.count(note) == 1
    assert section("Findings").count(note) == 1
    assert (f"**Gekhman's regression over ft-known,ft-unknown,mix-25,mix-50,mix-75 (31 points "
            f"in 11 clusters, 30 test questions, 200 bootstrap replicates; R² "
            f"{number(regression['r_squared'].iloc[0])}): {note}**") in accuracy
    assert "| " + " | ".join(REGRESSION) + " |" in accuracy.splitlines()
    b_unk = regression.set_index("term").loc["unknown_fit"]
    assert ("| unknown_fit | " + " | ".join(number(b_unk[c]) for c in REGRESSION[1:]) + " |"
            in accuracy.splitlines())
    assert b_unk["finding"] == "inconclusive"  # decided by the crossed bootstrap's interval
    # prediction 1 on the held-out sets in the theory's section
    theory = section("Predicted vs measured gap reduction")
    assert ("**prediction 1 on the sets held out of the fit (α and c fitted on ft-known, "
            "ft-unknown)**") in theory
    assert (f"| convergence | pooled | – | 0 | – | – | – | – | – | 0.050 | not measured "
            f"| – | {held['note'].iloc[0]} |") in theory.splitlines()


def test_kgfact_theory_prints_prediction_one_at_convergence(tmp_path, capsys):
    from kgfact.cli import show_theory

    from .test_theory import write_run

    run = write_run(tmp_path / "run")
    assert main(["theory", str(run.path), "--n-boot", "20", "--min-bucket", "1"]) == 0
    capsys.readouterr()
    tables = {n: run.read_table(n) for n in ("theory_metrics", "cot_steps", "theory_stats")}
    row = {"u": 0.0, "n": 12, "n_queries": 6, "measured": 0.7, "predicted": 0.68, "margin": 0.05,
           "p_value": 0.01, "dropped": 0, "fit_sets": "ft-known, ft-unknown", "note": ""}
    held = pd.DataFrame([
        row | {"checkpoint": "early_stop", "set": "mix-50", "difference": 0.3, "ci_low": 0.2,
               "ci_high": 0.4, "outcome": "contradicted"},
        row | {"checkpoint": "early_stop", "set": "pooled", "difference": 0.3, "ci_low": 0.2,
               "ci_high": 0.4, "outcome": "contradicted"},
        row | {"checkpoint": "convergence", "set": "mix-25", "difference": 0.01,
               "ci_low": -0.02, "ci_high": 0.04, "outcome": "as predicted"},
        row | {"checkpoint": "convergence", "set": "mix-50", "difference": 0.03,
               "ci_low": -0.01, "ci_high": 0.04, "outcome": "as predicted"},
        row | {"checkpoint": "convergence", "set": "pooled", "difference": 0.02,
               "ci_low": -0.01, "ci_high": 0.04, "outcome": "as predicted"}])
    show_theory(run, tables | {"theory_heldout": held})
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2] == HELD_OUT_LINE + ("+0.020 [-0.010, +0.040] over mix-25, mix-50: as "
                                         "predicted (within ±0.05)")
    assert lines[-1].startswith(f"tables in {run.path}: ")
