"""Local engine against the Ray backend on this machine: one SliCK workload, measured in one run.

Workload: the embedded Gemma 3 270M (default device and dtype), ``--questions`` (12)
capital-city questions from the offline GeoNames data, each under SliCK's 10 fixed 4-shot
prompts, 1 greedy answer + 16 samples (T=0.5, top-k 40) per prompt. Setups:

- local: :class:`kgfact.sampling.KgfactEngine` in this process, with torch's default threads
  and, as a control, with one thread;
- Ray with N workers for each N in ``--workers`` (default 1 and 2): a local Ray instance, one
  model replica per worker, this machine's CPUs split evenly between them.

Every setup is warmed up first on two requests with prefixes outside the workload (each worker
gets one), so the timings exclude model loading and one-time vocabulary scans; Ray's start-up
(instance and workers) is timed separately. Prints generations/s, the ratios to local (default
threads) and to the faster local setup, whether every answer (greedy and sampled) equals the
local engine's, and the load average, since other processes on a shared machine change the
figures.

Run from the repository root::

    bash .ci/with-venv python benchmarks/ray_scaling.py          # 3-8 minutes here, with the load
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from slick_throughput import CONFIG, workload  # noqa: E402  (the same workload, one definition)

from kgfact.models import ModelConfig, load_model
from kgfact.sampling import Generation, KgfactEngine, Request
from kgfact.sampling.ray import RayBackend

WARMUP = [Request(f"warmup#{i}", f"Q: Warm-up question {i}?\nA: Yes\n\n", "Q: Ready?\nA:")
          for i in range(2)]


def timed(backend, requests: list[Request]) -> tuple[float, list[Generation]]:
    backend.generate(WARMUP, CONFIG)
    t0 = time.perf_counter()
    out = backend.generate(requests, CONFIG)
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=12)
    parser.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 2], help="Ray worker counts to measure, e.g. 1,2")
    args = parser.parse_args(argv)

    requests = workload(args.questions)
    generations = len(requests) * (CONFIG.n_samples + 1)
    loaded = load_model(ModelConfig())
    print(f"workload: {args.questions} questions x 10 prompts x (1 greedy + 16 samples) = "
          f"{generations} generations; {loaded.device}, {loaded.dtype}, "
          f"{len(os.sched_getaffinity(0))} CPUs, load average before "
          f"{os.getloadavg()[0]:.1f}")

    engine = KgfactEngine(loaded)
    seconds, reference = timed(engine, requests)
    rows = [("local engine", f"{torch.get_num_threads()} threads", seconds, "-", True)]
    # what the engine computed, warm-up included: the basis of the estimate in the README
    print(f"local engine: {engine.stats['prefill_tokens'] / len(requests):.1f} prefill tokens "
          f"per prompt, {engine.stats['decode_tokens'] / generations:.2f} decode rows per "
          f"generation (identical continuations share a row)")
    # control: one thread, as each of two Ray workers has; on a machine other processes also
    # use, fewer threads alone can be faster, and this row tells that apart from Ray's gain
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    seconds, out = timed(KgfactEngine(loaded), requests)
    torch.set_num_threads(threads)
    rows.append(("local engine", "1 thread", seconds, "-", out == reference))
    del loaded, engine
    for n in args.workers:
        t0 = time.perf_counter()
        with RayBackend(ModelConfig(), workers=n) as backend:
            startup = time.perf_counter() - t0
            seconds, out = timed(backend, requests)
            detail = f"{backend.threads} thread(s) each"
        rows.append((f"Ray, {n} worker(s)", detail, seconds, f"{startup:.1f}",
                     out == reference))

    local_rate = generations / rows[0][2]
    best_rate = generations / min(rows[0][2], rows[1][2])
    print(f"\n{'setup':<20}{'threads':<18}{'seconds':>9}{'gen/s':>9}{'vs local':>10}"
          f"{'vs best local':>15}{'start-up s':>12}  same answers")
    for name, detail, seconds, startup, same in rows:
        rate = generations / seconds
        print(f"{name:<20}{detail:<18}{seconds:>9.1f}{rate:>9.1f}{rate / local_rate:>9.2f}x"
              f"{rate / best_rate:>14.2f}x{startup:>12}  {'yes' if same else 'NO'}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0 if all(row[4] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
