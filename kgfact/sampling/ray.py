"""The ``ray`` sampling backend: SliCK sampling and evaluation on many workers and GPUs.

Each worker is a Ray actor holding one model replica (:class:`kgfact.sampling.KgfactEngine` on
:func:`kgfact.models.load_model`, LoRA adapter included): one GPU per worker where the cluster has
GPUs, else an equal share of its CPUs (and as many torch threads, so workers sharing a machine do
not oversubscribe it). With no address a local Ray instance is started, so a laptop and a cluster
run the same command.

A call to :meth:`RayBackend.generate` is cut into shards: the requests sharing one prefix (in
SliCK, one relation's exemplar set), in pieces of at most ``shard_size``. Each prefix has a home
worker, chosen the first time it is seen (the least loaded worker) and kept across calls, so a
worker keeps getting the prefixes whose KV caches it holds; a worker with nothing left at home
takes a shard from the busiest worker rather than idle.

Results come back per shard, and ``on_done`` runs in the driver for each of them, so a stage's
chunk checkpoints work as with a local engine. A worker that dies (a killed process, a lost
node) costs only the shards it had not returned: it is replaced and those shards are sent
again. A shard's answers are delivered once, when the shard comes back whole, so nothing is lost
or duplicated.

Answers are identical to the local engine's: samples are seeded per (seed, key, sample) and the
engine is batch-invariant, so which worker answers a request, and beside which others, changes
nothing. Stages therefore record this backend as ``"kgfact"`` (:attr:`RayBackend.answers_from`):
a run started locally can be resumed on Ray and the reverse.

The backend is registered by name only (``"ray"`` in :data:`kgfact.sampling.BACKENDS`), so this
module, and Ray with it, is imported when a Ray backend is first started, never by importing
:mod:`kgfact.sampling`.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from kgfact.errors import KgfactError
from kgfact.models import ModelConfig
from kgfact.sampling.base import Generation, Request, SamplingConfig
from kgfact.sampling.engine import KgfactEngine

# tasks queued on each worker, so it starts its next shard while the driver takes in the last
_PIPELINE = 2


def _ray():
    try:
        import ray
    except ImportError:
        raise KgfactError("the ray backend needs Ray: pip install 'kgfact[ray]'") from None
    return ray


class _Worker:
    """One model replica, run as a Ray actor; the model is loaded by :meth:`load` (a method, not
    ``__init__``, so a KgfactError there reaches the driver as itself)."""

    def __init__(self, model: ModelConfig, max_batch: int, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.model, self.max_batch, self.engine = model, max_batch, None

    def load(self) -> tuple[int, str | None]:
        """Load the model if not yet loaded; returns the worker's process id and the adapter
        its engine serves."""
        if self.engine is None:
            self.engine = KgfactEngine.from_config(self.model, max_batch=self.max_batch)
        return os.getpid(), self.engine.adapter

    def generate(self, requests: list[Request], config: SamplingConfig) -> list[Generation]:
        self.load()  # a replacement worker loads on its first shard
        return self.engine.generate(requests, config)


@dataclasses.dataclass
class _Shard:
    """Requests sharing one prefix, sent to one worker as one task."""

    prefix: str
    requests: list[Request]
    losses: int = 0  # times a worker died holding it


def _get(ray, refs):
    """``ray.get``, with a user mistake raised in a worker re-raised here as itself (one line)."""
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, KgfactError):
            raise exc.cause from None
        raise


# Whether kgfact started (or joined) Ray in this process, and the live backend's workers. Each
# backend sizes its workers to the whole cluster, so a new one (the next adapter to evaluate,
# say) stops the previous one's workers first; Ray stays up until the live one is closed.
_SESSION: dict[str, Any] = {"started": False, "actors": None}


def _stop(actors: list, shutdown: bool) -> None:
    """Stop ``actors``; with ``shutdown``, also Ray if kgfact started it and they are live."""
    import ray

    if ray.is_initialized():
        for actor in actors:
            ray.kill(actor)
    actors.clear()
    if shutdown and _SESSION["actors"] is actors:
        _SESSION["actors"] = None
        if _SESSION["started"] and ray.is_initialized():
            ray.shutdown()
        _SESSION["started"] = False


@contextmanager
def session(address: str | None = None) -> Iterator[Any]:
    """Ray for a job that takes the whole cluster (fine-tuning's tasks): the live backend's
    workers stopped, Ray joined or started (as :class:`RayBackend` does), and stopped at the end
    if kgfact started it. Yields the ``ray`` module."""
    ray = _ray()
    if _SESSION["actors"] is not None:
        _stop(_SESSION["actors"], shutdown=False)
        _SESSION["actors"] = None  # so the replaced backend, collected, leaves Ray running
    if not ray.is_initialized():
        _connect(ray, address)
        _SESSION["started"] = True
    try:
        yield ray
    finally:
        if _SESSION["started"] and _SESSION["actors"] is None and ray.is_initialized():
            ray.shutdown()
            _SESSION["started"] = False


class RayBackend:
    """SliCK sampling and evaluation on Ray workers (see the module docstring).

    Parameters
    ----------
    model : ModelConfig
        The model every worker loads (``name`` and ``adapter`` must be readable on every node:
        a Hub id, the embedded default, or a shared filesystem).
    max_batch : int
        Prompts prefilled together on each worker.
    address : str, optional
        A Ray cluster (``"auto"``, ``"HOST:6379"`` or ``"ray://HOST:10001"``); None starts a
        local Ray instance. A process already connected to Ray uses that connection.
    workers : int, optional
        Number of workers (model replicas). Default: one per GPU in the cluster, or one per node
        where it has no GPUs (each using all of its node's CPUs).
    shard_size : int, optional
        Most requests per shard (default ``4 * max_batch``): a prefix shared by more requests
        (a zero-shot prompt, say) is split so every worker gets some. Smaller where a call has
        too few shards for two per worker, down to ``max_batch``.
    max_losses : int
        A shard that has killed this many workers is not sent again; the call fails instead.

    Notes
    -----
    One backend is live per process: its workers take the whole cluster, so making a new one
    stops the previous one's workers (that one then refuses to generate). Evaluating one
    adapter after another is thus a new backend each time, with no wait for resources.
    """

    #: the engine whose answers this backend returns; stages record it in their config
    answers_from = "kgfact"

    @classmethod
    def from_config(cls, model: ModelConfig, max_batch: int = 32, address: str | None = None,
                    workers: int | None = None) -> RayBackend:
        """Connect to Ray (or start it) and start the workers on ``model``."""
        return cls(model, max_batch=max_batch, address=address, workers=workers)

    def __init__(self, model: ModelConfig, max_batch: int = 32, address: str | None = None,
                 workers: int | None = None, shard_size: int | None = None,
                 max_losses: int = 3) -> None:
        if workers is not None and workers < 1:
            raise KgfactError(f"--workers must be at least 1, not {workers}")
        ray = _ray()
        self.max_batch = max_batch
        self.shard_size = shard_size or 4 * max_batch
        self.max_losses = max_losses
        if _SESSION["actors"] is not None:
            _stop(_SESSION["actors"], shutdown=False)  # the previous backend's workers
        if not ray.is_initialized():
            _connect(ray, address)
            _SESSION["started"] = True
        self._actors: list = []
        _SESSION["actors"] = self._actors
        self._finalizer = weakref.finalize(self, _stop, self._actors, True)
        try:
            #: torch threads of each worker (``_options``: its Ray resources)
            n, self._options, self.threads = _placement(ray, model, workers)
            if self._options.get("num_gpus"):
                # Ray gives each worker one GPU as its only visible device
                model = dataclasses.replace(model, device="cuda")
            self.model = model
            self._actors.extend(self._start() for _ in range(n))
            loaded = _get(ray, [actor.load.remote() for actor in self._actors])
            #: process id of each worker (of the first one started in each slot)
            self.pids = [pid for pid, _ in loaded]
            served = {adapter for _, adapter in loaded}
            if len(served) != 1:
                raise KgfactError("Ray workers serve different adapters: "
                                  f"{sorted(map(str, served))}")
            #: the adapter every worker's engine reports it serves
            self.adapter = served.pop()
        except BaseException:
            self.close()
            raise
        self._home: dict[str, int] = {}  # prefix -> the worker that holds its KV cache
        #: shards sent, shards sent again after their worker died, workers replaced
        self.stats = {"shards": 0, "resent_shards": 0, "replaced_workers": 0}

    @property
    def workers(self) -> int:
        """Number of workers."""
        return len(self._actors)

    def _start(self):
        ray = _ray()
        return ray.remote(_Worker).options(max_restarts=0, **self._options).remote(
            self.model, self.max_batch, self.threads)

    def close(self) -> None:
        """Stop the workers, and Ray if kgfact started it (also done when collected)."""
        self._finalizer()

    def __enter__(self) -> RayBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- scheduling -------------------------------------------------------------------------------
    def _shards(self, requests: Sequence[Request]) -> list[deque[_Shard]]:
        """Requests cut into shards, queued on their prefix's home worker."""
        groups: dict[str, list[Request]] = {}
        for r in requests:
            groups.setdefault(r.prefix, []).append(r)
        queues: list[deque[_Shard]] = [deque() for _ in self._actors]
        load = [0] * len(queues)
        # at least two shards per worker where that keeps shards at max_batch or more: a call
        # ends with its slowest worker, so a few large shards would leave the others idle
        size = max(self.max_batch, min(self.shard_size, -(-len(requests) // (2 * len(queues)))))
        # known prefixes first, then new ones largest first onto the least loaded worker
        order = sorted(groups, key=lambda p: (p not in self._home, -len(groups[p])))
        for prefix in order:
            if prefix not in self._home:
                self._home[prefix] = min(range(len(load)), key=load.__getitem__)
            home = self._home[prefix]
            group = groups[prefix]
            for start in range(0, len(group), size):
                queues[home].append(_Shard(prefix, group[start:start + size]))
            load[home] += len(group)
        return queues

    @staticmethod
    def _take(queues: list[deque[_Shard]], slot: int) -> _Shard | None:
        """The next shard for worker ``slot``: its own, else the last of the busiest queue."""
        if queues[slot]:
            return queues[slot].popleft()
        busiest = max(queues, key=lambda q: sum(len(s.requests) for s in q))
        return busiest.pop() if busiest else None

    def generate(self, requests: Sequence[Request], config: SamplingConfig,
                 on_done: Callable[[Generation], None] | None = None) -> list[Generation]:
        """Answer every request on the workers; ``on_done`` runs here as each shard returns."""
        ray = _ray()
        keys = [r.key for r in requests]
        if len(set(keys)) != len(keys):
            raise KgfactError("request keys must be unique (they seed the samples)")
        if not self._actors:
            raise KgfactError("this Ray backend was closed, or replaced by a newer one in this "
                              "process (each takes the whole cluster); make a new one")
        queues = self._shards(requests)
        running: dict[Any, tuple[int, Any, _Shard]] = {}  # task -> (slot, actor, shard)
        results: dict[str, Generation] = {}

        def feed(slot: int) -> None:
            while sum(1 for s, _, _ in running.values() if s == slot) < _PIPELINE:
                shard = self._take(queues, slot)
                if shard is None:
                    return
                actor = self._actors[slot]
                running[actor.generate.remote(shard.requests, config)] = (slot, actor, shard)
                self.stats["shards"] += 1

        for slot in range(len(self._actors)):
            feed(slot)
        while running:
            [ref], _ = ray.wait(list(running), num_returns=1)
            slot, actor, shard = running.pop(ref)
            try:
                generations = _get(ray, ref)
            except ray.exceptions.RayActorError:
                self._lost(slot, actor, shard, queues[slot])
                feed(slot)
                continue
            feed(slot)  # before delivering, so the worker is never idle while on_done runs
            for generation in generations:
                results[generation.key] = generation
                if on_done is not None:
                    on_done(generation)
        return [results[k] for k in keys]

    def _lost(self, slot: int, actor, shard: _Shard, queue: deque[_Shard]) -> None:
        """Worker ``slot`` died holding ``shard``: replace it (once) and queue the shard again."""
        ray = _ray()
        shard.losses += 1
        if shard.losses >= self.max_losses:
            raise KgfactError(
                f"{shard.losses} Ray workers died while answering the same {len(shard.requests)} "
                f"requests (first key {shard.requests[0].key!r}); see the Ray logs (out of "
                "memory?)")
        if self._actors[slot] is actor:  # its other lost tasks come here too: replace once
            ray.kill(actor)  # in case it is only unreachable
            self._actors[slot] = self._start()
            self.stats["replaced_workers"] += 1
        queue.appendleft(shard)
        self.stats["resent_shards"] += 1


def _connect(ray, address: str | None) -> None:
    """Start a local Ray instance (``address`` None) or join a cluster."""
    if address is None:
        # "local": a new instance even where 'ray start' left a cluster ray.init would join
        ray.init(address="local", num_cpus=len(os.sched_getaffinity(0)),
                 include_dashboard=False, logging_level="warning")
        return
    if address != "auto":
        # Ray retries an unreachable address for minutes; a plain connect answers at once
        host, _, port = address.removeprefix("ray://").rpartition(":")
        if not host or not port.isdigit():
            raise KgfactError(f"Ray address {address!r} is not auto, HOST:PORT or "
                              "ray://HOST:PORT")
        try:
            socket.create_connection((host, int(port)), timeout=10).close()
        except OSError as exc:
            raise KgfactError(f"cannot reach Ray at {address!r} ({exc.strerror or exc}); is "
                              "the cluster up ('ray start --head' on its head node)?") from None
    try:
        ray.init(address=address, logging_level="warning")
    except (ConnectionError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise KgfactError(f"cannot connect to Ray at {address!r}: {first}") from None


def _placement(ray, model: ModelConfig, workers: int | None) -> tuple[int, dict, int]:
    """How many workers, the Ray resources of each, and torch threads per worker."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if model.device.startswith("cuda") and not gpus:
        raise KgfactError(f"device {model.device!r} was asked for but the Ray cluster has no GPU")
    if gpus and model.device != "cpu":
        n = workers or gpus
        if n > gpus:
            raise KgfactError(f"{n} workers need {n} GPUs; the Ray cluster has {gpus}")
        return n, {"num_gpus": 1, "num_cpus": 1}, 1
    n = workers or sum(1 for node in ray.nodes() if node["Alive"])
    share = resources.get("CPU", 1) / n
    # Ray wants whole numbers above one CPU; below one, a fraction lets every worker start
    cpus = int(share) if share >= 1 else round(share, 4)
    return n, {"num_cpus": cpus}, max(1, int(share))
