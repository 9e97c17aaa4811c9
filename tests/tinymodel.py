"""A tiny randomly initialised causal LM with a character-level tokenizer, saved like any
Hugging Face model directory, so tests exercise kgfact's real loading path in seconds."""

from __future__ import annotations

import string
from pathlib import Path


def make_tiny_model(path: Path, seed: int = 0) -> Path:
    """Write a 2-layer Llama-architecture model and its tokenizer to ``path``."""
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    chars = sorted(set(string.printable) - set("\x0b\x0c\r\t"))
    vocab = {tok: i for i, tok in enumerate(specials + chars)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, bos_token_id=vocab["<bos>"],
                         eos_token_id=vocab["<eos>"], pad_token_id=vocab["<pad>"])
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # larger logits than the default init, so argmax ties never occur
        model.lm_head.weight.mul_(50)
    model.save_pretrained(path, safe_serialization=True)
    fast.save_pretrained(path)
    return path
