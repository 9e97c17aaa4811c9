"""SliCK's lazy protocol against the full one: generations, wall time and their ratios.

The workload is the study's (``configs/study.toml``): its relations (P36, P1376, P131) from the
offline GeoNames facts the embedded store serves, split as the study builds them, with
``--questions`` train questions per relation (the study labels all of them: 1,744 for P131),
each under ``--prompts`` fixed 4-shot prompts with 1 greedy answer + ``--samples`` samples
(T=0.5, top-k 40). Both protocols run on one engine (the embedded Gemma 3 270M, default device
and dtype), each from an empty prefix cache, in one run; the script checks that they give the
same categories and that every sample the lazy one drew is the full one's.

Run from the repository root::

    bash .ci/with-venv python benchmarks/slick_lazy.py                  # 40 questions per relation
    bash .ci/with-venv python benchmarks/slick_lazy.py --questions 4 --prompts 2 --samples 4
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from kgfact.data.offline import build_offline_dataset
from kgfact.models import ModelConfig, load_model
from kgfact.pipeline import load_config
from kgfact.qa import build_qa
from kgfact.sampling import KgfactEngine
from kgfact.slick import PROTOCOLS, build_requests, score, select_questions

STUDY = Path(__file__).resolve().parents[1] / "configs" / "study.toml"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=40,
                        help="train questions per relation (default 40)")
    parser.add_argument("--prompts", type=int, default=10, help="prompts per question (10)")
    parser.add_argument("--samples", type=int, default=16, help="samples per prompt (16)")
    args = parser.parse_args()

    study = load_config(STUDY)
    config = replace(study.slick, n_prompts=args.prompts, splits=("train",),
                     max_questions_per_relation=args.questions,
                     sampling=replace(study.slick.sampling, n_samples=args.samples))
    data = build_offline_dataset()
    qa, _ = build_qa(data.triples, data.entities, study.build.qa)
    questions, _, sets = select_questions(qa, config)
    requests = build_requests(questions, qa, sets, config)
    engine = KgfactEngine(load_model(ModelConfig()))
    print(f"{len(questions)} questions ({', '.join(config.relations)}), {args.prompts} prompts "
          f"x (greedy + {args.samples} samples); torch threads: {torch.get_num_threads()}")

    tables, seconds = {}, {}
    for protocol in ("full", "lazy"):
        engine.clear_prefix_cache()  # each protocol computes its own exemplar prefixes
        started = time.perf_counter()
        done = PROTOCOLS[protocol](engine, questions, requests, config, lambda n: None)
        seconds[protocol] = time.perf_counter() - started
        tables[protocol] = score(questions, done, config)

    full, lazy = tables["full"], tables["lazy"]
    rows = []
    for protocol, table in tables.items():
        generations = len(table) * args.prompts + int(table["sample_answers"].map(len).sum())
        rows.append((protocol, generations, seconds[protocol],
                     generations / seconds[protocol]))
    result = pd.DataFrame(rows, columns=["protocol", "generations", "seconds", "gen/s"])
    print(result.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    ratio = result.set_index("protocol")
    print(f"full / lazy: {ratio.loc['full', 'generations'] / ratio.loc['lazy', 'generations']:.2f}x"
          f" generations, {seconds['full'] / seconds['lazy']:.2f}x wall time")

    same = (full["category"] == lazy["category"]).all()
    prefix = all(list(l_) == list(f[:len(l_)]) for l_, f in zip(lazy["sample_answers"],
                                                                  full["sample_answers"]))
    print("categories per relation:")
    print(pd.crosstab(full["relation"], full["category"]).to_string())
    print(f"categories identical: {'yes' if same else 'NO'}; lazy samples equal the full "
          f"protocol's: {'yes' if prefix else 'NO'}")
    return 0 if same and prefix else 1


if __name__ == "__main__":
    raise SystemExit(main())
