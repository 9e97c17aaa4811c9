"""The Ray backend on a local two-worker Ray instance with the tiny model: the same SliCK table
as the local engine through the CLI, a worker killed mid-run costs nothing, a new backend
replaces the last (as evaluation makes one per adapter), and user mistakes are one-line
errors."""

from __future__ import annotations

import os
import signal
from collections import Counter

import pandas as pd
import pytest

from kgfact.cli import main
from kgfact.errors import KgfactError
from kgfact.models import ModelConfig
from kgfact.sampling import Request, SamplingConfig
from kgfact.slick import SlickConfig, run_slick
from tests.test_slick import make_run, mini_qa  # noqa: F401 (mini_qa is a fixture)

ray = pytest.importorskip("ray")

ARGS = ["--samples", "4", "--max-new-tokens", "6", "--splits", "train,dev,test",
        "--max-questions", "8", "--chunk", "8", "--quiet"]
CONFIG = SlickConfig(sampling=SamplingConfig(n_samples=4, max_new_tokens=6),
                     splits=("train", "dev", "test"), max_questions_per_relation=8)


@pytest.fixture(autouse=True)
def no_ray_left_behind():
    """Every test starts without Ray and must shut down the instance it started."""
    assert not ray.is_initialized()
    yield
    assert not ray.is_initialized()


@pytest.mark.slow
def test_ray_cli_gives_the_local_table_and_the_same_config(tmp_path, mini_qa, tiny_model_dir):
    runs = {name: make_run(tmp_path / name, mini_qa) for name in ("local", "ray")}
    model = ["--model", str(tiny_model_dir)]
    assert main(["slick", str(runs["local"].path), *model, *ARGS]) == 0
    assert main(["slick", str(runs["ray"].path), *model, *ARGS,
                 "--backend", "ray", "--workers", "2"]) == 0
    table = runs["ray"].read_table("slick")
    assert len(table) == 19  # 8 train, all 6 dev and all 5 test questions of P17, in 3 chunks
    pd.testing.assert_frame_equal(table, runs["local"].read_table("slick"))

    local, distributed = (r.manifest()["stages"]["slick"] for r in runs.values())
    assert distributed["config"] == local["config"]
    assert distributed["execution"] == {"backend": "ray", "options": {"workers": 2}}
    # so the local backend takes the Ray run's results as its own instead of recomputing them
    assert main(["slick", str(runs["ray"].path), *model, *ARGS]) == 0
    assert runs["ray"].manifest()["stages"]["slick"]["finished"] == distributed["finished"]


