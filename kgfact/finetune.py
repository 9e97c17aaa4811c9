"""LoRA fine-tuning on a fine-tuning set, with per-epoch dynamics, EARLY_STOP and CONVERGENCE.

Each example is the closed-book prompt ``Q: {question}\\nA:`` followed by `` {answer}\\n``, the
same text the sampling engine prompts with at zero-shot, so a fine-tuned model is evaluated on
exactly the format it learned. The loss is the mean cross-entropy over answer tokens only
(the trailing newline included, so the model learns where to stop).

Why it is fast (``benchmarks/lora_throughput.py`` compares it with ``transformers.Trainer``):

- **Answer-only logits.** Examples are left-padded, so every answer ends at the last position;
  the output layer (a 262k-token vocabulary for Gemma 3, most of the model's FLOPs at these
  lengths) runs only on the answer tokens (:func:`token_losses`).
- **Adapters stepped together.** Up to ``group_size`` trainings of the grid (sets x seeds x
  learning rates) share each forward and backward over the frozen model
  (:class:`GroupTrainer`, :mod:`kgfact.lora`); each adapter still follows its own plain peft
  training, to float rounding.

``backend="ray"`` trains each adapter as a Ray task on its own worker instead
(:func:`train_on_ray`).

Batches are drawn at random, not bucketed by length: questions of one relation share a
template and so a length, and length buckets would make most batches a single relation (a
recipe artefact Gekhman et al. do not have).

After every epoch the model answers, greedily and zero-shot with the sampling engine, every
training question (how many examples of each SliCK category it *fits*: the training dynamics),
the dev questions (for EARLY_STOP) and the test questions (for Gekhman's regression). EARLY_STOP is
the epoch with the best dev accuracy (the earliest of ties), CONVERGENCE the last epoch: when the
model fits ``convergence_fit`` of its training set, or at ``max_epochs``. Both are saved as peft
adapters (safetensors).

The learning rate is constant; ``learning_rate_grid`` chooses it on dev: each rate of the grid
trains one set (``grid_set``) under the first seed, and the rate with the best EARLY_STOP dev
accuracy trains every set (the ``lr_grid`` table records each trial, with its memorised-answer
rate, so a rate at which the model collapses onto its training answers is visible). Every set is
trained once per seed of ``seeds``.

LoRA dropout is off by default, so an epoch is a pure function
of the state before it and its seeded batch order: after every epoch the adapter, the optimizer
state and the dynamics are saved together (safetensors + JSON, no pickle), the states of a group
committed as one (:func:`_commit`), and a run killed at any point resumes from the last finished
epoch and ends with bit-identical adapters.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from kgfact.answers import match_many
from kgfact.config import check_fields
from kgfact.contract import (CATEGORIES, CHECKPOINTS, memorised, read_set, seed_home,
                             trained_sets)
from kgfact.cost import Meter
from kgfact.errors import KgfactError
from kgfact.models import LoadedModel, ModelConfig, load_model, quiet_peft
from kgfact.prompts import QUERY, TARGET
from kgfact.qa import sample_per_group
from kgfact.rundir import RunDir, atomic_write_text, config_json, write_parquet
from kgfact.sampling import KgfactEngine, Request, SamplingConfig

STAGE = "finetune"


@dataclass(frozen=True)
class LoraSettings:
    """The LoRA adapter (peft ``LoraConfig``) trained on top of the frozen model."""

    r: int = field(default=16, metadata={"min": 1, "help": "Rank of the update matrices."})
    alpha: int = field(default=32, metadata={"min": 1,
        "help": "Scaling numerator (update * alpha / r)."})
    dropout: float = field(default=0.0, metadata={"min": 0, "below": 1,
        "help": "Dropout on the adapter input; 0 keeps resumed runs bit-identical."})
    target_modules: str | tuple[str, ...] = field(default="all-linear", metadata={"nonempty": True,
        "help": "Modules to adapt: 'all-linear' or module names such as ('q_proj', 'v_proj')."})

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class FinetuneConfig:
    """How every fine-tuning set is trained."""

    sets: tuple[str, ...] = field(default=("ft-known", "ft-unknown"), metadata={
        "name": True, "nonempty": True,
        "help": "Fine-tuning sets to train (names from the ftsets table)."})
    lora: LoraSettings = field(default_factory=LoraSettings, metadata={
        "help": "The adapter."})
    learning_rate: float = field(default=1e-3, metadata={"above": 0,
        "help": "AdamW learning rate (constant), when no grid is given."})
    learning_rate_grid: tuple[float, ...] = field(default=(), metadata={"above": 0,
        "help": "Learning rates tried on dev first: each trains grid_set under the first seed "
                "and the one with the best EARLY_STOP dev accuracy trains every set (table "
                "lr_grid); empty = use learning_rate."})
    grid_set: str = field(default="mix-50", metadata={"name": True,
        "help": "Fine-tuning set the learning-rate grid is tried on."})
    weight_decay: float = field(default=0.0, metadata={"min": 0, "help": "AdamW weight decay."})
    batch_size: int = field(default=16, metadata={"min": 1, "help": "Examples per optimizer step."})
    max_epochs: int = field(default=10, metadata={"min": 1,
        "help": "Epoch limit (CONVERGENCE at the latest)."})
    convergence_fit: float = field(default=1.0, metadata={"above": 0, "max": 1,
        "help": "Stop once the model fits this share of its training set (train accuracy)."})
    eval_questions: int = field(default=100, metadata={"min": 1,
        "help": "Dev and test questions per relation evaluated after every epoch."})
    seeds: tuple[int, ...] = field(default=(0,), metadata={"min": 0, "nonempty": True,
        "help": "Training seeds (batch orders and adapter init): every set is trained once "
                "per seed, so seed-to-seed variation enters the intervals."})
    group_size: int = field(default=8, metadata={"min": 1,
        "help": "Trainings (set, seed, learning rate) stepped together in one pass over the "
                "frozen model; 1 trains one at a time."})

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class Example:
    """One tokenised training example."""

    ids: tuple[int, ...] = field(metadata={"help": "BOS, prompt and answer token ids."})
    answer_len: int = field(metadata={"help": "How many trailing ids are the answer."})


def encode(tokenizer: Any, question: str, answer: str) -> Example:
    """Token ids of one example, tokenised the way the sampling engine tokenises its prompts."""
    prompt = tokenizer("", add_special_tokens=True)["input_ids"] + tokenizer(
        QUERY.format(question=question), add_special_tokens=False)["input_ids"]
    target = tokenizer(TARGET.format(answer=answer), add_special_tokens=False)["input_ids"]
    return Example(tuple(prompt + target), len(target))


def batches(examples: list[Example], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Seeded random batches of example indices for one epoch (a new order every epoch)."""
    order = np.random.default_rng([seed, epoch]).permutation(len(examples)).tolist()
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def collate(examples: list[Example], pad_id: int, device: Any):
    """Left-padded ids, attention mask, position ids and the answer-token targets of a batch.

    Returns ``(input_ids, attention_mask, position_ids, targets, target_mask, keep)``: the model
    keeps logits for the last ``keep`` positions, whose first ``keep - 1`` predict ``targets``.
    """
    import torch

    width = max(len(e.ids) for e in examples)
    keep = max(e.answer_len for e in examples) + 1
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    target_mask = torch.zeros((len(examples), keep - 1), dtype=torch.bool)
    for row, e in enumerate(examples):
        ids[row, width - len(e.ids):] = torch.tensor(e.ids)
        mask[row, width - len(e.ids):] = 1
        target_mask[row, keep - 1 - e.answer_len:] = True
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    targets = ids[:, width - keep + 1:]
    return (ids.to(device), mask.to(device), positions.to(device), targets.to(device),
            target_mask.to(device), keep)


