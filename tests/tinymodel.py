"""A tiny randomly initialised causal LM with a character-level tokenizer, saved like any
Hugging Face model directory, so tests exercise kgfact's real loading path in seconds."""

from __future__ import annotations

import string
from pathlib import Path


def make_tiny_model(path: Path, seed: int = 0, arch: str = "llama") -> Path:
    """Write a 2-layer model and its tokenizer to ``path``.

    ``arch="llama"`` prepends a BOS token to every encoding, as Llama and Gemma do;
    ``arch="qwen2"`` is a Qwen2-architecture model whose tokenizer has no BOS token at all, as
    Qwen2.5's has not (an empty text encodes to no tokens).
    """
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import (LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast,
                              Qwen2Config, Qwen2ForCausalLM)

    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    chars = sorted(set(string.printable) - set("\x0b\x0c\r\t"))
    vocab = {tok: i for i, tok in enumerate(specials + chars)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    bos = "<bos>" if arch == "llama" else None
    if bos is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, vocab[bos])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>")
    torch.manual_seed(seed)
    config_class, model_class = {"llama": (LlamaConfig, LlamaForCausalLM),
                                 "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[arch]
    config = config_class(vocab_size=len(vocab), hidden_size=64, intermediate_size=128,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=1024,
                          bos_token_id=vocab[bos] if bos else None,
                          eos_token_id=vocab["<eos>"], pad_token_id=vocab["<pad>"])
    model = model_class(config)
    with torch.no_grad():  # larger logits than the default init, so argmax ties never occur
        model.lm_head.weight.mul_(50)
    model.save_pretrained(path, safe_serialization=True)
    fast.save_pretrained(path)
    return path


def make_tiny_adapter(model_dir: Path, path: Path, seed: int | None = None) -> Path:
    """Save a LoRA adapter of the tiny model to ``path``.

    By default it is freshly initialised: peft starts its update at zero, so the adapted model
    answers exactly as the bare one. With a ``seed`` the update is random (seeded) and large,
    so the adapted model answers differently.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True)
    if seed is not None:
        torch.manual_seed(seed)
    config = LoraConfig(r=2, lora_alpha=64, target_modules=["q_proj", "down_proj"],
                        init_lora_weights=seed is None)
    get_peft_model(model, config).save_pretrained(path)
    return path
