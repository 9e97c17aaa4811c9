"""kgfact as a user installs it: the wheel (presets and queries inside, metadata, the commands,
run from anywhere), presets by name, the version, and the git hash only of kgfact's own
checkout."""

from __future__ import annotations

import email
import json
import os
import re
import socket
import subprocess
import sys
import sysconfig
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

import kgfact
from kgfact.cli import main
from kgfact.findings import CLAIMS
from kgfact.pipeline import load_config
from kgfact.rundir import _git_hash

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ["entityquestions", "quickstart", "smoke", "study", "wikidata"]
# what `kgfact presets` prints: each preset's description, and the time its header states
PRESET_LINES = [
    "entityquestions  SliCK's relations from EntityQuestions, which you supply; hours on a CPU",
    "quickstart       the study's design at a small size (2 training seeds, 6 queries per "
    "relation), offline with Gemma 3 270M",
    "smoke            the whole study in miniature, offline with Gemma 3 270M; the test suite "
    "runs it",
    "study            the design the findings rest on: designed prompt interventions, registered "
    "claims, offline with Gemma 3 270M (measured: 100.5 min)",
    "wikidata         SliCK's relations from the public Wikidata endpoint with Qwen2.5-3B on a GPU",
]
NOT_A_PRESET = ("kgfact: error: no config file or preset 'nosuch'; the presets are "
                "entityquestions, quickstart, smoke, study, wikidata ('kgfact presets' says what "
                "each runs)\n")


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org",
                           "-c", "init.defaultBranch=main", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout.strip()


def repository(path: Path, name: str, package: str = "kgfact") -> Path:
    """A git work tree at ``path`` whose pyproject.toml names project ``name``, with a
    ``package`` folder holding a module, committed; returns the commit."""
    (path / package).mkdir(parents=True)
    (path / package / "__init__.py").write_text("")
    (path / "pyproject.toml").write_text(f'[project]\nname = "{name}"\nversion = "1"\n')
    git(path, "init", "-q")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "first")
    return git(path, "rev-parse", "HEAD")


def test_git_hash_only_of_kgfacts_own_checkout(tmp_path):
    commit = repository(tmp_path / "kgfact-checkout", "kgfact")
    assert re.fullmatch("[0-9a-f]{40}", commit)
    assert _git_hash(tmp_path / "kgfact-checkout" / "kgfact") == commit
    # kgfact installed inside another project's repository: that project's commit is not ours
    repository(tmp_path / "other", "other", package=".venv/lib/site-packages/kgfact")
    assert _git_hash(tmp_path / "other" / ".venv/lib/site-packages/kgfact") is None
    # ... even when that project has a kgfact folder of its own, or kgfact's checkout is a
    # folder of the other project's work tree rather than its own repository
    repository(tmp_path / "vendoring", "vendoring")
    assert _git_hash(tmp_path / "vendoring" / "kgfact") is None
    (tmp_path / "other" / "vendor" / "kgfact").mkdir(parents=True)
    (tmp_path / "other" / "vendor" / "pyproject.toml").write_text('[project]\nname = "kgfact"\n')
    assert _git_hash(tmp_path / "other" / "vendor" / "kgfact") is None
    # no repository at all, and a work tree whose pyproject.toml is not TOML
    (tmp_path / "plain" / "kgfact").mkdir(parents=True)
    assert _git_hash(tmp_path / "plain" / "kgfact") is None
    (tmp_path / "kgfact-checkout" / "pyproject.toml").write_text("[project\n")
    assert _git_hash(tmp_path / "kgfact-checkout" / "kgfact") is None


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"kgfact {kgfact.__version__}\n"
    assert metadata.version("kgfact") == kgfact.__version__  # the metadata reads it there


def test_presets_by_name(capsys, tmp_path, monkeypatch):
    assert main(["presets"]) == 0
    assert capsys.readouterr().out.splitlines() == PRESET_LINES
    for name in PRESETS:
        assert load_config(name) == load_config(ROOT / "configs" / f"{name}.toml")
    assert main(["run", "nosuch"]) == 2
    assert capsys.readouterr().err == NOT_A_PRESET
    # a file of a preset's name is that file; a folder of that name is not a config
    monkeypatch.chdir(tmp_path)
    Path("smoke").write_text('description = "mine"\n[build.qa]\nin_distribution = ["P36"]\n')
    assert load_config("smoke").description == "mine"
    Path("study").mkdir()
    assert load_config("study") == load_config(ROOT / "configs" / "study.toml")


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


