"""``kgfact report``: self-contained HTML and Markdown whose numbers come from the run's tables,
and which renders in headless Chromium."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kgfact.cli import main
from kgfact.report import SECTIONS, write_report
from kgfact.rundir import RunDir

SCREENSHOT = Path(__file__).resolve().parents[1] / "benchmarks" / "report_screenshot.sh"


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
        assert f"{value:.4g}" in page and f"{value:.4g}" in md
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


@pytest.mark.slow
def test_report_renders_in_headless_chromium(report, tmp_path):
    """The documented screenshot script, in Chromium (CI installs it; skipped elsewhere when
    Chromium is absent)."""
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        if os.environ.get("CI"):
            pytest.fail("Chromium must be installed in CI (.ci/run installs it)")
        pytest.skip("chromium is not installed")
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
