"""Shared fixtures: an isolated KGFACT_HOME, and a real Oxigraph server on loopback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import miniworld

SHARED_EQ = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "entityquestions"


@pytest.fixture(scope="session", autouse=True)
def kgfact_home(tmp_path_factory) -> Path:
    """Every test session gets its own cache root, so tests never touch ~/.cache/kgfact."""
    from kgfact.models import models_home

    # converted models are kept where they are: converting Gemma takes a minute
    os.environ.setdefault("KGFACT_MODELS", str(models_home()))
    home = tmp_path_factory.mktemp("kgfact-home")
    old = os.environ.get("KGFACT_HOME")
    os.environ["KGFACT_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("KGFACT_HOME", None)
    else:
        os.environ["KGFACT_HOME"] = old


@pytest.fixture(scope="session")
def miniworld_nt(tmp_path_factory) -> Path:
    from kgfact.graph import KnowledgeGraph, write_rdf

    path = tmp_path_factory.mktemp("miniworld") / "miniworld.nt"
    write_rdf(KnowledgeGraph.from_tables(*miniworld.tables()), path)
    return path


@pytest.fixture(scope="session")
def mini_store(tmp_path_factory, miniworld_nt):
    """A real Oxigraph server on a free loopback port, loaded with the mini world."""
    from kgfact.data.store import OxigraphStore, StoreConfig

    store = OxigraphStore(StoreConfig(location=tmp_path_factory.mktemp("store"), port=0))
    store.load([miniworld_nt])
    store.start(load_default=False)
    yield store
    store.stop()


@pytest.fixture
def eq_root() -> Path:
    """The shared EntityQuestions copy: required in CI, skipped with a reason elsewhere."""
    if not SHARED_EQ.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"EntityQuestions must be present in CI at {SHARED_EQ}")
        pytest.skip(f"EntityQuestions not found at {SHARED_EQ}")
    return SHARED_EQ


@pytest.fixture(autouse=True)
def _one_thread_for_tiny_models(request):
    """Tiny-model tests run on one thread: their matrices are too small to share, and with
    other work on this 2-core machine, waiting for a second thread costs milliseconds a call."""
    if not {"tiny_model_dir", "tiny_qwen_dir"} & set(request.fixturenames):
        yield
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from tests.tinymodel import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory) -> Path:
    """A tiny Qwen2-architecture model whose tokenizer has no BOS token (as Qwen2.5's)."""
    from tests.tinymodel import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-qwen"), arch="qwen2")


SMOKE_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "smoke.toml"


def kgfact_command(*args: str) -> list[str]:
    """The ``kgfact`` command line run in a fresh interpreter (what a user runs)."""
    import sys

    return [sys.executable, "-m", "kgfact.cli", *args]


@pytest.fixture(scope="session")
def embedded_store(kgfact_home):
    """The embedded store of this session's KGFACT_HOME, on a free port (7878 may be taken by
    a store outside the tests); ``kgfact build`` and ``kgfact run`` find it running."""
    from kgfact.data.store import OxigraphStore, StoreConfig

    store = OxigraphStore(StoreConfig(port=0))
    store.start()
    yield store
    store.stop()


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, embedded_store) -> Path:
    """``kgfact run configs/smoke.toml`` once per session; its run directory."""
    import subprocess
    import time

    run = tmp_path_factory.mktemp("smoke") / "run"
    started = time.monotonic()
    done = subprocess.run(kgfact_command("run", str(SMOKE_CONFIG), "--run", str(run), "--quiet"),
                          check=False, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"smoke run: {time.monotonic() - started:.0f} s")
    return run
