"""SliCK sampling throughput: kgfact's engine against the usual ways of running the workload.

One workload for every method: the embedded Gemma 3 270M (default device and dtype: bf16 on this
CPU), ``--questions`` (4) capital-city questions from the offline GeoNames data, each under SliCK's
10 fixed 4-shot prompts, 1 greedy answer + 16 samples (T=0.5, top-k 40) per prompt, answers
stopped at a newline (at most 16 tokens). Methods, all measured in one run:

a. naive loop: one ``model.generate`` per prompt and per sample (what public re-implementations
   of SliCK do);
b. HF batched: per prompt, one greedy ``generate`` and one with ``num_return_sequences=16``;
c. kgfact's engine (:class:`kgfact.sampling.KgfactEngine`);
d. vLLM (:class:`kgfact.sampling.VllmEngine`, prefix caching on), when ``vllm`` is importable.

Prints generations/s per method, the ratios, how many greedy answers agree with (a), and the
engine's share of the compute roofline: model FLOPs of the tokens the engine computed divided by
the peak matrix-multiply rate measured here in the same dtype.

Run from the repository root::

    bash .ci/with-venv python benchmarks/slick_throughput.py               # about 8 minutes
    bash .ci/with-venv python benchmarks/slick_throughput.py --naive-prompts 2  # (a) on a subset
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from kgfact.data.offline import build_offline_dataset
from kgfact.models import ModelConfig, load_model
from kgfact.qa import QAConfig, build_qa
from kgfact.sampling import BACKENDS, KgfactEngine, Request, SamplingConfig, cut_at_stop
from kgfact.slick import SlickConfig, build_requests, exemplar_sets

CONFIG = SamplingConfig()  # SliCK: 16 samples at T=0.5, top-k 40, stop at newline


@dataclass
class Result:
    method: str
    generations: int
    seconds: float
    greedy: dict[str, str]
    note: str = ""

    @property
    def rate(self) -> float:
        return self.generations / self.seconds


def workload(n_questions: int) -> list[Request]:
    data = build_offline_dataset()
    qa, _ = build_qa(data.triples, data.entities, QAConfig(in_distribution=("P36",)))
    config = SlickConfig()
    sets, _ = exemplar_sets(qa, config, ["P36"])
    questions = qa[qa["split"] == "test"].head(n_questions)
    return build_requests(questions, qa, sets, config)


def token_ids(loaded, request: Request) -> list[int]:
    tok = loaded.tokenizer
    return tok(request.prefix)["input_ids"] + tok(request.suffix,
                                                  add_special_tokens=False)["input_ids"]


def hf_generate(loaded, ids: list[int], stop_ids: list[int], **kw) -> list[str]:
    # every token containing a newline acts as EOS: the cheapest stop HF offers (stop_strings
    # rebuilds a vocabulary table on each call and made the baselines 3-4x slower still)
    with torch.inference_mode():
        out = loaded.model.generate(torch.tensor([ids], device=loaded.device),
                                    max_new_tokens=CONFIG.max_new_tokens, eos_token_id=stop_ids,
                                    pad_token_id=loaded.tokenizer.pad_token_id, **kw)
    texts = loaded.tokenizer.batch_decode(out[:, len(ids):], skip_special_tokens=True)
    return [cut_at_stop(t, CONFIG.stop) for t in texts]


SAMPLE = {"do_sample": True, "temperature": CONFIG.temperature, "top_k": CONFIG.top_k,
          "top_p": None}
GREEDY = {"do_sample": False, "top_k": None, "top_p": None}


def naive(loaded, requests: list[Request], stop_ids: list[int]) -> Result:
    t0, greedy = time.perf_counter(), {}
    for r in requests:
        ids = token_ids(loaded, r)
        greedy[r.key] = hf_generate(loaded, ids, stop_ids, **GREEDY)[0]
        for _ in range(CONFIG.n_samples):
            hf_generate(loaded, ids, stop_ids, **SAMPLE)
    return Result("a. naive generate loop", len(requests) * 17, time.perf_counter() - t0, greedy)


def batched(loaded, requests: list[Request], stop_ids: list[int]) -> Result:
    t0, greedy = time.perf_counter(), {}
    for r in requests:
        ids = token_ids(loaded, r)
        greedy[r.key] = hf_generate(loaded, ids, stop_ids, **GREEDY)[0]
        hf_generate(loaded, ids, stop_ids, num_return_sequences=CONFIG.n_samples, **SAMPLE)
    return Result("b. HF generate, num_return_sequences=16", len(requests) * 17,
                  time.perf_counter() - t0, greedy)


def engine_run(make: Callable[[], object], name: str, requests: list[Request]) -> Result:
    engine = make()
    t0 = time.perf_counter()
    out = engine.generate(requests, CONFIG)
    seconds = time.perf_counter() - t0
    return Result(name, len(requests) * 17, seconds, {g.key: g.greedy for g in out})


def peak_matmul_flops(dtype: torch.dtype, device: torch.device) -> float:
    """Best FLOP/s of large matrix multiplies in ``dtype`` (the roofline's ceiling)."""
    best = 0.0
    for m, k, n in ((1024, 640, 2048), (2048, 2048, 640), (256, 640, 262144 // 8)):
        a = torch.randn(m, k, dtype=dtype, device=device)
        b = torch.randn(k, n, dtype=dtype, device=device)
        for _ in range(2):
            a @ b
        t0, reps = time.perf_counter(), 5
        for _ in range(reps):
            a @ b
        best = max(best, 2 * m * k * n * reps / (time.perf_counter() - t0))
    return best


def engine_flops(loaded, stats: dict) -> float:
    """Model FLOPs of what the engine computed: every token through the layers, and the output
    layer only on rows whose logits were needed (one per forward row)."""
    model = loaded.model
    vocab, hidden = model.get_output_embeddings().weight.shape
    body = sum(p.numel() for p in model.parameters()) - vocab * hidden  # tied embeddings
    tokens = stats["prefix_tokens"] + stats["prefill_tokens"] + stats["decode_tokens"]
    return 2 * body * tokens + 2 * vocab * hidden * stats["rows"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=4)
    parser.add_argument("--naive-prompts", type=int, default=None,
                        help="run (a) on only this many prompts per question (a rate is a rate)")
    args = parser.parse_args(argv)

    loaded = load_model(ModelConfig())
    requests = workload(args.questions)
    print(f"workload: {args.questions} questions x 10 prompts x (1 greedy + 16 samples) = "
          f"{len(requests) * 17} generations; model {loaded.path}, {loaded.device}, "
          f"{loaded.dtype}, {torch.get_num_threads()} threads")

    subset = requests if args.naive_prompts is None else [
        r for r in requests if int(r.key.rsplit("#", 1)[1]) < args.naive_prompts]
    engine = KgfactEngine(loaded)
    stop_ids = sorted(engine.stop_ids(CONFIG.stop))  # computed once, outside every timing
    results = [naive(loaded, subset, stop_ids), batched(loaded, requests, stop_ids)]
    if len(subset) < len(requests):
        results[0].note = f"on {len(subset)} of {len(requests)} prompts"
    results.append(engine_run(lambda: engine, "c. kgfact engine", requests))
    try:
        import vllm  # noqa: F401
    except ImportError:
        print("d. vLLM: not importable here, skipped")
    else:
        results.append(engine_run(lambda: BACKENDS.get("vllm").from_config(ModelConfig()),
                                  "d. vLLM (prefix caching)", requests))

    base = results[0]
    print(f"\n{'method':<42}{'gen':>7}{'seconds':>10}{'gen/s':>9}{'vs (a)':>9}"
          f"  greedy = (a)")
    for r in results:
        same = sum(r.greedy[k] == base.greedy[k] for k in base.greedy)
        print(f"{r.method:<42}{r.generations:>7}{r.seconds:>10.1f}{r.rate:>9.1f}"
              f"{r.rate / base.rate:>8.1f}x  {same}/{len(base.greedy)} {r.note}")

    ours = results[2]
    flops = engine_flops(loaded, engine.stats)
    peak = peak_matmul_flops(loaded.dtype, loaded.device)
    achieved = flops / ours.seconds
    print(f"\nengine: {engine.stats['forwards']} forwards, {engine.stats['rows']} rows for "
          f"{ours.generations} generations; {flops / 1e9:.0f} GFLOP in {ours.seconds:.1f} s = "
          f"{achieved / 1e9:.0f} GFLOP/s, {100 * achieved / peak:.0f}% of the measured "
          f"{peak / 1e9:.0f} GFLOP/s peak matmul rate ({loaded.dtype})")
    targets = [("kgfact >= 20x naive", ours.rate / base.rate >= 20)]
    if len(results) > 3:
        targets.append(("kgfact >= vLLM", ours.rate >= results[3].rate))
    for name, ok in targets:
        print(f"target {name}: {'PASS' if ok else 'FAIL'}")
    return 0 if all(ok for _, ok in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
