"""The built-in engine: short-answer generation for many prompts that share prefixes, the SliCK
workload, made fast.

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
- **Packed batches without padding.** Prompts of any prefixes and suffix lengths are decoded
  together (up to ``max_rows`` sequences, shortest prompts first): each forward is one model call on
  all the batch's new tokens laid end to end, every token at its own position, and attention
  runs per group of rows of equal shape through the model's own SDPA attention, on exactly
  the tensors a batch of those rows alone would give it. No row is padded, so answers are
  those of the engine's other batching, ``packing="bucket"`` (one prefix and one suffix
  length per batch, a transformers cache per batch), to the bit, wherever the model's matrix
  products compute a row the same whatever the number of rows, as bucketing's batch
  invariance always assumed (bf16 on CPUs; fp32 on an AVX2 CPU switches kernels at 1 and at
  4 rows, so there buckets of different sizes already differed in the last bits). Bucketing
  is used where packing cannot follow the model: attention other than SDPA, or sequences
  that reach a sliding attention window.
- **Adapters swapped on one base model.** :meth:`KgfactEngine.use_adapter` serves another
  LoRA adapter without loading the base model again (evaluation's many adapters).
- **Stop and retire.** A sequence stops at a newline (or EOS, or ``max_new_tokens``) and leaves
  the batch at once; leading whitespace is not an answer, so a newline before any other text
  does not stop it (:func:`cut_at_stop` is the one rule every backend applies).
- **Seeds.** Sample ``i`` of request ``key`` draws from its own stream seeded by
  ``(seed, key, i)``: distinct per sample, reproducible, and independent of batching.

The engine is the ``"kgfact"`` backend of :data:`kgfact.sampling.BACKENDS` (CPU and CUDA);
the ``"ray"`` backend (:mod:`kgfact.sampling.ray`) runs it on many Ray workers and GPUs.
"""

from __future__ import annotations

import inspect
import math
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from kgfact.errors import KgfactError
from kgfact.models import LoadedModel, ModelConfig, adapter_id, load_model, swap_adapter
from kgfact.sampling.base import Generation, Request, SamplingConfig, cut_at_stop, sample_stream


@dataclass
class _Node:
    """A distinct continuation of one prompt, and the sequences that share it."""

    request: int                    # index into the batch's requests
    tokens: tuple[int, ...]         # generated so far
    members: list[int]              # -1 is the greedy sequence, 0..n-1 the samples


#: how the engine batches prompts: "packed" (any prefixes and suffix lengths together) or
#: "bucket" (one prefix and one suffix length per batch); see the module docstring
PACKINGS = ("packed", "bucket")

# the attention implementation a packed forward runs under (registered with transformers by
# each packed forward); it runs the model's own SDPA attention once per group of rows of equal shape
_PACKED_ATTENTION = "kgfact-packed"


def _packable(model) -> bool:
    """Whether packed batches can follow ``model``: its attention is SDPA, what
    :class:`_Packed` runs per group (for sequences shorter than :func:`_sliding_window`)."""
    return model.config._attn_implementation == "sdpa"


def _sliding_window(model) -> float:
    """The model's sliding attention window (infinite without one): a sequence that reaches it
    changes the model's cache and masks, which packed batches do not reproduce."""
    window = getattr(model.config.get_text_config(), "sliding_window", None)
    return math.inf if window is None else window


def _token_texts(tokenizer) -> list[str]:
    """Each token's text alone, as candidates for the stop test: :meth:`KgfactEngine._stops`
    confirms every candidate on the decoded answer, so these need only contain every token
    whose decoding can hold a stop string. A fast tokenizer's Rust decoder gives them 6x
    faster than ``batch_decode`` (1.2 s instead of 6.7 s for Gemma 3's 262k tokens); each
    text is kept both raw and with ``batch_decode``'s space clean-up, which can join text."""
    ids = [[i] for i in range(len(tokenizer))]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return tokenizer.batch_decode(ids)
    raw = backend.decode_batch(ids, skip_special_tokens=False)
    if not getattr(tokenizer, "clean_up_tokenization_spaces", False):
        return raw
    return [f"{t}\0{tokenizer.clean_up_tokenization(t)}" for t in raw]


def _packed_attention(module, query, key, value, attention_mask, **kwargs):
    """The attention of a packed forward: :meth:`_Packed.attend` of the batch it was given."""
    return kwargs.pop("kgfact_packed").attend(module, query, key, value, kwargs)


