"""Load throughput: the store's bulk loader and kgfact's graph reader versus rdflib.

Writes N synthetic Wikidata-shaped triples to an N-Triples file (entity-valued ``wdt:`` triples
over ~20 common properties, plus an English ``rdfs:label`` for ~10% of the entities, some with
quotes, backslashes and non-ASCII text), then times, in one run:

1. ``kgfact store load`` (:meth:`kgfact.data.store.OxigraphStore.load`: Oxigraph's bulk loader
   into the persistent store, wall clock including process start) -- the load path,
2. ``pyoxigraph.Store(DIR).bulk_load`` (the same loader in process, on disk) and in memory,
3. ``rdflib.Graph().parse(F, format="nt")`` -- the baseline,
4. :func:`kgfact.graph.read_rdf` (Oxigraph's parser -> tables -> networkx graph),
   and within it :meth:`~kgfact.graph.KnowledgeGraph.from_tables`, the networkx build alone.

Generating the file is timed but not part of any comparison. The loaders' triple counts are
checked against the generated file after each timed step. The target is that the load path is
at least 10x faster than rdflib; the script exits with status 1 if it is not.

Run from the repository root::

    bash .ci/with-venv python benchmarks/load_throughput.py                    # 1,000,000 triples
    bash .ci/with-venv python benchmarks/load_throughput.py --triples 100000   # quick run
    bash .ci/with-venv python benchmarks/load_throughput.py --keep-dir /tmp/kgbench  # keep files

A 1M-triple run takes about 1.5 minutes and 1.5 GB of RAM on 2 cores, most of it rdflib's.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import networkx as nx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyoxigraph
import rdflib

from kgfact.data.store import OxigraphStore, StoreConfig
from kgfact.graph import KnowledgeGraph, read_rdf
from kgfact.wikidata import RDFS_LABEL, WD, WDT

TARGET_SPEEDUP = 10.0

# Common Wikidata properties with entity values, weighted roughly by how often they occur.
PROPERTIES = {
    "P31": 30, "P17": 12, "P131": 10, "P106": 8, "P27": 6, "P21": 6, "P19": 4, "P20": 3,
    "P361": 3, "P279": 3, "P50": 2, "P136": 2, "P495": 2, "P69": 2, "P108": 2, "P161": 2,
    "P150": 1, "P47": 1, "P30": 1, "P36": 1,
}
# Label vocabulary: plain, accented, non-Latin, astral-plane, and characters N-Triples escapes.
LABEL_WORDS = [
    "River", "Saint", "New", "Mount", "Lake", "House", "of", "the", "Zürich", "São Paulo", "Kraków",
    "Łódź", "Reykjavík", "Ελλάδα", "Москва", "東京都", "القاهرة", "मुंबई", "🎵 Song", 'The "Great"',
    "back\\slash", "O'Brien", "tab\tbetween", "line\nbreak",
]
_NT_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"})

T = TypeVar("T")


@dataclass(frozen=True)
class Dataset:
    path: Path
    triples: int         # distinct triples in the file (= lines)
    entity_triples: int  # of which have an entity as object
    seconds: float       # time taken to generate and write it


@dataclass(frozen=True)
class Timing:
    method: str
    triples: int         # triples this step processed
    seconds: float
    detail: str = ""


# -- data ---------------------------------------------------------------------------------------

def generate(path: Path, n: int, seed: int) -> Dataset:
    """Write ``n`` distinct Wikidata-shaped triples to ``path`` as N-Triples, grouped by subject."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    n_entities = max(10, n // 4)
    n_labels = min(n_entities // 10, n // 2)
    n_edges = n - n_labels

    # Distinct, realistically sized Q-ids; objects are skewed towards popular entities.
    qids = np.sort(rng.integers(1, 130_000_000, size=n_entities * 11 // 10))
    qids = qids[np.concatenate([[True], qids[1:] != qids[:-1]])]
    qids = rng.permutation(qids)[:n_entities]
    entities = [f"<{WD}Q{q}>" for q in qids.tolist()]
    pids = list(PROPERTIES)
    predicates = [f"<{WDT}{p}>" for p in pids]
    weights = np.array(list(PROPERTIES.values()), dtype=float)

    keys = np.empty(0, dtype=np.int64)
    while len(keys) < n_edges:  # top up in the (rare) case random triples collide
        k = n_edges - len(keys) + 16
        s = rng.integers(0, n_entities, size=k)
        p = rng.choice(len(pids), size=k, p=weights / weights.sum())
        o = (n_entities * rng.random(k) ** 3).astype(np.int64)
        keys = np.sort(np.concatenate([keys, (s * len(pids) + p) * n_entities + o]))
        keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]
    keys = np.sort(rng.permutation(keys)[:n_edges])
    s, rest = np.divmod(keys, len(pids) * n_entities)
    p, o = np.divmod(rest, n_entities)

    edge_lines = [f"{entities[a]} {predicates[b]} {entities[c]} .\n".encode()
                  for a, b, c in zip(s.tolist(), p.tolist(), o.tolist())]
    labelled = rng.choice(n_entities, size=n_labels, replace=False)
    words = rng.integers(0, len(LABEL_WORDS), size=(n_labels, 2)).tolist()
    escaped = [w.translate(_NT_ESCAPES) for w in LABEL_WORDS]
    label_lines = [f'{entities[e]} <{RDFS_LABEL}> "{escaped[w1]} {escaped[w2]} {i}"@en .\n'.encode()
                   for i, (e, (w1, w2)) in enumerate(zip(labelled.tolist(), words))]

    order = np.argsort(np.concatenate([s, labelled]), kind="stable")
    lines = edge_lines + label_lines
    path.write_bytes(b"".join([lines[i] for i in order.tolist()]))
    return Dataset(path, n_edges + n_labels, n_edges, time.perf_counter() - t0)


# -- timed steps --------------------------------------------------------------------------------

def timed(fn: Callable[[], T]) -> tuple[float, T]:
    gc.collect()
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def check_count(method: str, got: int, want: int) -> None:
    if got != want:
        raise SystemExit(f"{method} loaded {got} triples, expected {want}")


def store_size(location: Path) -> int:
    return len(pyoxigraph.Store.read_only(str(location)))


def store_load(data: Dataset, workdir: Path) -> Timing:
    store = OxigraphStore(StoreConfig(location=workdir / "kgfact-store"))
    seconds, _ = timed(lambda: store.load([data.path]))
    check_count("kgfact store load", store_size(store.db), data.triples)
    return Timing("kgfact store load (Oxigraph bulk loader)", data.triples, seconds,
                  "on disk, wall clock incl. process start")


def pyoxigraph_bulk_load(data: Dataset, workdir: Path | None) -> Timing:
    def load() -> int:
        store = pyoxigraph.Store(str(workdir / "pyoxigraph") if workdir else None)
        store.bulk_load(path=str(data.path), format=pyoxigraph.RdfFormat.N_TRIPLES)
        store.flush()
        return len(store)

    seconds, loaded = timed(load)
    check_count("pyoxigraph bulk_load", loaded, data.triples)
    where = "on disk" if workdir else "in memory"
    return Timing(f"pyoxigraph Store.bulk_load, {where}", data.triples, seconds, "in process")


def rdflib_parse(data: Dataset) -> Timing:
    seconds, graph = timed(lambda: rdflib.Graph().parse(str(data.path), format="nt"))
    check_count("rdflib", len(graph), data.triples)
    del graph
    return Timing("rdflib Graph.parse (baseline)", data.triples, seconds, "in-memory graph")


def knowledge_graph(data: Dataset) -> list[Timing]:
    read_s, graph = timed(lambda: read_rdf(data.path))
    check_count("read_rdf", len(graph), data.entity_triples)  # len = edges
    triples, entities = graph.triples(), graph.entities()
    del graph
    build_s, graph = timed(lambda: KnowledgeGraph.from_tables(triples, entities))
    check_count("KnowledgeGraph.from_tables", len(graph), data.entity_triples)
    return [
        Timing("kgfact.graph.read_rdf", data.triples, read_s,
               "parse + tables + networkx graph"),
        Timing("  of which KnowledgeGraph.from_tables", data.triples, build_s,
               "networkx graph from the tables"),
    ]


# -- report -------------------------------------------------------------------------------------

def report(data: Dataset, timings: list[Timing], baseline: Timing, bulk: Timing) -> bool:
    print(f"\n{data.triples:,} triples ({data.entity_triples:,} entity-valued, "
          f"{data.triples - data.entity_triples:,} labels) in {data.path.name}, "
          f"{data.path.stat().st_size / 1e6:.1f} MB; "
          f"generated in {data.seconds:.1f} s (not compared)\n")
    base_rate = baseline.triples / baseline.seconds
    header = f"{'method':<42}{'triples':>11}{'seconds':>10}{'triples/s':>13}{'vs rdflib':>11}  note"
    print(header)
    print("-" * len(header))
    for t in timings:
        rate = t.triples / t.seconds
        print(f"{t.method:<42}{t.triples:>11,}{t.seconds:>10.2f}{rate:>13,.0f}"
              f"{rate / base_rate:>10.1f}x  {t.detail}")
    speedup = (bulk.triples / bulk.seconds) / base_rate
    ok = speedup >= TARGET_SPEEDUP
    print(f"\ntarget: load path (kgfact store load) >= {TARGET_SPEEDUP:.0f}x rdflib triples/s -> "
          f"{speedup:.1f}x: {'PASS' if ok else 'FAIL'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--triples", type=int, default=1_000_000, metavar="N",
                        help="number of triples to generate (default: 1,000,000)")
    parser.add_argument("--seed", type=int, default=0, help="RNG seed (default: 0)")
    parser.add_argument("--keep-dir", type=Path, metavar="DIR",
                        help="write the N-Triples file and stores under DIR and keep them "
                             "(default: a temporary directory, deleted at exit)")
    args = parser.parse_args(argv)
    if args.triples < 100:
        parser.error("--triples must be at least 100")

    if args.keep_dir:
        args.keep_dir.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="load-throughput-", dir=args.keep_dir))
    else:
        workdir = Path(tempfile.mkdtemp(prefix="kgfact-load-throughput-"))
    try:
        print(f"working directory: {workdir}")
        print(f"python {sys.version.split()[0]}, pyoxigraph {pyoxigraph.__version__}, "
              f"rdflib {rdflib.__version__}, networkx {nx.__version__}, pandas {pd.__version__}, "
              f"pyarrow {pa.__version__}; {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.2f} at start")
        data = generate(workdir / f"wikidata-{args.triples}.nt", args.triples, args.seed)
        bulk = store_load(data, workdir)
        on_disk = pyoxigraph_bulk_load(data, workdir)
        in_memory = pyoxigraph_bulk_load(data, None)
        baseline = rdflib_parse(data)
        timings = [bulk, on_disk, in_memory, baseline, *knowledge_graph(data)]
        ok = report(data, timings, baseline=baseline, bulk=bulk)
    finally:
        if not args.keep_dir:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
