"""LoRA training throughput: kgfact's trainer vs its previous loop vs ``transformers.Trainer`` +
peft, in one run.

All train kgfact's default LoRA adapter (r 16, alpha 32, all linear layers) on the same
closed-book examples (real GeoNames questions from the offline dataset, mixed relations and
lengths, in random batches), with the same batch size, optimizer (AdamW, constant learning
rate), model and dtype, for the same number of epochs, and report **examples per second**:

- ``transformers.Trainer`` + peft: the usual recipe, labels -100 on the prompt, a padding
  collator (``DataCollatorForSeq2Seq``), full logits and the model's own loss; one adapter;
- the previous kgfact loop (kept here): left padding and logits for the last ``max answer
  length + 1`` positions of every row; one adapter;
- :class:`kgfact.finetune.GroupTrainer` with one adapter: the output layer on answer tokens
  only;
- :class:`kgfact.finetune.GroupTrainer` with ``--adapters K``: ``K`` trainings of a grid (``K``
  seeds on the same examples) stepped together in one pass over the frozen model; its rate
  counts every adapter's examples, as a grid of ``K`` trainings would be run.

``--profile`` instead prints where a step's time goes (forward through the layers, output layer
and loss, backward, optimizer, the rest), as shares summed over ``--repeats`` short runs.

Usage: ``bash .ci/with-venv python benchmarks/lora_throughput.py [--examples 256] [--epochs 1]
[--adapters 4]``
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from kgfact.data.offline import build_offline_dataset
from kgfact.finetune import (GroupTrainer, LoraSettings, batches, collate, encode, token_losses,
                             with_lora)
from kgfact.models import load_model
from kgfact.qa import QAConfig, build_qa, sample_per_group


def examples_from_geonames(tokenizer, n: int, seed: int = 0):
    data = build_offline_dataset()
    qa, _ = build_qa(data.triples, data.entities,
                     QAConfig(in_distribution=("P17", "P36", "P131", "P1376")))
    train = sample_per_group(qa[qa["split"] == "train"], ["relation"], -(-n // 4), seed)
    return [encode(tokenizer, q, a) for q, a in zip(train["question"], train["answer"])][:n]


def run_trainer(loaded, examples, batch_size, epochs, lr):
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    model = with_lora(loaded.model, LoraSettings(), seed=0)
    rows = [{"input_ids": list(e.ids), "attention_mask": [1] * len(e.ids),
             "labels": [-100] * (len(e.ids) - e.answer_len) + list(e.ids[-e.answer_len:])}
            for e in examples]
    args = TrainingArguments(output_dir="/tmp/kgfact-bench-trainer", report_to=[],
                             per_device_train_batch_size=batch_size, num_train_epochs=epochs,
                             learning_rate=lr, lr_scheduler_type="constant", warmup_steps=0,
                             weight_decay=0.0, save_strategy="no", logging_strategy="no",
                             dataloader_num_workers=0, use_cpu=loaded.device.type == "cpu",
                             disable_tqdm=True, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=rows,
                      data_collator=DataCollatorForSeq2Seq(loaded.tokenizer, padding=True))
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    model.unload()
    return seconds


def previous_loss(model, batch):
    """The previous loop's loss: logits for the last ``keep`` positions of every row."""
    ids, mask, positions, targets, target_mask, keep = batch
    width = ids.shape[1]
    last = torch.arange(width - keep, width, device=ids.device)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                   logits_to_keep=last, use_cache=False).logits[:, :-1].float()
    return torch.nn.functional.cross_entropy(logits[target_mask], targets[target_mask])


def run_previous(loaded, examples, batch_size, epochs, lr):
    model = with_lora(loaded.model, LoraSettings(), seed=0)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                                  weight_decay=0.0)
    model.train()
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        for batch in batches(examples, batch_size, 0, epoch):
            loss = previous_loss(model, collate([examples[i] for i in batch],
                                                loaded.tokenizer.pad_token_id, loaded.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    seconds = time.perf_counter() - started
    model.unload()
    return seconds


def run_group(loaded, examples, batch_size, epochs, lr, adapters):
    trainer = GroupTrainer(loaded, LoraSettings(), list(range(adapters)), [lr] * adapters)
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        trainer.epoch({k: examples for k in range(adapters)}, {k: epoch for k in range(adapters)},
                      batch_size)
    seconds = time.perf_counter() - started
    trainer.close()
    return seconds


def profile(loaded, examples, batch_size, repeats, lr):
    """Shares of a one-adapter step's time, summed over ``repeats`` epochs."""
    model = with_lora(loaded.model, LoraSettings(), seed=0)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    head = model.get_output_embeddings()
    parts = dict.fromkeys(("collate", "layers", "output layer + loss", "backward", "optimizer"),
                          0.0)
    marks: list[float] = []
    pre = head.register_forward_pre_hook(lambda m, a: marks.append(time.perf_counter()))
    model.train()
    for epoch in range(1, repeats + 1):
        for batch in batches(examples, batch_size, 0, epoch):
            t0 = time.perf_counter()
            collated = collate([examples[i] for i in batch], loaded.tokenizer.pad_token_id,
                               loaded.device)
            t1 = time.perf_counter()
            loss = token_losses(model, collated).mean()
            t2 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            t3 = time.perf_counter()
            optimizer.step()
            t4 = time.perf_counter()
            head_start = marks.pop()
            for name, seconds in (("collate", t1 - t0), ("layers", head_start - t1),
                                  ("output layer + loss", t2 - head_start),
                                  ("backward", t3 - t2), ("optimizer", t4 - t3)):
                parts[name] += seconds
        total = sum(parts.values())
        print(f"after {epoch} epoch(s): " + ", ".join(f"{n} {s / total:.0%}"
                                                       for n, s in parts.items()), flush=True)
    pre.remove()
    model.unload()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="gemma3-270m")
    p.add_argument("--examples", type=int, default=256)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--adapters", type=int, default=4, help="trainings stepped together")
    p.add_argument("--profile", action="store_true", help="where a step's time goes")
    p.add_argument("--repeats", type=int, default=3, help="epochs profiled")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    loaded = load_model(args.model)
    examples = examples_from_geonames(loaded.tokenizer, args.examples)
    print(f"{args.model} ({loaded.dtype}, {loaded.device}, {torch.get_num_threads()} threads), "
          f"{len(examples)} examples x {args.epochs} epoch(s), batch {args.batch_size}")
    if args.profile:
        profile(loaded, examples, args.batch_size, args.repeats, args.lr)
        return
    run = (loaded, examples, args.batch_size, args.epochs, args.lr)
    methods = {  # name: (seconds of one run, adapters it trains)
        "a. transformers.Trainer + peft": (lambda: run_trainer(*run), 1),
        "b. previous kgfact loop": (lambda: run_previous(*run), 1),
        "c. kgfact GroupTrainer, 1 adapter": (lambda: run_group(*run, 1), 1),
        f"d. kgfact GroupTrainer, {args.adapters} adapters": (
            lambda: run_group(*run, args.adapters), args.adapters),
    }
    rates = {}
    for name, (method, adapters) in methods.items():
        seconds = method()
        rates[name] = adapters * len(examples) * args.epochs / seconds
        print(f"{name:40} {seconds:8.1f} s {rates[name]:8.2f} examples/s", flush=True)
    base = rates["a. transformers.Trainer + peft"]
    print("ratios vs a: " + ", ".join(f"{n.split('.')[0]} {r / base:.2f}x"
                                      for n, r in rates.items()))


if __name__ == "__main__":
    main()