def token_losses(model: Any, batch) -> Any:
    """Cross-entropy of every answer token of a collated batch, row after row.

    The output layer (a 262k-token vocabulary for Gemma 3, most of a step's FLOPs at these
    lengths) runs only on the answer positions: a pre-hook hands it just those hidden states,
    and whatever the model does to logits after it (Gemma's soft-capping) is elementwise.
    """
    import torch

    ids, mask, positions, targets, target_mask, keep = batch
    width = ids.shape[1]
    # positions by index rather than logits_to_keep=keep: see KgfactEngine._forward
    last = torch.arange(width - keep, width, device=ids.device)
    hook = model.get_output_embeddings().register_forward_pre_hook(
        lambda module, args: (args[0][:, :-1][target_mask],))
    try:
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                       logits_to_keep=last, use_cache=False).logits.float()
    finally:
        hook.remove()
    return torch.nn.functional.cross_entropy(logits, targets[target_mask], reduction="none")


def with_lora(model: Any, lora: LoraSettings, seed: int) -> Any:
    """``model`` wrapped with a fresh, seeded LoRA adapter (peft); only the adapter trains."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)  # the adapter's initialisation
    quiet_peft()
    return get_peft_model(model, LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, task_type="CAUSAL_LM",
        target_modules=(lora.target_modules if isinstance(lora.target_modules, str)
                        else list(lora.target_modules))))


class GroupTrainer:
    """Several LoRA trainings on one frozen model, stepped together (:mod:`kgfact.lora`).

    Training ``k`` starts from the adapter ``with_lora(model, lora, seeds[k])`` would give and
    has its own AdamW at ``learning_rates[k]``; each step concatenates the batches of the
    trainings that have one, runs one forward and one backward, and steps each of their
    optimizers on its own loss, so every adapter trains as it would alone.
    """

    def __init__(self, loaded: LoadedModel, lora: LoraSettings, seeds: list[int],
                 learning_rates: list[float], weight_decay: float = 0.0) -> None:
        import torch
        from peft import get_peft_model_state_dict

        from kgfact.lora import LoraGroup

        states = []
        for seed in seeds:  # peft's own initialisation, one adapter at a time
            peft = with_lora(loaded.model, lora, seed)
            states.append({k: v.clone() for k, v in get_peft_model_state_dict(peft).items()})
            peft_config = peft.peft_config["default"]
            peft.unload()
        self.loaded, self.seeds = loaded, seeds
        self.group = LoraGroup(loaded.model, states, peft_config)
        self.optimizers = [torch.optim.AdamW(self.group.parameters(k), lr=rate,
                                             weight_decay=weight_decay)
                           for k, rate in enumerate(learning_rates)]
        #: a sampling engine on the model; :meth:`engine` routes it through one adapter
        self._engine = KgfactEngine(LoadedModel(loaded.model, loaded.tokenizer, loaded.device,
                                                loaded.dtype, loaded.name, loaded.path))

    def engine(self, k: int) -> KgfactEngine:
        """The sampling engine, answering with adapter ``k`` (the model in eval mode)."""
        self.loaded.model.eval()
        self.group.route(only=k)
        return self._engine

    def epoch(self, examples: dict[int, list[Example]], epochs: dict[int, int], batch_size: int,
              after_step: Callable[[int, int, int, float], None] | None = None
              ) -> dict[int, float]:
        """One epoch of each training ``k`` in ``examples`` (its epoch ``epochs[k]`` and seed
        give its batch order); returns each one's mean loss.

        ``after_step(k, step, batch_size, loss)`` is called after every optimizer step.
        """
        import torch

        model, pad = self.loaded.model, self.loaded.tokenizer.pad_token_id
        order = {k: batches(examples[k], batch_size, self.seeds[k], epochs[k])
                 for k in examples}
        losses: dict[int, list[float]] = {k: [] for k in examples}
        model.train()
        for step in range(max(len(b) for b in order.values())):
            part = [(k, order[k][step]) for k in examples if step < len(order[k])]
            rows = [examples[k][i] for k, b in part for i in b]
            batch = collate(rows, pad, self.loaded.device)
            self.group.route([(k, len(b)) for k, b in part])
            per_token = token_losses(model, batch)
            # each training's loss is the mean over its own answer tokens
            sizes = batch[4].sum(1).split([len(b) for _, b in part])
            mine = [t.mean() for t in per_token.split([int(s.sum()) for s in sizes])]
            for k, _ in part:
                self.optimizers[k].zero_grad(set_to_none=True)
            torch.stack(mine).sum().backward()
            for (k, b), m in zip(part, mine):
                self.optimizers[k].step()
                losses[k].append(m.item())
                if after_step is not None:
                    after_step(k, step, len(b), losses[k][-1])
        return {k: float(np.mean(v)) for k, v in losses.items()}

    def close(self) -> None:
        """Take the adapters out of the model (its base weights never changed)."""
        self.group.remove()


# -- adapters and resumable state --------------------------------------------------------------
def save_adapter(trainer: GroupTrainer, k: int, path: Path) -> None:
    """Save adapter ``k`` of ``trainer`` to ``path`` atomically (peft, safetensors)."""
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.group.save(k, tmp)
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


def _save_state(path: Path, trainer: GroupTrainer, k: int, state: dict, dynamics: pd.DataFrame
                ) -> None:
    """Adapter, optimizer state and dynamics of training ``k`` after an epoch, all at once."""
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.group.save(k, tmp / "adapter")
    optimizer = trainer.optimizers[k].state_dict()
    save_file({f"{i}.{key}": v.contiguous() for i, s in optimizer["state"].items()
               for key, v in s.items()}, str(tmp / "optimizer.safetensors"))
    write_parquet(dynamics, tmp / "dynamics.parquet")
    atomic_write_text(tmp / "trainer.json", json.dumps(
        {**state, "param_groups": optimizer["param_groups"]}, indent=2))
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


def _load_state(path: Path, trainer: GroupTrainer, k: int) -> tuple[dict, pd.DataFrame]:
    from safetensors.torch import load_file

    trainer.group.load_state_dict(k, load_file(str(path / "adapter" /
                                                    "adapter_model.safetensors")))
    state = json.loads((path / "trainer.json").read_text())
    flat = load_file(str(path / "optimizer.safetensors"))
    saved: dict[int, dict[str, Any]] = {}
    for key, value in flat.items():
        index, name = key.split(".", 1)
        saved.setdefault(int(index), {})[name] = value
    trainer.optimizers[k].load_state_dict({"state": saved,
                                           "param_groups": state.pop("param_groups")})
    return state, pd.read_parquet(path / "dynamics.parquet")


def _commit(journal: Path, homes: list[Path]) -> None:
    """Make every home's ``state.next`` its ``state`` as one step.

    Trainings of a group must resume from the same epoch: resumed apart, they would train beside
    other rows and round differently. A run killed mid-commit finds the journal and finishes it
    (:func:`_recover`).
    """
    atomic_write_text(journal, json.dumps([os.path.relpath(h, journal.parent) for h in homes]))
    _recover(journal, homes)


def _recover(journal: Path, homes: list[Path]) -> None:
    """Finish a commit the journal records; drop the ``state.next`` of any other home (its
    group was killed before committing, so it resumes from its last committed epoch)."""
    if journal.exists():
        for rel in json.loads(journal.read_text()):
            home = journal.parent / rel
            if (home / "state.next").exists():
                shutil.rmtree(home / "state", ignore_errors=True)
                (home / "state.next").rename(home / "state")
        journal.unlink()
    for home in homes:
        shutil.rmtree(home / "state.next", ignore_errors=True)


def _finished(home: Path) -> bool:
    state = home / "state" / "trainer.json"
    return state.exists() and json.loads(state.read_text())["done"]


# -- evaluation during training ----------------------------------------------------------------
def greedy_answers(engine: KgfactEngine, questions: list[str], max_new_tokens: int = 16
                   ) -> list[str]:
    """Zero-shot greedy answers of ``engine``'s model to ``questions`` (prompt as in training)."""
    engine.clear_prefix_cache()  # the weights changed since the last call
    requests = [Request(str(i), "", QUERY.format(question=q)) for i, q in enumerate(questions)]
    config = SamplingConfig(n_samples=0, max_new_tokens=max_new_tokens)
    return [g.greedy.strip() for g in engine.generate(requests, config)]


