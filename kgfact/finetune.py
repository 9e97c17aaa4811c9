"""LoRA fine-tuning on a fine-tuning set, with per-epoch dynamics, EARLY_STOP and CONVERGENCE.

Each example is the closed-book prompt ``Q: {question}\\nA:`` followed by `` {answer}\\n``, the
same text the sampling engine prompts with at zero-shot, so a fine-tuned model is evaluated on
exactly the format it learned. The loss is the mean cross-entropy over answer tokens only
(the trailing newline included, so the model learns where to stop).

Why it is fast (``benchmarks/lora_throughput.py`` compares it with ``transformers.Trainer``):

- **Answer-only logits.** Examples are left-padded, so every answer ends at the last position;
  the output layer (a 262k-token vocabulary for Gemma 3, most of the model's FLOPs at these
  lengths) runs only on the last ``max answer length + 1`` positions.

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
state and the dynamics are saved together (safetensors + JSON, no pickle), and a run killed at
any point resumes from the last finished epoch and ends with bit-identical adapters.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from kgfact.answers import match_many, normalize
from kgfact.config import check_fields, check_name
from kgfact.errors import KgfactError
from kgfact.ftsets import read_set
from kgfact.models import LoadedModel, ModelConfig, load_model, quiet_peft
from kgfact.prompts import QUERY, TARGET
from kgfact.qa import sample_per_group
from kgfact.rundir import RunDir, atomic_write_text, config_json, write_parquet
from kgfact.sampling import KgfactEngine, Request, SamplingConfig
from kgfact.slick import CATEGORIES

STAGE = "finetune"
CHECKPOINTS = ("early_stop", "convergence")


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


def answer_loss(model: Any, batch) -> Any:
    """Mean cross-entropy over the answer tokens of a collated batch."""
    import torch

    ids, mask, positions, targets, target_mask, keep = batch
    width = ids.shape[1]
    # positions by index rather than logits_to_keep=keep: see KgfactEngine._forward
    last = torch.arange(width - keep, width, device=ids.device)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                   logits_to_keep=last, use_cache=False).logits[:, :-1].float()
    return torch.nn.functional.cross_entropy(logits[target_mask], targets[target_mask])


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


def train_epoch(model: Any, optimizer: Any, examples: list[Example], batch_size: int, seed: int,
                epoch: int, pad_id: int, device: Any,
                after_step: Callable[[int, int, float], None] | None = None) -> None:
    """One epoch of answer-only training over seeded random batches.

    ``after_step(step, batch_size, loss)`` is called after every optimizer step.
    """
    model.train()
    for step, batch in enumerate(batches(examples, batch_size, seed, epoch)):
        loss = answer_loss(model, collate([examples[i] for i in batch], pad_id, device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if after_step is not None:
            after_step(step, len(batch), loss.item())


# -- adapters and resumable state --------------------------------------------------------------
def save_adapter(model: Any, path: Path) -> None:
    """Save the adapter of a peft ``model`` to ``path`` atomically (safetensors)."""
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


def _save_state(path: Path, model: Any, optimizer: Any, trainer: dict, dynamics: pd.DataFrame
                ) -> None:
    """Adapter, optimizer state and dynamics after an epoch, all replaced at once."""
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp / "adapter", safe_serialization=True)
    state = optimizer.state_dict()
    save_file({f"{i}.{k}": v.contiguous() for i, s in state["state"].items()
               for k, v in s.items()}, str(tmp / "optimizer.safetensors"))
    write_parquet(dynamics, tmp / "dynamics.parquet")
    atomic_write_text(tmp / "trainer.json", json.dumps(
        {**trainer, "param_groups": state["param_groups"]}, indent=2))
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


def _load_state(path: Path, model: Any, optimizer: Any) -> tuple[dict, pd.DataFrame]:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(str(path / "adapter" /
                                                   "adapter_model.safetensors")))
    trainer = json.loads((path / "trainer.json").read_text())
    flat = load_file(str(path / "optimizer.safetensors"))
    state: dict[int, dict[str, Any]] = {}
    for key, value in flat.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": trainer.pop("param_groups")})
    return trainer, pd.read_parquet(path / "dynamics.parquet")


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


def memorised(answers: list[str | None], trained: list[str]) -> np.ndarray:
    """Whether each answer is one of the model's own fine-tuning answers ``trained`` (after
    answer normalisation): a model that collapsed onto its training set answers new questions
    with old answers. Its mean is the *memorised-answer rate*.

    >>> memorised(["Paris", "the Lima", "Quito", ""], ["Lima", "Paris"]).tolist()
    [True, True, False, False]
    """
    known = {normalize(a) for a in trained}
    return np.array([isinstance(a, str) and normalize(a) in known for a in answers], dtype=bool)


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
def seed_home(run: RunDir, set_name: str, seed: int) -> Path:
    """Where everything trained on ``set_name`` under training ``seed`` lives."""
    check_name(set_name, "fine-tuning set")
    return run.path / "adapters" / set_name / f"seed-{int(seed)}"


def adapter_dir(run: RunDir, set_name: str, checkpoint: str, seed: int = 0) -> Path:
    """Where the adapter of ``set_name`` at ``checkpoint`` (early_stop / convergence) trained
    under ``seed`` lives."""
    return seed_home(run, set_name, seed) / checkpoint


def train_set(run: RunDir, set_name: str, config: FinetuneConfig, loaded: LoadedModel,
              seed: int = 0, *, progress: bool = True,
              on_step: Callable[[int, int], None] | None = None,
              home: Path | None = None) -> pd.DataFrame:
    """Train one adapter on fine-tuning set ``set_name`` under training ``seed`` with
    ``config.learning_rate``; returns its dynamics (one row an epoch).

    ``on_step(epoch, step)`` is called after every optimizer step (tests use it to interrupt a
    run mid-epoch). Resumes from the last finished epoch when a saved state exists. ``home``
    (default :func:`seed_home`) is where the state and checkpoints are kept.
    """
    import torch

    train = read_set(run, set_name)
    relations = sorted(train["relation"].unique())
    # the same dev and test questions for every seed, so seeds differ in training only
    dev = eval_questions(run, relations, "dev", config.eval_questions, 0)
    test = eval_questions(run, relations, "test", config.eval_questions, 0)
    tok = loaded.tokenizer
    examples = [encode(tok, q, a) for q, a in zip(train["question"], train["answer"])]

    model = with_lora(loaded.model, config.lora, seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    engine = KgfactEngine(LoadedModel(model, tok, loaded.device, loaded.dtype, loaded.name,
                                      loaded.path))
    home = home or seed_home(run, set_name, seed)
    state_dir = home / "state"
    if (state_dir / "trainer.json").exists():
        trainer, dynamics = _load_state(state_dir, model, optimizer)
    else:
        model.eval()
        dynamics = pd.DataFrame([_dynamics_row(engine, train, dev, test, 0, np.nan, 0.0)])
        trainer = {"epoch": 0, "best_epoch": None, "done": False}
    bar = tqdm(total=config.max_epochs * len(examples), initial=trainer["epoch"] * len(examples),
               unit="ex",
               desc=f"LoRA {set_name} seed {seed} lr {config.learning_rate:g}", disable=not progress, file=sys.stderr,
               dynamic_ncols=True)
    with bar:
        while not trainer["done"]:
            epoch = trainer["epoch"] + 1
            started, losses = time.time(), []

            def after_step(step: int, size: int, loss: float) -> None:
                losses.append(loss)
                bar.update(size)
                bar.set_postfix(loss=f"{np.mean(losses):.3f}")
                if on_step is not None:
                    on_step(epoch, step)
            train_epoch(model, optimizer, examples, config.batch_size, seed, epoch,
                        tok.pad_token_id, loaded.device, after_step)
            model.eval()
            row = _dynamics_row(engine, train, dev, test, epoch, float(np.mean(losses)),
                                time.time() - started)
            dynamics = pd.concat([dynamics, pd.DataFrame([row])], ignore_index=True)
            trained = dynamics[dynamics["epoch"] >= 1]
            best = int(trained.loc[trained["dev_accuracy"].fillna(-1).idxmax(), "epoch"])
            if best == epoch:
                save_adapter(model, home / "early_stop")
            fitted = row["train_fit"] >= config.convergence_fit
            trainer = {"epoch": epoch, "best_epoch": best, "fitted": bool(fitted),
                       "done": fitted or epoch >= config.max_epochs}
            if trainer["done"]:
                save_adapter(model, home / "convergence")
            _save_state(state_dir, model, optimizer, trainer, dynamics)
    model.unload()  # the base weights are untouched: LoRA never merged into them
    return read_dynamics(home, set_name, seed)


def trained_sets(run: RunDir) -> list[tuple[str, int]]:
    """(set, seed) pairs of ``run`` whose training finished (both checkpoints saved)."""
    home = run.path / "adapters"
    found = home.glob("*/seed-*/convergence") if home.is_dir() else []
    return sorted((p.parent.parent.name, int(p.parent.name.removeprefix("seed-")))
                  for p in found)


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


def learning_rate_grid(run: RunDir, config: FinetuneConfig, loaded: LoadedModel, *,
                       progress: bool = True) -> pd.DataFrame:
    """Try every rate of ``config.learning_rate_grid`` on ``config.grid_set`` under the first
    seed and return the ``lr_grid`` table, one row per rate: its EARLY_STOP epoch, dev and test
    accuracy and memorised-answer rate there, the fit and memorised-answer rate at its last
    epoch, and ``chosen`` (the best EARLY_STOP dev accuracy; ties to the smaller rate, which
    moves the model less). Trials keep their state under ``lr_grid/`` and resume like sets.
    """
    rows = []
    seed = config.seeds[0]
    for rate in sorted(config.learning_rate_grid):
        home = run.path / "lr_grid" / f"lr-{rate:g}"
        d = train_set(run, config.grid_set, replace(config, learning_rate=rate), loaded, seed,
                      progress=progress, home=home)
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
             model: ModelConfig | None = None, *, progress: bool = True,
             on_step: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """Train an adapter per fine-tuning set and training seed of ``run`` and write the
    ``dynamics`` table (one row per set, seed and epoch).

    The sets come from the ``ftsets`` stage (``kgfact ftsets``). Sets already trained to
    CONVERGENCE are not trained again.
    """
    run = RunDir.of(run)
    config = config or FinetuneConfig()
    model = model or ModelConfig()
    for name in config.sets:  # a missing set is an error now, not after loading the model
        read_set(run, name)
    spec = config_json(finetune=config, model=model)
    previous = run.manifest().get("stages", {}).get(STAGE, {}).get("config")
    if previous is not None and previous != spec and (run.path / "adapters").exists():
        _check_compatible(previous, spec)
    parts = []
    if config.learning_rate_grid:
        read_set(run, config.grid_set)
    with run.stage(STAGE, spec, seed=list(config.seeds)) as info:
        loaded = load_model(model)
        if config.learning_rate_grid:
            grid = learning_rate_grid(run, config, loaded, progress=progress)
            run.write_table("lr_grid", grid)
            config = replace(config, learning_rate=float(
                grid.loc[grid["chosen"], "learning_rate"].iloc[0]))
            # the chosen trial is the grid set's training under the first seed: reuse it
            trial = run.path / "lr_grid" / f"lr-{config.learning_rate:g}"
            target = seed_home(run, config.grid_set, config.seeds[0])
            if config.grid_set in config.sets and not target.exists():
                shutil.copytree(trial, target)
        for seed in config.seeds:  # every set once per seed: a crash loses one training at most
            for name in config.sets:
                parts.append(train_set(run, name, config, loaded, seed, progress=progress,
                                       on_step=on_step))
        dynamics = pd.concat(parts, ignore_index=True)
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
              progress: bool = True, force: bool = False) -> pd.DataFrame:
    """The fine-tuning stage (:mod:`kgfact.stages`): :func:`finetune` (trained sets and seeds
    are kept: delete ``adapters/`` to retrain)."""
    return finetune(run, config, model, progress=progress)


def _check_compatible(previous: dict, spec: dict) -> None:
    """Refuse to resume adapters trained under another configuration (the sets may differ)."""
    # more sets or seeds add adapters; anything else would change the ones there are
    a = {k: v for k, v in previous["finetune"].items() if k not in ("sets", "seeds", "seed")}
    b = {k: v for k, v in spec["finetune"].items() if k not in ("sets", "seeds", "seed")}
    if a != b or previous["model"] != spec["model"]:
        raise KgfactError("the run has adapters trained with another fine-tuning configuration "
                          "or model; delete its adapters/ folder (or use another run) to retrain")