class KillsWorkerZero:
    """Wraps ``on_done``: SIGKILLs worker 0's process when the first answer of the run comes
    back (worker 0 then still holds shards) and counts every delivery per key."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.answers_from, self.adapter = backend.answers_from, backend.adapter
        self.delivered: Counter[str] = Counter()

    def generate(self, requests, config, on_done=None):
        def hook(generation):
            if not self.delivered:
                os.kill(self.backend.pids[0], signal.SIGKILL)
            self.delivered[generation.key] += 1
            on_done(generation)
        return self.backend.generate(requests, config, hook)


@pytest.mark.slow
def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(tmp_path, mini_qa,
                                                              tiny_model_dir):
    from kgfact.sampling.ray import RayBackend

    model = ModelConfig(name=str(tiny_model_dir))
    local = run_slick(make_run(tmp_path / "local", mini_qa), CONFIG, model, progress=False)
    with RayBackend(model, workers=2) as backend:
        killer = KillsWorkerZero(backend)
        table = run_slick(make_run(tmp_path / "ray", mini_qa), CONFIG, model, backend=killer,
                          chunk_size=64, progress=False)
        stats = dict(backend.stats)
    assert stats["replaced_workers"] == 1  # Ray reported worker 0 dead
    assert stats["resent_shards"] >= 1  # it died holding work, which was done again
    assert stats["shards"] > 10  # the one chunk went out as many shards to both workers
    assert len(killer.delivered) == len(local) * CONFIG.n_prompts
    assert set(killer.delivered.values()) == {1}  # every answer delivered exactly once
    pd.testing.assert_frame_equal(table, local)


def test_user_mistakes_are_one_line_errors(tmp_path, mini_qa, capsys):
    run = make_run(tmp_path / "run", mini_qa)
    assert main(["slick", str(run.path), "--workers", "2"]) == 2
    assert "address and workers are for the ray backend, not 'kgfact'" in \
        capsys.readouterr().err
    assert main(["slick", str(run.path), "--backend", "ray", "--workers", "0"]) == 2
    assert "workers must be >= 1, got 0" in capsys.readouterr().err
    # nothing listens on port 1: refused at once, where Ray itself would retry for minutes
    assert main(["slick", str(run.path), "--backend", "ray", "--address", "127.0.0.1:1"]) == 2
    assert "cannot reach Ray at '127.0.0.1:1'" in capsys.readouterr().err


@pytest.mark.slow
def test_each_new_backend_replaces_the_last_and_ray_stops_with_the_live_one(tmp_path,
                                                                           tiny_model_dir):
    """What evaluation does, one backend per adapter: were the first backend's workers still
    holding the two CPUs, the second's could never start and this test would hang."""
    from dataclasses import replace

    from kgfact.sampling.ray import RayBackend
    from tests.tinymodel import make_tiny_adapter

    model = ModelConfig(name=str(tiny_model_dir))
    adapter = make_tiny_adapter(tiny_model_dir, tmp_path / "adapter")
    request = [Request("q#0", "Q: Which country is Town 1 in?\nA: Lemuria\n\n", "Q: Where?\nA:")]
    config = SamplingConfig(n_samples=2, max_new_tokens=4)
    first = RayBackend(model, workers=2)
    answer = first.generate(request, config)
    assert first.adapter is None
    # every worker reports the adapter it loaded (a fresh one: answers are unchanged)
    second = RayBackend(replace(model, adapter=str(adapter)), workers=2)
    assert second.adapter == str(adapter.resolve())
    with pytest.raises(KgfactError, match="replaced by a newer one"):
        first.generate(request, config)
    del first  # collecting a replaced backend leaves Ray to the live one
    assert ray.is_initialized()
    assert second.generate(request, config) == answer
    # a model the workers cannot load is a one-line error from the workers, and the failed
    # backend, live once made, shuts down the Ray instance kgfact started
    with pytest.raises(KgfactError, match="cannot load model"):
        RayBackend(ModelConfig(name=str(tmp_path / "no-such-model")), workers=1)
    with pytest.raises(KgfactError, match="replaced by a newer one"):
        second.generate(request, config)


@pytest.mark.slow
def test_evaluate_on_ray_serves_every_adapter_as_the_local_engine(tmp_path, tiny_model_dir):
    """Evaluation on Ray starts one backend per model, each checked against the adapter its
    workers report, and answers exactly as the local engine, adapter by adapter (the two
    random adapters and the bare model all answer differently)."""
    from kgfact.evaluate import EvalConfig, evaluate
    from tests import ftworld
    from tests.tinymodel import make_tiny_adapter

    model = ModelConfig(name=str(tiny_model_dir), dtype="float32")
    config = EvalConfig(sets=("ft-known",), modes=("zero-shot",), bootstrap=10)
    predictions = {}
    for backend, options in (("kgfact", {}), ("ray", {"workers": 2})):
        run = ftworld.make_ft_run(tmp_path / backend)
        for seed, checkpoint in enumerate(("early_stop", "convergence"), start=1):
            make_tiny_adapter(tiny_model_dir, run.path / "adapters" / "ft-known" / "seed-0" / checkpoint,
                              seed)
        evaluate(run, config, model, backend=backend, backend_options=options, progress=False)
        predictions[backend] = run.read_table("predictions")
    pd.testing.assert_frame_equal(predictions["ray"], predictions["kgfact"])
    answers = predictions["ray"].groupby("model")["generation"].apply(tuple)
    assert sorted(answers.index) == ["base", "ft-known@convergence/seed-0", "ft-known@early_stop/seed-0"]
    assert answers.nunique() == 3


