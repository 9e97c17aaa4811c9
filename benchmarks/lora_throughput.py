"""LoRA training throughput: kgfact's trainer vs ``transformers.Trainer`` + peft, in one run.

Both train the same LoRA adapter (kgfact's defaults: r 16, alpha 32, all linear layers) on the
same closed-book examples (real GeoNames questions from the offline dataset, mixed relations
and lengths), with the same batch size, optimizer (AdamW, constant learning rate), model and
dtype, for the same number of epochs, and report **real tokens per second** (padding excluded).

- ``transformers.Trainer``: the usual recipe, labels -100 on the prompt, a padding collator
  (``DataCollatorForSeq2Seq``), full logits and the model's own loss;
- ``Trainer, group_by_length``: the same with Trainer's length grouping, the nearest built-in
  to bucketing;
- kgfact: :func:`kgfact.finetune.train_epoch`: left padding, logits only for answer positions,
  length-bucketed batches.

Usage: ``bash .ci/with-venv python benchmarks/lora_throughput.py [--examples 256] [--epochs 1]``
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from kgfact.data.offline import build_offline_dataset
from kgfact.finetune import LoraSettings, encode, train_epoch, with_lora
from kgfact.models import load_model
from kgfact.qa import QAConfig, build_qa, sample_per_group


def examples_from_geonames(tokenizer, n: int, seed: int = 0):
    data = build_offline_dataset()
    qa, _ = build_qa(data.triples, data.entities,
                     QAConfig(in_distribution=("P17", "P36", "P131", "P1376")))
    train = sample_per_group(qa[qa["split"] == "train"], ["relation"], n // 4, seed)
    return [encode(tokenizer, q, a) for q, a in zip(train["question"], train["answer"])]


def run_trainer(loaded, examples, batch_size, epochs, lr, group_by_length):
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    model = with_lora(loaded.model, LoraSettings(), seed=0)
    rows = [{"input_ids": list(e.ids), "attention_mask": [1] * len(e.ids),
             "labels": [-100] * (len(e.ids) - e.answer_len) + list(e.ids[-e.answer_len:])}
            for e in examples]
    args = TrainingArguments(output_dir="/tmp/kgfact-bench-trainer", report_to=[],
                             per_device_train_batch_size=batch_size, num_train_epochs=epochs,
                             learning_rate=lr, lr_scheduler_type="constant", warmup_steps=0,
                             weight_decay=0.0, save_strategy="no", logging_strategy="no",
                             train_sampling_strategy="group_by_length" if group_by_length
                             else "random", dataloader_num_workers=0,
                             use_cpu=loaded.device.type == "cpu", disable_tqdm=True, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=rows,
                      data_collator=DataCollatorForSeq2Seq(loaded.tokenizer, padding=True))
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    model.unload()
    return seconds


def run_kgfact(loaded, examples, batch_size, epochs, lr):
    model = with_lora(loaded.model, LoraSettings(), seed=0)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                                  weight_decay=0.0)
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        train_epoch(model, optimizer, examples, batch_size, 0, epoch,
                    loaded.tokenizer.pad_token_id, loaded.device)
    seconds = time.perf_counter() - started
    model.unload()
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="gemma3-270m")
    p.add_argument("--examples", type=int, default=256)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    loaded = load_model(args.model)
    examples = examples_from_geonames(loaded.tokenizer, args.examples)
    tokens = sum(len(e.ids) for e in examples) * args.epochs
    answer = sum(e.answer_len for e in examples) * args.epochs
    print(f"{args.model} ({loaded.dtype}, {loaded.device}, {torch.get_num_threads()} threads), "
          f"{len(examples)} examples x {args.epochs} epoch(s), batch {args.batch_size}: "
          f"{tokens} real tokens ({answer} answer tokens)")
    methods = {
        "a. transformers.Trainer + peft": lambda: run_trainer(
            loaded, examples, args.batch_size, args.epochs, args.lr, False),
        "b. Trainer + peft, group_by_length": lambda: run_trainer(
            loaded, examples, args.batch_size, args.epochs, args.lr, True),
        "c. kgfact train_epoch": lambda: run_kgfact(
            loaded, examples, args.batch_size, args.epochs, args.lr),
    }
    rates = {}
    for name, method in methods.items():
        seconds = method()
        rates[name] = tokens / seconds
        print(f"{name:38} {seconds:8.1f} s {rates[name]:9.0f} tokens/s", flush=True)
    base = rates["a. transformers.Trainer + peft"]
    print("ratios vs a: " + ", ".join(f"{n.split('.')[0]} {r / base:.2f}x"
                                      for n, r in rates.items()))


if __name__ == "__main__":
    main()