@pytest.mark.slow
def test_the_wheel_installed_in_a_fresh_virtualenv(tmp_path):
    """Build the wheel, install it into a new virtualenv that borrows the project's installed
    dependencies but not its source tree, and use it from a folder unrelated to the checkout:
    inside another project's git repository, whose commit kgfact must not record."""
    wheels = tmp_path / "wheels"
    # the build backend comes from the package index as for any pip install (the project's
    # virtualenv does not hold hatchling)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                    "--disable-pip-version-check", "--wheel-dir", str(wheels), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("kgfact-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = email.message_from_bytes(archive.read(
            f"kgfact-{kgfact.__version__}.dist-info/METADATA"))
    assert {n for n in names if n.startswith("kgfact/configs/")} == {
        f"kgfact/configs/{p}.toml" for p in PRESETS}
    assert {n for n in names if n.startswith("kgfact/queries/")} == {
        f"kgfact/queries/{q.name}" for q in (ROOT / "queries").glob("*.rq")}
    assert f"kgfact-{kgfact.__version__}.dist-info/licenses/LICENSE" in names
    assert info["Version"] == kgfact.__version__ and info["License-Expression"] == "MIT"
    assert "Project-URL" not in info and "Home-page" not in info  # no address is known
    requires = {re.split("[<>=;! ]", r)[0] for r in info.get_all("Requires-Dist")}
    assert "accelerate" not in requires and "transformers" in requires
    # the index shows the description away from the repository: every link must be absolute
    description = info.get_payload()
    assert description.startswith("# kgfact\n")
    links = re.findall(r"\]\(([^)]*)\)|<(\w[^>]*)>", description)
    assert all(re.match("https?://", a or b) for a, b in links), links

    project = tmp_path / "another-project"
    commit = repository(project, "another-project", package="src")
    venv = project / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = subprocess.run([_venv_python(venv), "-c", "import sysconfig; "
                              "print(sysconfig.get_path('purelib'))"], check=True,
                             capture_output=True, text=True).stdout.strip()
    # the dependencies, not the checkout: a .pth line adds the folder without reading its own
    # .pth files, among them the editable install's, which puts the checkout on sys.path
    Path(purelib, "project-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(_venv_python(venv)), "install",
                    "--no-deps", "--no-index", "--quiet", "--disable-pip-version-check",
                    str(wheel)], check=True, capture_output=True, timeout=300)

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
           "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "KGFACT_HOME": str(tmp_path / "home")}

    def run(*argv: str | Path, cwd: Path = work, timeout: float = 300) -> str:
        done = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=timeout)
        assert done.returncode == 0, done.stderr
        return done.stdout

    python = _venv_python(venv)
    assert Path(run(python, "-c", "import kgfact; print(kgfact.__file__)").strip()) == \
        Path(purelib) / "kgfact" / "__init__.py"
    version = f"kgfact {kgfact.__version__}\n"
    assert run("kgfact", "--version") == version
    assert run(python, "-m", "kgfact", "--version") == version
    assert run("kgfact", "presets").splitlines() == PRESET_LINES
    loaded = run(python, "-c", "from kgfact.pipeline import load_config, presets; "
                 "print(*(type(load_config(n)).__name__ for n in presets()))")
    assert loaded.split() == ["ExperimentConfig"] * len(PRESETS)
    error = subprocess.run(["kgfact", "run", "nosuch"], cwd=work, env=env,
                           capture_output=True, text=True, timeout=300)
    assert (error.returncode, error.stderr) == (2, NOT_A_PRESET)

    # a stage recorded from inside the other project: its version, and no commit
    record = ("import json; from kgfact.rundir import RunDir\n"
              "run = RunDir('run')\n"
              "with run.stage('build', {}):\n    pass\n"
              "entry = run.manifest()['stages']['build']\n"
              "print(json.dumps([entry['git'], entry['versions']['kgfact']]))")
    assert json.loads(run(python, "-c", record, cwd=project)) == [None, kgfact.__version__]
    assert git(project, "rev-parse", "HEAD") == commit  # the repository was there all along

    # the smoke preset by name: its dry run, then the preset itself made tiny by --set (one
    # prompt and sample on 24 train questions per relation, one epoch, two queries per
    # relation), on its own store, read back through the Python API
    dry = run("kgfact", "run", "smoke", "--dry-run")
    assert "kgfact run --dry-run: runs/smoke" in dry and "\ntotal: " in dry
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    store = ["--store-location", tmp_path / "store", "--store-port", str(port)]
    tiny = ["--set", "slick.n_prompts=1", "--set", "slick.sampling.n_samples=1",
            "--set", 'slick.splits=["train"]', "--set", "slick.max_questions_per_relation=24",
            "--set", "finetune.max_epochs=1", "--set", "evaluate.max_questions_per_relation=2",
            "--set", 'evaluate.modes=["zero-shot", "few-shot"]',
            "--set", "theory.prediction.n_boot=20", "--set", "evaluate.bootstrap=20"]
    env["KGFACT_MODELS"] = os.environ["KGFACT_MODELS"]  # the converted Gemma, not again
    try:
        run("kgfact", "run", "smoke", "--run", "tiny", "--quiet", *store, *tiny, timeout=1200)
    finally:
        subprocess.run(["kgfact", "store", "stop", "--location", str(tmp_path / "store")],
                       cwd=work, env=env, capture_output=True, timeout=120)
    read = ("import json, kgfact\nrun = kgfact.open_run('tiny')\n"
            "print(json.dumps([run.status(), list(run.findings()['claim']), "
            "'predictions' in run.tables()]))")
    status, claims, has_predictions = json.loads(run(python, "-c", read))
    assert set(status.values()) == {"complete"} and has_predictions
    assert claims == [c.name for c in CLAIMS]