class _Bucket:
    """Prompts of one prefix and one suffix length, decoded as one batch on a transformers
    cache: no row is padded, so every row is computed as it would be alone."""

    def __init__(self, engine: KgfactEngine, members: list[int],
                 encoded: list[tuple[tuple[int, ...], tuple[int, ...]]]) -> None:
        self.engine, self.members = engine, members
        self.prefix = encoded[members[0]][0]
        self.suffixes = [encoded[i][1] for i in members]

    def prefill(self):
        import copy

        import torch

        engine = self.engine
        cache = copy.deepcopy(engine._prefix_cache(self.prefix))
        if cache is not None:
            cache.batch_repeat_interleave(len(self.suffixes))
        logits, self.cache = engine._forward(
            torch.tensor(self.suffixes, device=engine.loaded.device), cache)
        engine.stats["prefill_tokens"] += sum(map(len, self.suffixes))
        return logits

    def reorder(self, parents: list[int]) -> None:
        import torch

        self.cache.reorder_cache(torch.tensor(parents, device=self.engine.loaded.device))

    def step(self, tokens: list[int]):
        import torch

        logits, self.cache = self.engine._forward(
            torch.tensor([[t] for t in tokens], device=self.engine.loaded.device), self.cache)
        return logits


@dataclass
class _Group:
    """Rows ``start:stop`` of a packed batch, all of one shape: ``past`` cached tokens (the
    prefix, or everything so far) and ``new`` tokens in this forward. ``keys``/``values``
    hold their cache per layer, in buffers with room for every token still to come, so a
    decoding step writes one position instead of copying the cache."""

    start: int
    stop: int
    past: int
    new: int
    keys: dict[int, object]
    values: dict[int, object]