def _accuracy(engine: KgfactEngine, table: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Whether each question of ``table`` is answered right, and the answers."""
    if table.empty:
        return np.zeros(0, dtype=bool), []
    answers = greedy_answers(engine, table["question"].tolist())
    return match_many(answers, table["answer"].tolist(), table["aliases"].tolist()), answers


def _dynamics_row(engine: KgfactEngine, train: pd.DataFrame, dev: pd.DataFrame,
                  test: pd.DataFrame, epoch: int, loss: float, seconds: float) -> dict:
    # relabelled examples are fitted when the model says the relabelled answer, not the gold one
    target = train.assign(aliases=[[] if r else list(a) for r, a in
                                   zip(train["relabelled"], train["aliases"])])
    fit, _ = _accuracy(engine, target)
    dev_ok, _ = _accuracy(engine, dev)
    test_ok, test_answers = _accuracy(engine, test)
    row = {"epoch": epoch, "loss": loss, "train_fit": float(fit.mean()),
           "n_known": int(train["known"].sum()), "n_unknown": int((~train["known"]).sum()),
           "n_known_fit": int(fit[train["known"].to_numpy()].sum()),
           "n_unknown_fit": int(fit[~train["known"].to_numpy()].sum()),
           "dev_accuracy": float(dev_ok.mean()) if len(dev) else np.nan,
           "test_accuracy": float(test_ok.mean()) if len(test) else np.nan,
           # each test question's correctness, so that intervals can resample the questions
           # (kgfact.gap); plain strings, so the table stays flat
           "test_qids": json.dumps(test["qid"].tolist()),
           "test_correct": "".join("1" if ok else "0" for ok in test_ok),
           "memorised_rate": float(memorised(test_answers, train["answer"].tolist()).mean())
           if test_answers else np.nan,
           "seconds": seconds}
    for category in CATEGORIES:
        mine = (train["category"] == category).to_numpy()
        row[f"fit_{category}"] = float(fit[mine].mean()) if mine.any() else np.nan
    return row


def eval_questions(run: RunDir, relations: list[str], split: str, per_relation: int,
                   seed: int) -> pd.DataFrame:
    """A fixed seeded sample of ``split`` questions of ``relations``."""
    qa = run.read_table("qa")
    chosen = qa[(qa["split"] == split) & qa["relation"].isin(relations)]
    return sample_per_group(chosen, ["relation"], per_relation, seed).sort_values("qid")


# -- training ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Training:
    """One adapter to train: a set, a training seed and a learning rate."""

    set_name: str = field(metadata={"help": "The fine-tuning set."})
    seed: int = field(metadata={"help": "Training seed (batch order and adapter init)."})
    learning_rate: float = field(metadata={"help": "AdamW learning rate (constant)."})
    home: Path = field(metadata={"help": "Where its state and checkpoints are kept."})


def set_data(run: RunDir, set_name: str, config: FinetuneConfig
             ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The training examples of ``set_name`` and the dev and test questions checked after every
    epoch (the same for every seed, so seeds differ in training only)."""
    train = read_set(run, set_name)
    relations = sorted(train["relation"].unique())
    return (train, eval_questions(run, relations, "dev", config.eval_questions, 0),
            eval_questions(run, relations, "test", config.eval_questions, 0))


def train_group(trainings: list[Training], data: dict[str, tuple], config: FinetuneConfig,
                loaded: LoadedModel, journal: Path, *, progress: bool = True,
                on_step: Callable[[int, int], None] | None = None) -> int:
    """Train ``trainings`` together (:class:`GroupTrainer`) to CONVERGENCE, each resuming from
    its last committed epoch; ``data`` maps each set to :func:`set_data`'s tables. Returns the
    number of training examples it stepped through (each adapter's, every epoch).

    ``on_step(epoch, step)`` is called after every optimizer step (tests use it to interrupt a
    run mid-epoch); ``journal`` is the file :func:`_commit` uses.
    """
    _recover(journal, [t.home for t in trainings])
    trainings = [t for t in trainings if not _finished(t.home)]
    if not trainings:
        return 0
    examples = [[encode(loaded.tokenizer, q, a) for q, a in
                 zip(data[t.set_name][0]["question"], data[t.set_name][0]["answer"])]
                for t in trainings]
    trainer = GroupTrainer(loaded, config.lora, [t.seed for t in trainings],
                           [t.learning_rate for t in trainings], config.weight_decay)
    stepped = 0
    try:
        states, dynamics = [], []
        for k, t in enumerate(trainings):
            if (t.home / "state" / "trainer.json").exists():
                state, rows = _load_state(t.home / "state", trainer, k)
            else:
                state, rows = {"epoch": 0, "best_epoch": None, "done": False}, pd.DataFrame(
                    [_dynamics_row(trainer.engine(k), *data[t.set_name], 0, np.nan, 0.0)])
            states.append(state)
            dynamics.append(rows)
        label = (f"{trainings[0].set_name} seed {trainings[0].seed} "
                 f"lr {trainings[0].learning_rate:g}" if len(trainings) == 1
                 else f"{len(trainings)} adapters")
        bar = tqdm(total=sum(config.max_epochs * len(e) for e in examples),
                   initial=sum(s["epoch"] * len(e) for s, e in zip(states, examples)),
                   unit="ex", desc=f"LoRA {label}", disable=not progress, file=sys.stderr,
                   dynamic_ncols=True)
        with bar:
            while active := [k for k, s in enumerate(states) if not s["done"]]:
                epochs = {k: states[k]["epoch"] + 1 for k in active}

                def after_step(k: int, step: int, size: int, loss: float) -> None:
                    bar.update(size)
                    if on_step is not None:
                        on_step(epochs[k], step)
                started = time.time()
                losses = trainer.epoch({k: examples[k] for k in active}, epochs,
                                       config.batch_size, after_step)
                share = (time.time() - started) / len(active)  # of the joint pass
                stepped += sum(len(examples[k]) for k in active)
                for k in active:
                    t, epoch, started = trainings[k], epochs[k], time.time()
                    row = _dynamics_row(trainer.engine(k), *data[t.set_name], epoch, losses[k],
                                        0.0)
                    row["seconds"] = share + time.time() - started
                    dynamics[k] = pd.concat([dynamics[k], pd.DataFrame([row])],
                                            ignore_index=True)
                    trained = dynamics[k][dynamics[k]["epoch"] >= 1]
                    best = int(trained.loc[trained["dev_accuracy"].fillna(-1).idxmax(), "epoch"])
                    if best == epoch:
                        save_adapter(trainer, k, t.home / "early_stop")
                    fitted = row["train_fit"] >= config.convergence_fit
                    states[k] = {"epoch": epoch, "best_epoch": best, "fitted": bool(fitted),
                                 "done": fitted or epoch >= config.max_epochs}
                    if states[k]["done"]:
                        save_adapter(trainer, k, t.home / "convergence")
                    _save_state(t.home / "state.next", trainer, k, states[k], dynamics[k])
                _commit(journal, [trainings[k].home for k in active])
    finally:
        trainer.close()
    return stepped


def run_trainings(run: RunDir, trainings: list[Training], config: FinetuneConfig,
                  model: ModelConfig, backend: str = "kgfact", backend_options: dict | None = None,
                  *, progress: bool = True, on_step: Callable[[int, int], None] | None = None,
                  loaded: Callable[[], LoadedModel] | None = None) -> list[pd.DataFrame]:
    """Train ``trainings`` (finished ones are kept) and return each one's dynamics.

    Locally, in groups of ``config.group_size`` on the model ``loaded()`` gives; with
    ``backend="ray"``, each as a Ray task on its own worker (:func:`train_on_ray`).
    """
    if backend == "ray":
        train_on_ray(run, trainings, config, model, progress=progress, on_step=on_step,
                     **(backend_options or {}))
    else:
        todo = [t for t in trainings if not _finished(t.home)]
        data = {name: set_data(run, name, config) for name in {t.set_name for t in todo}}
        meter = Meter(STAGE, model)  # examples per second, the per-epoch checks included
        for start in range(0, len(todo), config.group_size):
            meter.add(train_group(todo[start:start + config.group_size], data, config,
                                  loaded(), run.path / ".finetune-commit.json",
                                  progress=progress, on_step=on_step))
        meter.record()
    return [read_dynamics(t.home, t.set_name, t.seed) for t in trainings]


def set_dynamics(run: RunDir, set_name: str, seed: int = 0) -> pd.DataFrame:
    """The saved dynamics of one set and seed, with its EARLY_STOP and CONVERGENCE epochs
    flagged; ``epoch_limit`` marks a CONVERGENCE that the epoch limit imposed before the set
    was fitted (so it is not convergence in Gekhman's sense)."""
    return read_dynamics(seed_home(run, set_name, seed), set_name, seed)


def read_dynamics(home: Path, set_name: str, seed: int) -> pd.DataFrame:
    """The dynamics saved under ``home`` (see :func:`set_dynamics`)."""
    state = home / "state"
    trainer = json.loads((state / "trainer.json").read_text())
    dynamics = pd.read_parquet(state / "dynamics.parquet")
    convergence = dynamics["epoch"] == trainer["epoch"]
    return dynamics.assign(set=set_name, seed=int(seed),
                           early_stop=dynamics["epoch"] == trainer["best_epoch"],
                           convergence=convergence,
                           epoch_limit=convergence & (trainer["done"]
                                                      and not trainer.get("fitted", True)))


# -- on Ray --------------------------------------------------------------------------------------
def _pack(home: Path) -> dict[str, bytes]:
    """Every committed file under ``home`` (state and checkpoints), by relative path."""
    return {str(p.relative_to(home)): p.read_bytes() for p in sorted(home.rglob("*"))
            if p.is_file() and p.relative_to(home).parts[0] in ("state", *CHECKPOINTS)}


def _unpack(files: dict[str, bytes], home: Path) -> None:
    """Replace ``home``'s state and checkpoints with ``files`` (:func:`_pack`), all at once."""
    tmp = home.with_name(f".{home.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for rel, data in files.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_bytes(data)
    shutil.rmtree(home, ignore_errors=True)
    tmp.rename(home)


def _ray_training(training: Training, data: tuple, files: dict[str, bytes],
                  config: FinetuneConfig, model: ModelConfig, threads: int,
                  on_step: Callable[[int, int], None] | None) -> dict[str, bytes]:
    """A Ray task: one training on this worker, from the state ``files`` hold (a resumed
    training) or from scratch; returns its state and checkpoints (:func:`_pack`)."""
    import tempfile

    import torch

    torch.set_num_threads(threads)
    loaded = load_model(model)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        _unpack(files, home)
        train_group([replace(training, home=home)], {training.set_name: data}, config, loaded,
                    Path(tmp) / "commit.json", progress=False, on_step=on_step)
        return _pack(home)


def train_on_ray(run: RunDir, trainings: list[Training], config: FinetuneConfig,
                 model: ModelConfig, *, address: str | None = None, workers: int | None = None,
                 progress: bool = True, on_step: Callable[[int, int], None] | None = None,
                 max_retries: int = 2) -> None:
    """Train each unfinished training of ``trainings`` as a Ray task on its own worker (one GPU
    each where the cluster has GPUs, else an equal share of the CPUs; placed as the Ray
    sampling backend places its workers, :mod:`kgfact.sampling.ray`).

    The driver sends each task its set's tables and any saved state, and writes what the task
    returns into the training's home, so workers need no shared filesystem and a finished
    training is never run again. A worker that dies costs only its own training, which Ray runs
    again (``max_retries`` times) from the state the driver holds.
    """
    from kgfact.sampling.ray import _get, _placement, session

    todo = [t for t in trainings if not _finished(t.home)]
    if not todo:
        return
    with session(address) as ray:
        n, options, threads = _placement(ray, model, workers)
        if options.get("num_gpus"):  # Ray gives each task one GPU as its only visible device
            model = replace(model, device="cuda")
        task = ray.remote(_ray_training).options(max_retries=max_retries,
                                                 retry_exceptions=False, **options)
        data = {name: set_data(run, name, config) for name in {t.set_name for t in todo}}
        shared = {name: ray.put(tables) for name, tables in data.items()}
        pending, running = list(todo), {}
        bar = tqdm(total=len(todo), unit="adapter", desc=f"LoRA on Ray ({n} workers)",
                   disable=not progress, file=sys.stderr, dynamic_ncols=True)
        with bar:
            while pending or running:
                while pending and len(running) < n:
                    t = pending.pop(0)
                    files = _pack(t.home) if t.home.exists() else {}
                    running[task.remote(t, shared[t.set_name], files, config, model, threads,
                                        on_step)] = t
                [ref], _ = ray.wait(list(running), num_returns=1)
                t = running.pop(ref)
                try:
                    files = _get(ray, ref)
                except ray.exceptions.RayTaskError:
                    raise
                except ray.exceptions.RayError as exc:
                    raise KgfactError(
                        f"the Ray worker training {t.set_name} (seed {t.seed}, lr "
                        f"{t.learning_rate:g}) died {max_retries + 1} times "
                        f"({type(exc).__name__}); see the Ray logs (out of memory?)") from None
                _unpack(files, t.home)
                bar.update(1)


def learning_rate_grid(run: RunDir, config: FinetuneConfig, model: ModelConfig,
                       backend: str = "kgfact", backend_options: dict | None = None, *,
                       progress: bool = True,
                       loaded: Callable[[], LoadedModel] | None = None) -> pd.DataFrame:
    """Try every rate of ``config.learning_rate_grid`` on ``config.grid_set`` under the first
    seed and return the ``lr_grid`` table, one row per rate: its EARLY_STOP epoch, dev and test
    accuracy and memorised-answer rate there, the fit and memorised-answer rate at its last
    epoch, and ``chosen`` (the best EARLY_STOP dev accuracy; ties to the smaller rate, which
    moves the model less). Trials keep their state under ``lr_grid/`` and resume like sets.
    """
    rows = []
    seed = config.seeds[0]
    rates = sorted(config.learning_rate_grid)
    trials = [Training(config.grid_set, seed, rate, run.path / "lr_grid" / f"lr-{rate:g}")
              for rate in rates]
    for rate, d in zip(rates, run_trainings(run, trials, config, model, backend,
                                            backend_options, progress=progress,
                                            loaded=loaded)):
        best, last = d[d["early_stop"]].iloc[0], d.iloc[-1]
        rows.append({"learning_rate": rate, "set": config.grid_set, "seed": seed,
                     "early_stop_epoch": int(best["epoch"]),
                     "dev_accuracy": best["dev_accuracy"], "test_accuracy": best["test_accuracy"],
                     "memorised_rate": best["memorised_rate"], "epochs": int(last["epoch"]),
                     "last_train_fit": last["train_fit"],
                     "last_memorised_rate": last["memorised_rate"]})
    table = pd.DataFrame(rows)
    best = table.sort_values(["dev_accuracy", "learning_rate"], ascending=[False, True]).index[0]
    return table.assign(chosen=table.index == best)


def finetune(run: RunDir | str, config: FinetuneConfig | None = None,
             model: ModelConfig | None = None, *, backend: str = "kgfact",
             backend_options: dict | None = None, progress: bool = True,
             on_step: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """Train an adapter per fine-tuning set and training seed of ``run`` and write the
    ``dynamics`` table (one row per set, seed and epoch).

    The sets come from the ``ftsets`` stage (``kgfact ftsets``). Sets already trained to
    CONVERGENCE are not trained again. ``backend="ray"`` trains each adapter as a Ray task
    (``backend_options``: ``address``, ``workers``); any other backend name trains here.
    """
    run = RunDir.of(run)
    config = config or FinetuneConfig()
    model = model or ModelConfig()
    for name in config.sets:  # a missing set is an error now, not after loading the model
        read_set(run, name)
    spec = config_json(finetune=config, model=model)
    previous = run.stage_config(STAGE)
    if previous is not None and previous != spec and (run.path / "adapters").exists():
        _check_compatible(previous, spec)
    if config.learning_rate_grid:
        read_set(run, config.grid_set)
    backend = "ray" if backend == "ray" else "kgfact"  # vllm and kgfact both train here
    with run.stage(STAGE, spec, seed=list(config.seeds)) as info:
        info["execution"] = {"backend": backend, "options": backend_options or {}}
        loaded = cache(lambda: load_model(model))  # only a local training loads it
        if config.learning_rate_grid:
            grid = learning_rate_grid(run, config, model, backend, backend_options,
                                      progress=progress, loaded=loaded)
            run.write_table("lr_grid", grid)
            config = replace(config, learning_rate=float(
                grid.loc[grid["chosen"], "learning_rate"].iloc[0]))
            # the chosen trial is the grid set's training under the first seed: reuse it
            trial = run.path / "lr_grid" / f"lr-{config.learning_rate:g}"
            target = seed_home(run, config.grid_set, config.seeds[0])
            if config.grid_set in config.sets and not target.exists():
                shutil.copytree(trial, target)
        # seed-major order: with groups of one, a crash loses one training at most
        trainings = [Training(name, seed, config.learning_rate, seed_home(run, name, seed))
                     for seed in config.seeds for name in config.sets]
        dynamics = pd.concat(run_trainings(run, trainings, config, model, backend,
                                           backend_options, progress=progress,
                                           on_step=on_step, loaded=loaded), ignore_index=True)
        # the table holds every set trained in this run, not only this call's
        run.write_table("dynamics", pd.concat([set_dynamics(run, name, seed)
                                               for name, seed in trained_sets(run)],
                                              ignore_index=True))
        info["report"] = {"learning_rate": config.learning_rate} | {
            f"{name}/seed-{seed}": {
                "epochs": int(d["epoch"].max()),
                "early_stop_epoch": int(d.loc[d["early_stop"], "epoch"].iloc[0]),
                "train_fit": float(d["train_fit"].iloc[-1])}
            for (name, seed), d in dynamics.groupby(["set", "seed"])}
    return dynamics


def run_stage(run: RunDir | str, config: FinetuneConfig, *, model: ModelConfig | None = None,
              backend: Any = None, progress: bool = True) -> pd.DataFrame:
    """The fine-tuning stage (:mod:`kgfact.stages`): :func:`finetune` with a ``BackendConfig``
    (trained sets and seeds are kept: delete ``adapters/`` to retrain)."""
    if backend is None:
        return finetune(run, config, model, progress=progress)
    return finetune(run, config, model, backend=backend.name, backend_options=backend.options(),
                    progress=progress)


def _check_compatible(previous: dict, spec: dict) -> None:
    """Refuse to resume adapters trained under another configuration (the sets may differ)."""
    # more sets or seeds add adapters, and grouping changes only rounding; anything else would
    # change the ones there are
    free = ("sets", "seeds", "seed", "group_size")
    a = {k: v for k, v in previous["finetune"].items() if k not in free}
    b = {k: v for k, v in spec["finetune"].items() if k not in free}
    if a != b or previous["model"] != spec["model"]:
        raise KgfactError("the run has adapters trained with another fine-tuning configuration "
                          "or model; delete its adapters/ folder (or use another run) to retrain")