# -- fine-tuning on Ray --------------------------------------------------------------------------
FT_ARGS = ["--dtype", "float32", "--epochs", "3", "--lr", "3e-3", "--batch-size", "4",
           "--eval-questions", "3", "--lora-r", "4", "--lora-alpha", "8", "--quiet"]


def _adapters(run) -> dict:
    from safetensors.torch import load_file

    return {str(p.parent.relative_to(run.path)): load_file(str(p))
            for p in sorted((run.path / "adapters").rglob("adapter_model.safetensors"))}


def assert_same_training(a, b) -> None:
    """Two runs trained the same adapters (to float rounding: locally the two trainings share
    one pass, on Ray each runs alone) with the same dynamics."""
    import torch

    first, second = _adapters(a), _adapters(b)
    assert sorted(first) == sorted(second) and len(first) >= 4
    for name in first:
        for key in first[name]:
            torch.testing.assert_close(first[name][key], second[name][key], rtol=1e-4, atol=1e-6)
    da, db = (r.read_table("dynamics").drop(columns="seconds") for r in (a, b))
    pd.testing.assert_frame_equal(da.drop(columns="loss"), db.drop(columns="loss"))
    assert da["loss"].to_numpy() == pytest.approx(db["loss"].to_numpy(), rel=1e-4, nan_ok=True)


@pytest.mark.slow
def test_finetune_on_ray_through_the_cli_writes_the_local_adapters(tmp_path, tiny_model_dir):
    from tests import ftworld

    runs = {name: ftworld.make_ft_run(tmp_path / name) for name in ("local", "ray")}
    model = ["--model", str(tiny_model_dir)]
    assert main(["finetune", str(runs["local"].path), *model, *FT_ARGS]) == 0
    assert main(["finetune", str(runs["ray"].path), *model, *FT_ARGS, "--backend", "ray",
                 "--workers", "2"]) == 0
    assert_same_training(runs["local"], runs["ray"])
    local, distributed = (r.manifest()["stages"]["finetune"] for r in runs.values())
    assert distributed["config"] == local["config"]
    assert distributed["execution"] == {"backend": "ray", "options": {"workers": 2}}


class KillOnce:
    """``on_step`` for Ray tasks: SIGKILLs the worker running it at the first step of epoch 2,
    once in the whole test (a marker file says it has), and records every training run."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __call__(self, epoch: int, step: int) -> None:
        if epoch == 2 and step == 0 and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.slow
def test_a_killed_finetune_worker_costs_only_its_training(tmp_path, tiny_model_dir):
    """A worker SIGKILLed mid-training: Ray runs that training again and the run ends with the
    local adapters; a later call with another seed trains only that seed's adapters."""
    import sys
    from dataclasses import replace

    from kgfact.finetune import FinetuneConfig, LoraSettings, finetune
    from tests import ftworld

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need KillOnce
    config = FinetuneConfig(sets=("ft-known", "ft-unknown"), learning_rate=3e-3, max_epochs=3,
                            batch_size=4, eval_questions=3, lora=LoraSettings(r=4, alpha=8))
    model = ModelConfig(name=str(tiny_model_dir), dtype="float32")
    runs = {name: ftworld.make_ft_run(tmp_path / name) for name in ("local", "ray")}
    finetune(runs["local"], replace(config, seeds=(0, 1)), model, progress=False)
    marker = tmp_path / "killed"
    finetune(runs["ray"], config, model, backend="ray", backend_options={"workers": 2},
             progress=False, on_step=KillOnce(marker))
    assert marker.exists() and int(marker.read_text()) != os.getpid()  # a worker died
    before = {p: p.stat().st_mtime_ns for p in (runs["ray"].path / "adapters").rglob("*")
              if p.is_file()}
    assert len(before) > 10
    finetune(runs["ray"], replace(config, seeds=(0, 1)), model, backend="ray",
             backend_options={"workers": 2}, progress=False)
    # seed 0's files were not written again; seed 1's are new
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert sorted(p.name for p in (runs["ray"].path / "adapters").glob("*/seed-*")) == \
        ["seed-0", "seed-0", "seed-1", "seed-1"]
    assert_same_training(runs["local"], runs["ray"])
