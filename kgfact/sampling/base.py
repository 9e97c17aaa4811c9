"""The request/backend interface every sampling backend shares, and the backend registry.

A backend answers :class:`Request` s under a :class:`SamplingConfig` with :class:`Generation` s
(:class:`SamplingBackend`) and states the LoRA adapter it serves (``adapter``, from what it
actually loaded), so a caller can check that it evaluates the model it means to
(:func:`check_adapter`). A backend that can switch adapters on one loaded base model
(:class:`AdapterSwitching`) is reused from model to model by :func:`serve_model`. Backends
are registered by name in :data:`BACKENDS`; the built-in ones lazily, as ``"module:Class"``
(as rdflib's plugins are), so importing :mod:`kgfact.sampling` imports neither vLLM nor Ray
nor their backend modules:

- ``"kgfact"``: the built-in engine (:mod:`kgfact.sampling.engine`; CPU and CUDA);
- ``"vllm"``: vLLM, when it is installed (:mod:`kgfact.sampling.vllm`);
- ``"ray"``: the built-in engine on many Ray workers and GPUs (:mod:`kgfact.sampling.ray`).

:func:`cut_at_stop` is the one rule every backend applies to end an answer, and
:func:`sample_stream` the random stream of each sample.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from kgfact.config import check_fields
from kgfact.errors import KgfactError
from kgfact.models import ModelConfig, adapter_id
from kgfact.registry import Registry, load_target


@dataclass(frozen=True)
class SamplingConfig:
    """How each prompt is answered: one greedy answer plus ``n_samples`` samples."""

    n_samples: int = field(default=16, metadata={"min": 0, "help": "Sampled answers per prompt."})
    # below 0.001 a sample is the greedy answer in effect, and near 0 logits / temperature
    # overflow the softmax (5e-324 gave NaN probabilities)
    temperature: float = field(default=0.5, metadata={"min": 1e-3,
        "help": "Sampling temperature (>= 0.001; lower ones are greedy in effect)."})
    top_k: int = field(default=40, metadata={"min": 1,
        "help": "Sample among the k most likely tokens."})
    greedy: bool = field(default=True, metadata={"help": "Also produce the greedy answer."})
    max_new_tokens: int = field(default=16, metadata={"min": 1,
        "help": "Longest answer in tokens."})
    stop: tuple[str, ...] = field(default=("\n",), metadata={
        "help": "An answer ends before the first of these strings."})
    seed: int = field(default=0, metadata={"min": 0,
        "help": "Seed of the per-sample random streams."})

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.greedy and not self.n_samples:
            raise KgfactError("nothing to generate: greedy is off and n_samples is 0")


@dataclass(frozen=True)
class Request:
    """One prompt: a shared ``prefix`` (cached) followed by its own ``suffix``."""

    key: str = field(metadata={"help": "Unique id of the prompt; seeds its samples."})
    prefix: str = field(metadata={"help": "Text shared by many prompts (few-shot exemplars)."})
    suffix: str = field(metadata={"help": "The prompt's own text (the question)."})


@dataclass(frozen=True)
class Generation:
    """The answers to one :class:`Request`."""

    key: str
    greedy: str | None
    samples: tuple[str, ...]


class SamplingBackend(Protocol):
    """What every generation backend provides."""

    #: the adapter it serves as :func:`kgfact.models.adapter_id` gives it; None for none
    adapter: str | None

    def generate(self, requests: Sequence[Request], config: SamplingConfig,
                 on_done: Callable[[Generation], None] | None = None) -> list[Generation]:
        """Answer every request; ``on_done`` is called as each one finishes."""


class BackendFactory(Protocol):
    """What :data:`BACKENDS` holds: something that starts a backend on a model (a backend class,
    or a :class:`LazyBackend` naming one)."""

    def from_config(self, model: ModelConfig, max_batch: int = 32,
                    **options: Any) -> SamplingBackend:
        """A backend serving ``model``."""


@dataclass(frozen=True)
class BackendConfig:
    """The generation engine SliCK and evaluation use (a config's ``[backend]`` table)."""

    name: str = field(default="kgfact", metadata={"help": "kgfact, vllm or ray."})
    address: str | None = field(default=None, metadata={
        "help": "Ray cluster address (ray only; default: a local Ray instance)."})
    workers: int | None = field(default=None, metadata={"min": 1,
        "help": "Ray workers, one model replica each (ray only)."})
    max_batch: int = field(default=32, metadata={"min": 1, "help": "Prompts prefilled together."})
    chunk_size: int = field(default=64, metadata={"min": 1,
        "help": "SliCK questions per checkpoint."})

    def __post_init__(self) -> None:
        check_fields(self)
        if self.options() and self.name != "ray":
            raise KgfactError(f"address and workers are for the ray backend, not {self.name!r}")

    def options(self) -> dict:
        """``backend_options`` for the stages: the Ray settings that are set."""
        return {k: v for k, v in (("address", self.address), ("workers", self.workers))
                if v is not None}


class LazyBackend:
    """A backend class registered as ``"module:Class"`` and imported the first time a backend
    is started from it (:meth:`from_config`), as rdflib registers its plugins.

    Parameters
    ----------
    target : str
        ``"package.module:Class"``; the class has a ``from_config(model, max_batch, **options)``
        classmethod.
    answers_from : str, optional
        The registered name of the engine whose answers the backend returns, where that is
        another backend's (:func:`recorded_backend`); it must be known without importing the
        module. None: its own name.
    """

    def __init__(self, target: str, answers_from: str | None = None) -> None:
        module, _, name = target.partition(":")
        if not module or not name:
            raise KgfactError(f"a lazy backend is named 'module:Class', not {target!r}")
        self.target, self.answers_from = target, answers_from

    def load(self) -> type:
        """The backend class (its module imported now if not yet)."""
        return load_target(self.target)

    def from_config(self, model: ModelConfig, max_batch: int = 32,
                    **options: Any) -> SamplingBackend:
        """Import the backend's module and start a backend on ``model``."""
        return self.load().from_config(model, max_batch=max_batch, **options)

    def __repr__(self) -> str:
        extra = f", answers_from={self.answers_from!r}" if self.answers_from else ""
        return f"LazyBackend({self.target!r}{extra})"


BACKENDS: Registry[BackendFactory] = Registry("sampling backend")
# by name only: importing this module imports none of them (the ray backend records the
# built-in engine's name: its workers run that engine, so the answers are the same)
BACKENDS.register("kgfact", LazyBackend("kgfact.sampling.engine:KgfactEngine"))
BACKENDS.register("vllm", LazyBackend("kgfact.sampling.vllm:VllmEngine"))
BACKENDS.register("ray", LazyBackend("kgfact.sampling.ray:RayBackend", answers_from="kgfact"))


def make_backend(backend: str | SamplingBackend, model: ModelConfig, max_batch: int = 32, *,
                 label: str | None = None, **options) -> SamplingBackend:
    """A backend serving ``model``: started on it by registered name, or ``backend`` itself if an
    instance; either way refused unless it states that it serves ``model``'s adapter
    (:func:`check_adapter`; ``label`` names the model there, default its name).

    ``options`` go to the backend's ``from_config`` (e.g. a cluster address for a distributed
    backend).
    """
    if isinstance(backend, str):
        engine, hint = BACKENDS.get(backend).from_config(model, max_batch=max_batch,
                                                         **options), ""
    else:
        engine, hint = backend, "; give the backend by name so one is started per model"
    check_adapter(engine, model.adapter, label or model.name, hint)
    return engine


class AdapterSwitching(Protocol):
    """A backend that can serve another adapter of the same base model without starting again
    (the built-in engine: the base model is loaded once for a whole evaluation)."""

    adapter: str | None

    def use_adapter(self, adapter: str | None) -> None:
        """Serve ``adapter`` (None: the bare base model) from now on."""


def serve_model(backend: str | SamplingBackend, model: ModelConfig,
                current: SamplingBackend | None = None, max_batch: int = 32, *,
                label: str | None = None, **options) -> SamplingBackend:
    """A backend serving ``model``: ``current`` switched to ``model``'s adapter where it was
    started by name and can switch (:class:`AdapterSwitching`), else :func:`make_backend`.
    Either way it is checked to serve the adapter (:func:`check_adapter`)."""
    if isinstance(backend, str) and current is not None and hasattr(current, "use_adapter"):
        current.use_adapter(model.adapter)
        check_adapter(current, model.adapter, label or model.name)
        return current
    return make_backend(backend, model, max_batch, label=label, **options)


def check_adapter(backend: SamplingBackend, adapter: str | None, model: str,
                  hint: str = "") -> None:
    """Refuse ``backend`` unless it states that it serves ``adapter`` (None: the bare model);
    ``hint`` ends the error message.

    A backend that silently dropped an adapter would score the base model in its place.
    """
    name = type(backend).__name__
    if not hasattr(backend, "adapter"):
        raise KgfactError(f"backend {name} does not say which adapter it serves, so {model!r} "
                          "cannot be checked; give it an 'adapter' attribute")
    want, served = adapter_id(adapter), adapter_id(backend.adapter)
    if want != served:
        raise KgfactError(f"backend {name} serves {served or 'the bare model'} but {model!r} "
                          f"needs {want or 'the bare model'}{hint}")


def recorded_backend(backend: str | SamplingBackend) -> str:
    """The backend name a stage records in its config: the engine that decides the answers.

    Backends returning identical answers record the same name (``"ray"`` records
    ``"kgfact"``), so a run started on one can be resumed on the other; where the work ran is
    not part of the configuration. A name is answered without importing its backend.
    """
    if isinstance(backend, str):
        return getattr(BACKENDS.get(backend), "answers_from", None) or backend
    return getattr(backend, "answers_from", type(backend).__name__)


def sample_stream(seed: int, key: str, index: int) -> np.random.Generator:
    """The random stream of sample ``index`` of request ``key``."""
    digest = hashlib.sha256(f"{seed}\x1f{key}\x1f{index}".encode()).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest[:16], "little")))


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first stop string after its leading whitespace.

    Models often begin an answer with a newline; that newline is not the end of the answer.

    >>> cut_at_stop("\\nParis\\nQ: next", ("\\n",))
    '\\nParis'
    """
    start = len(text) - len(text.lstrip())
    cut = min((i for i in (text.find(s, start) for s in stop) if i >= 0), default=len(text))
    return text[:cut]
