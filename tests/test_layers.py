"""The package's import structure: the import-linter contracts in ``pyproject.toml`` hold (stages
import only earlier stages, no cycles), and importing :mod:`kgfact.sampling` leaves Ray and vLLM
unimported, their backends being registered by name only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