class _Packed:
    """Prompts of any prefixes and suffix lengths decoded as one batch, with nothing padded.

    Every forward is one model call on the batch's new tokens laid end to end (one sequence,
    each token at its own position): the layers outside attention compute each token alone, as
    they would in a bucket. Attention runs per group of rows of equal shape (equal prefix and
    suffix lengths in the prefill, equal lengths when decoding), through the model's own SDPA
    attention on the same keys, values and mask a bucket would give it, so every row's answer
    is the one its bucket gives.
    """

    def __init__(self, engine: KgfactEngine, members: list[int],
                 encoded: list[tuple[tuple[int, ...], tuple[int, ...]]],
                 max_new_tokens: int) -> None:
        self.engine, self.members = engine, members  # sorted by length, then prefix length
        self.prefixes = [encoded[i][0] for i in members]
        self.suffixes = [encoded[i][1] for i in members]
        self.room = max_new_tokens  # cache positions each row needs beyond its prompt
        self.groups: list[_Group] = []

    def prefill(self):
        import torch

        engine = self.engine
        self.groups, start = [], 0
        for b in range(1, len(self.members) + 1):
            if b == len(self.members) or (len(self.prefixes[b]), len(self.suffixes[b])) != (
                    len(self.prefixes[start]), len(self.suffixes[start])):
                self.groups.append(_Group(start, b, len(self.prefixes[start]),
                                          len(self.suffixes[start]), {}, {}))
                start = b
        self._caches = [engine._prefix_cache(p) for p in self.prefixes]
        positions = [p for prefix, suffix in zip(self.prefixes, self.suffixes)
                     for p in range(len(prefix), len(prefix) + len(suffix))]
        logits = self._forward([t for s in self.suffixes for t in s], positions)
        del self._caches
        engine.stats["prefill_tokens"] += len(positions)
        # from here on rows of equal length decode together
        merged: list[_Group] = []
        for g in self.groups:
            last = merged[-1] if merged else None
            if last is not None and last.past + last.new == g.past + g.new:
                for layer in last.keys:
                    last.keys[layer] = torch.cat([last.keys[layer], g.keys[layer]])
                    last.values[layer] = torch.cat([last.values[layer], g.values[layer]])
                last.stop = g.stop
            else:
                merged.append(g)
        self.groups = merged
        return logits

    def reorder(self, parents: list[int]) -> None:
        """Keep row ``parents[i]`` as row ``i`` (``parents`` is in row order)."""
        import bisect

        import torch

        device = self.engine.loaded.device
        groups, row = [], 0
        for g in self.groups:
            picked = [p - g.start for p in parents[row:bisect.bisect_left(parents, g.stop)]]
            if not picked:
                continue
            keys, values = g.keys, g.values
            if picked != list(range(g.stop - g.start)):  # rows ended or branched
                index = torch.tensor(picked, device=device)
                keys = {k: v.index_select(0, index) for k, v in keys.items()}
                values = {k: v.index_select(0, index) for k, v in values.items()}
            groups.append(_Group(row, row + len(picked), g.past + g.new, 0, keys, values))
            row += len(picked)
        self.groups = groups

    def step(self, tokens: list[int]):
        for g in self.groups:
            g.new = 1
        return self._forward(tokens, [g.past for g in self.groups
                                      for _ in range(g.start, g.stop)])

    def _forward(self, tokens: list[int], positions: list[int]):
        import torch
        from transformers import AttentionInterface
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        engine = self.engine
        device = engine.loaded.device
        model = engine.loaded.model
        ends = []  # each row's last token in the packed sequence
        for g in self.groups:
            first = ends[-1] + 1 if ends else 0
            ends.extend(first + (r + 1) * g.new - 1 for r in range(g.stop - g.start))
        AttentionInterface.register(_PACKED_ATTENTION, _packed_attention)
        config = model.config
        original = config._attn_implementation
        self.attention = ALL_ATTENTION_FUNCTIONS[original]
        # for this call only: the model stays as it was for anything else that uses it
        config._attn_implementation = _PACKED_ATTENTION
        try:
            with torch.inference_mode():
                out = model(input_ids=torch.tensor([tokens], device=device),
                            position_ids=torch.tensor([positions], device=device),
                            use_cache=False, logits_to_keep=torch.tensor(ends, device=device),
                            kgfact_packed=self)
        finally:
            config._attn_implementation = original
        engine.stats["forwards"] += 1
        engine.stats["rows"] += len(ends)
        return out.logits[0]

    def attend(self, module, query, key, value, kwargs):
        """SDPA attention of every group, as a bucket of its rows would run it."""
        import torch

        layer = module.layer_idx
        out = query.new_empty(query.shape[2], query.shape[1], query.shape[3])
        token = 0
        for g in self.groups:
            rows, end = g.stop - g.start, token + (g.stop - g.start) * g.new

            def split(x):  # (1, heads, tokens, dim) -> (rows, heads, new, dim)
                return x[0, :, token:end].unflatten(1, (rows, g.new)).transpose(0, 1)
            if layer not in g.keys:  # the prefill: room for every token, the prefix first
                for cache, new in ((g.keys, key), (g.values, value)):
                    cache[layer] = new.new_empty(rows, new.shape[1],
                                                 g.past + g.new + self.room, new.shape[3])
                self._copy_prefixes(g, layer)
            length = g.past + g.new
            g.keys[layer][:, :, g.past:length] = split(key)
            g.values[layer][:, :, g.past:length] = split(value)
            mask = None
            if g.new > 1 and g.past:  # what transformers' causal mask gives a bucket here
                q = torch.arange(g.new, device=query.device)[:, None] + g.past
                mask = (torch.arange(length, device=query.device)[None, :] <= q)
                mask = mask[None, None].expand(rows, -1, -1, -1)
            attended, _ = self.attention(module, split(query), g.keys[layer][:, :, :length],
                                         g.values[layer][:, :, :length], mask, **kwargs)
            out[token:end] = attended.flatten(0, 1)
            token = end
        return out[None], None

    def _copy_prefixes(self, g: _Group, layer: int) -> None:
        """Each row's prefix keys and values at ``layer`` into the group's cache."""
        for row, cache in enumerate(self._caches[g.start:g.stop]):
            if cache is not None:  # None: no prefix
                g.keys[layer][row, :, :g.past] = cache.layers[layer].keys[0]
                g.values[layer][row, :, :g.past] = cache.layers[layer].values[0]


