"""Evaluation throughput: the per-model path evaluation used to take against evaluation on one
engine, in one run.

Workload: the study's evaluation at a reduced size. The study's relations from the offline
GeoNames data (ID P36, P1376, P131; near-ID P17; OOD P30, P38, P47), ``--queries`` (4) test
queries per relation, the three prompt modes (zero-shot; few-shot and CoT, each under
``--prompts`` (3) random 4-shot exemplar sets per relation), greedy answers, on the embedded
Gemma 3 270M (default device and dtype: bf16 on this CPU): the base model and ``--adapters``
(2) random LoRA adapters of it (kgfact's LoRA settings, r 16 on every linear layer, with a
random update so each answers differently). The study itself is 13 models and 8 queries per
relation (``--adapters 12 --queries 8``). Methods, all measured in one run, loading included:

a. per model, as evaluation ran before: a new engine per model (base weights loaded again and
   the adapter applied), one ``generate`` per (mode, strategy), batched in buckets of one
   prefix and one suffix length;
b. one engine (what :func:`kgfact.evaluate.evaluate` does now): the base model loaded once
   and the adapters swapped on it (:meth:`kgfact.sampling.KgfactEngine.use_adapter`), all the
   work of a model in one packed batch per token budget;
c. vLLM (:class:`kgfact.sampling.VllmEngine`: one engine, a LoRA request per adapter), when
   ``vllm`` is importable.

Prints generations/s per method, the ratio to (a), and how many greedy answers equal (a)'s.

Run from the repository root (alone on the machine: it measures speed)::

    bash .ci/with-venv python benchmarks/evaluate_throughput.py
    bash .ci/with-venv python benchmarks/evaluate_throughput.py --adapters 12 --queries 8  # study
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from kgfact.data.offline import build_offline_dataset
from kgfact.evaluate import (EvalConfig, EvalModel, PromptBuilder, greedy_answers,
                             model_requests, near_id, queries)
from kgfact.finetune import LoraSettings, with_lora
from kgfact.models import ModelConfig, load_model, pick_device_dtype
from kgfact.qa import QAConfig, build_qa
from kgfact.rundir import RunDir
from kgfact.sampling import BACKENDS, KgfactEngine

ID, NEAR_ID, OOD = ("P36", "P1376", "P131"), ("P17",), ("P30", "P38", "P47")
JOBS = [("zero-shot", "none"), ("few-shot", "random"), ("cot", "random")]


def study_run(path: Path) -> RunDir:
    """A run directory with the build stage's tables for the study's relations."""
    data = build_offline_dataset()
    qa, _ = build_qa(data.triples, data.entities,
                     QAConfig(in_distribution=ID + NEAR_ID, out_of_distribution=OOD))
    run = RunDir(path)
    with run.stage("build", {"source": "offline", "benchmark": "evaluate_throughput"}):
        run.write_table("triples", data.triples)
        run.write_table("entities", data.entities)
        run.write_table("qa", qa)
    return run


def random_adapters(home: Path, n: int) -> list[str]:
    """``n`` LoRA adapters of the embedded model with seeded random updates."""
    loaded = load_model(ModelConfig())
    paths = []
    for seed in range(n):
        model = with_lora(loaded.model, LoraSettings(), seed)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():  # peft starts B at zero: the adapter would change nothing
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.01)
        paths.append(str(home / f"adapter-{seed}"))
        model.save_pretrained(paths[-1])
        model.unload()  # the bare model again, for the next adapter
    return paths


def per_model(models: list[EvalModel], qs, builder) -> dict[str, str]:
    """(a): a new engine per model, one generate per (mode, strategy), in buckets."""
    answers = {}
    for m in models:
        engine = KgfactEngine(load_model(ModelConfig(adapter=m.adapter)), packing="bucket")
        for job in JOBS:
            requests, frame = model_requests(m, [job], qs, builder)
            for r, a in zip(requests, greedy_answers(engine, requests, frame["mode"].tolist())):
                answers[f"{m.name}|{r.key}"] = a
    return answers


def switching(models: list[EvalModel], qs, builder, make: Callable[[str | None], object]
              ) -> dict[str, str]:
    """(b) and (c): one backend, switched from model to model; all of a model's work at once."""
    answers = {}
    for m in models:
        backend = make(m.adapter)
        requests, frame = model_requests(m, JOBS, qs, builder)
        for r, a in zip(requests, greedy_answers(backend, requests, frame["mode"].tolist())):
            answers[f"{m.name}|{r.key}"] = a
    return answers


def one_engine() -> Callable[[str | None], object]:
    engine = KgfactEngine(load_model(ModelConfig()))

    def serve(adapter: str | None):
        engine.use_adapter(adapter)
        return engine
    return serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapters", type=int, default=2, help="LoRA adapters besides the base")
    parser.add_argument("--queries", type=int, default=4, help="test queries per relation")
    parser.add_argument("--prompts", type=int, default=3, help="exemplar sets per relation")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="kgfact-bench-") as tmp:
        run = study_run(Path(tmp) / "run")
        config = EvalConfig(n_prompts=args.prompts, max_questions_per_relation=args.queries)
        qs = near_id(queries(run, config), set(ID))
        builder = PromptBuilder(run, config)
        models = [EvalModel("base", None, "base", None)] + [
            EvalModel(f"random-{i}", None, "convergence", path, i)
            for i, path in enumerate(random_adapters(Path(tmp), args.adapters))]
        n = len(model_requests(models[0], JOBS, qs, builder)[0]) * len(models)
        device, dtype = pick_device_dtype()
        print(f"workload: {len(models)} models x {len(qs)} queries x (1 + 2 x {args.prompts}) "
              f"prompts, less relations too small for an exemplar set: {n} greedy "
              f"generations; {device}, {dtype}, {torch.get_num_threads()} threads")

        methods: dict[str, Callable[[], dict[str, str]]] = {
            "a. per model, buckets": lambda: per_model(models, qs, builder),
            "b. one engine, packed": lambda: switching(models, qs, builder, one_engine()),
        }
        try:
            import vllm  # noqa: F401
        except ImportError:
            print("c. vLLM: not importable here, skipped")
        else:
            vllm_backend = BACKENDS.get("vllm")
            methods["c. vLLM, LoRA requests"] = lambda: switching(
                models, qs, builder,
                lambda adapter: vllm_backend.from_config(ModelConfig(adapter=adapter)))
        results = {}
        for name, method in methods.items():
            started = time.perf_counter()
            answers = method()
            results[name] = (time.perf_counter() - started, answers)
            print(f"{name:28} {results[name][0]:8.1f} s {n / results[name][0]:8.1f} gen/s",
                  flush=True)

    base_seconds, base_answers = next(iter(results.values()))
    print(f"\n{'method':28} {'gen/s':>8} {'vs (a)':>8}  greedy = (a)")
    for name, (seconds, answers) in results.items():
        same = sum(answers[k] == base_answers[k] for k in base_answers)
        print(f"{name:28} {n / seconds:8.1f} {base_seconds / seconds:7.1f}x  "
              f"{same}/{len(base_answers)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
