"""The package's structure: the import-linter contracts in ``pyproject.toml`` hold (stages are
peers that import no other stage, commands run stages, stages use shared modules and shared
modules import no stage, the pipeline reaches stages through the registry only, no cycles), every
registered stage is under those contracts, importing :mod:`kgfact.sampling` leaves Ray and vLLM
unimported (their backends being registered by name only), and no public function or class of
the package is left unused."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OPTIONAL = ("ray", "vllm", "kgfact.sampling.ray", "kgfact.sampling.vllm")


def test_import_contracts_hold():
    lint = Path(sys.executable).parent / ("lint-imports.exe" if os.name == "nt" else "lint-imports")
    if not lint.exists():
        pytest.fail(f"{lint} is missing: pip install 'kgfact[test]' (it brings import-linter)")
    # --no-cache: leave no .import_linter_cache in the repository
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def independent_stages() -> list[str]:
    """The modules of the contract that keeps the stages apart (``type = "independence"``)."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"]
    (peers,) = [c for c in contracts if c["type"] == "independence"]
    return peers["modules"]


def outside_the_contracts(stages) -> list[str]:
    """The registered stages whose runner's module the independence contract does not name."""
    modules = independent_stages()
    return [n for n in stages if stages.get(n).runner.split(":")[0] not in modules]


def test_every_registered_stage_is_under_the_stage_contracts(monkeypatch):
    from kgfact.stages import STAGES, Stage

    assert outside_the_contracts(STAGES) == []
    # a stage added to the registry but not to pyproject.toml is found
    monkeypatch.setattr(STAGES, "_items", dict(STAGES._items))  # put back afterwards
    STAGES.register("extra", Stage("extra", "a stage no contract names", None,
                                   "kgfact.extra:run_stage", (), ()))
    assert outside_the_contracts(STAGES) == ["extra"]


def names_used() -> set[str]:
    """Every name the code of the package, the tests, the benchmarks and the notebooks uses:
    names, attributes and imports (docstrings and comments do not count), and the parts of a
    ``"module:attribute"`` string, as registries name what they load lazily."""
    sources = [p.read_text() for d in ("kgfact", "tests", "benchmarks")
               for p in (ROOT / d).rglob("*.py")]
    for notebook in (ROOT / "notebooks").glob("*.ipynb"):
        sources += ["\n".join(line for line in "".join(cell["source"]).splitlines()
                              if not line.startswith("%"))  # IPython magics
                    for cell in json.loads(notebook.read_text())["cells"]
                    if cell["cell_type"] == "code"]
    used = set()
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Name):
                used.add(node.id)
            elif isinstance(node, ast.Attribute):
                used.add(node.attr)
            elif isinstance(node, ast.alias):
                used.add(node.name.rpartition(".")[2])
            elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
                  and re.fullmatch(r"[\w.]+:\w+", node.value)):
                used.update(re.split(r"[.:]", node.value))
    return used


def test_no_public_function_or_class_of_the_package_is_unused():
    used = names_used()
    unused = []
    for path in sorted((ROOT / "kgfact").rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if (isinstance(node, (ast.FunctionDef, ast.ClassDef))
                    and not node.name.startswith("_") and node.name not in used
                    # a Protocol is an interface: what satisfies it need not name it
                    and not any(getattr(b, "id", None) == "Protocol"
                                for b in getattr(node, "bases", ()))):
                unused.append(f"{path.relative_to(ROOT)}: {node.name}")
    assert unused == []


def test_importing_sampling_imports_neither_ray_nor_vllm():
    code = """if True:
        import json, sys
        import kgfact.sampling
        from kgfact.sampling import BACKENDS, recorded_backend
        # naming the backends, and what each records, needs none of them
        names = {name: recorded_backend(name) for name in BACKENDS}
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("ray", "vllm")
                        or m.startswith(("kgfact.sampling.ray", "kgfact.sampling.vllm")))
        print(json.dumps({"names": names, "loaded": loaded}))
    """
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["loaded"] == []
    assert {k: out["names"][k] for k in ("kgfact", "vllm", "ray")} == {
        "kgfact": "kgfact", "vllm": "vllm", "ray": "kgfact"}


def test_backends_registered_by_name_are_the_backend_classes():
    """Each lazy entry names its class correctly, and what it records without importing the
    class agrees with the class (the ray backend runs the built-in engine: it records that)."""
    from kgfact.sampling import BACKENDS, KgfactEngine, LazyBackend, RayBackend, VllmEngine
    from kgfact.sampling.ray import RayBackend as ray_module_backend
    from kgfact.sampling.vllm import VllmEngine as vllm_module_engine

    assert RayBackend is ray_module_backend and VllmEngine is vllm_module_engine
    for name, cls in (("kgfact", KgfactEngine), ("vllm", VllmEngine), ("ray", RayBackend)):
        entry = BACKENDS.get(name)
        assert isinstance(entry, LazyBackend) and entry.load() is cls
        assert (entry.answers_from or name) == getattr(cls, "answers_from", name)
    with pytest.raises(AttributeError):
        import kgfact.sampling

        kgfact.sampling.NoSuchBackend  # noqa: B018
