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
- **Batching without padding.** Prompts are batched across questions in buckets of equal prefix
  and equal suffix length, so no row is padded and every row is computed the same way whatever
  else is in its batch: greedy answers do not depend on batch size.
- **Stop and retire.** A sequence stops at a newline (or EOS, or ``max_new_tokens``) and leaves
  the batch at once; leading whitespace is not an answer, so a newline before any other text
  does not stop it (:func:`cut_at_stop` is the one rule every backend applies).
- **Seeds.** Sample ``i`` of request ``key`` draws from its own stream seeded by
  ``(seed, key, i)``: distinct per sample, reproducible, and independent of batching.

The engine is the ``"kgfact"`` backend of :data:`kgfact.sampling.BACKENDS` (CPU and CUDA);
the ``"ray"`` backend (:mod:`kgfact.sampling.ray`) runs it on many Ray workers and GPUs.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from kgfact.errors import KgfactError
from kgfact.models import LoadedModel, ModelConfig, load_model
from kgfact.sampling.base import Generation, Request, SamplingConfig, cut_at_stop, sample_stream


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