class KgfactEngine:
    """The built-in engine (see the module docstring).

    Parameters
    ----------
    loaded : LoadedModel
        Model, tokenizer, device and dtype from :func:`kgfact.models.load_model`.
    max_batch : int
        Most prompts prefilled together in a bucket (also bounds rows decoded together to
        ``max_batch * (n_samples + 1)``).
    prefix_cache_size : int
        How many prefix KV caches to keep (SliCK uses 10 per relation).
    packing : str
        ``"packed"`` (default) or ``"bucket"``: how prompts are batched (:data:`PACKINGS`; both
        give the same answers, packed in far fewer forwards).
    max_rows : int, optional
        Most sequences (greedy answers and samples) a packed batch decodes together; default
        ``16 * max_batch``. It holds ``max_rows // (greedy + n_samples)`` prompts, at least
        one (at the defaults: 30 prompts of SliCK's 17 sequences, 512 greedy prompts).
    """

    @classmethod
    def from_config(cls, model: ModelConfig, max_batch: int = 32) -> KgfactEngine:
        """Load ``model`` and wrap it."""
        return cls(load_model(model), max_batch=max_batch)

    def __init__(self, loaded: LoadedModel, max_batch: int = 32,
                 prefix_cache_size: int = 64, packing: str = "packed",
                 max_rows: int | None = None) -> None:
        if packing not in PACKINGS:
            raise KgfactError(f"unknown packing {packing!r}; use {' or '.join(PACKINGS)}")
        self.loaded = loaded
        self.max_batch = max_batch
        self.packing, self.max_rows = packing, max_rows or 16 * max_batch
        self.prefix_cache_size = prefix_cache_size
        # transformers 5 names the KV cache `cache` and warns on every call that says
        # `past_key_values`; older releases know only the latter
        base = getattr(loaded.model, "get_base_model", lambda: loaded.model)()  # peft wraps it
        self._cache_arg = ("cache" if "cache" in inspect.signature(base.forward).parameters
                           else "past_key_values")
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
            ids = {i for i, t in enumerate(_token_texts(tok)) if any(s in t for s in stop)}
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
            out = self.loaded.model(input_ids=input_ids, use_cache=True, logits_to_keep=last,
                                    **{self._cache_arg: cache})
        self.stats["forwards"] += 1
        self.stats["rows"] += input_ids.shape[0]
        return out.logits[:, -1, :], getattr(out, self._cache_arg)

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

    def use_adapter(self, adapter: str | None) -> None:
        """Serve ``adapter`` (None: the bare model) on the loaded base model from now on
        (:func:`kgfact.models.swap_adapter`); the answers are those of an engine started on
        it. The prefix caches, computed with the previous adapter, are dropped."""
        if adapter_id(adapter) != self.adapter:
            self.loaded = swap_adapter(self.loaded, adapter)
            self.clear_prefix_cache()

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
        results: dict[int, Generation] = {}
        for batch in self._batches(encoded, config):
            for i, gen in zip(batch.members, self._generate_batch(
                    batch, [requests[i] for i in batch.members], config)):
                results[i] = gen
                if on_done is not None:
                    on_done(gen)
        return [results[i] for i in range(len(requests))]

    def _batches(self, encoded: list[tuple[tuple[int, ...], tuple[int, ...]]],
                 config: SamplingConfig) -> list[_Bucket | _Packed]:
        """The requests cut into batches: packed (any prefixes and suffix lengths, the
        shortest prompts first, so a batch holds few distinct lengths; up to ``max_rows``
        sequences) where the model allows it, else buckets of one prefix and one suffix
        length (up to ``max_batch`` prompts)."""
        packable = self.packing == "packed" and _packable(self.loaded.model)
        window = _sliding_window(self.loaded.model)
        packed, bucketed = [], []
        for i, (prefix, suffix) in enumerate(encoded):
            fits = len(prefix) + len(suffix) + config.max_new_tokens < window
            (packed if packable and fits else bucketed).append(i)
        packed.sort(key=lambda i: (len(encoded[i][0]) + len(encoded[i][1]),
                                   len(encoded[i][0]), encoded[i][0]))
        size = max(1, self.max_rows // (config.greedy + config.n_samples))
        batches: list[_Bucket | _Packed] = [
            _Packed(self, packed[start:start + size], encoded, config.max_new_tokens)
            for start in range(0, len(packed), size)]
        buckets: dict[tuple[tuple[int, ...], int], list[int]] = defaultdict(list)
        for i in bucketed:
            buckets[(encoded[i][0], len(encoded[i][1]))].append(i)
        return batches + [_Bucket(self, members[start:start + self.max_batch], encoded)
                          for members in buckets.values()
                          for start in range(0, len(members), self.max_batch)]

    def _generate_batch(self, batch: _Bucket | _Packed, requests: list[Request],
                        config: SamplingConfig) -> list[Generation]:
        import torch

        logits = batch.prefill()
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
            batch.reorder(parents)  # in row order: children are made row by row
            logits = batch.step([node.tokens[-1] for node in nodes])
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
