"""Several LoRA adapters on one frozen model, trained in one pass: the rows of a batch are
grouped by adapter, and every adapted linear layer adds each group's own low-rank update.

A grid of trainings (sets x seeds x learning rates) shares its frozen base; run one after
another, each pays for its own passes through the base, each with a batch too small to keep
the matrix units busy. :class:`LoraGroup` puts ``K`` adapters into the model at once, so one
forward and one backward over ``K`` trainings' batches serve them all. The adapters' parameters
are disjoint and rows never see each other, so the gradient of the summed per-training losses
is, for each adapter, the gradient its own loss would give alone: every adapter follows the
path a plain peft training with the same data order and seed would (to float rounding, which
depends on batch shapes).

Adapters start from peft's own initialisation (the caller passes peft state dicts) and are
saved in peft's format (``adapter_config.json`` and ``adapter_model.safetensors``), so
:func:`kgfact.models.apply_adapter` and peft load them as any other adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

_PREFIX = "base_model.model."  # peft's key prefix; the rest is the layer's path and its weight


class _Routing:
    """Which adapter each row of the next forward gets: ``rows`` is ``[(adapter, n_rows), ...]``
    for a batch grouped by adapter, or None with ``only`` naming the adapter of every row."""

    rows: list[tuple[int, int]] | None = None
    only: int = 0


class _GroupedLinear(nn.Module):
    """A frozen linear layer plus one LoRA update per adapter, chosen per row group."""

    def __init__(self, base: nn.Module, routing: _Routing, scaling: float, dropout: float
                 ) -> None:
        super().__init__()
        self.base, self.routing = base, routing
        self.scaling, self.dropout = scaling, dropout
        self.lora_A, self.lora_B = nn.ParameterList(), nn.ParameterList()

    def _update(self, x: torch.Tensor, k: int) -> torch.Tensor:
        # as peft: input cast to the adapter's dtype (fp32 under a bf16 base), dropout, A, B
        x = nn.functional.dropout(x.to(self.lora_A[k].dtype), self.dropout, self.training)
        return nn.functional.linear(nn.functional.linear(x, self.lora_A[k]), self.lora_B[k])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        rows = self.routing.rows or [(self.routing.only, x.shape[0])]
        parts, start = [], 0
        for k, n in rows:
            parts.append(out[start:start + n] + self._update(x[start:start + n], k) * self.scaling)
            start += n
        return (parts[0] if len(parts) == 1 else torch.cat(parts)).to(out.dtype)


class LoraGroup:
    """``K`` LoRA adapters put into ``model`` at once (see the module docstring).

    Parameters
    ----------
    model : torch.nn.Module
        The frozen causal LM; its adapted linear layers are replaced until :meth:`remove`.
    states : sequence of dict
        Each adapter's initial weights, as peft's ``get_peft_model_state_dict`` gives them.
    peft_config : peft.LoraConfig
        The adapters' config, as peft filled it in (saved beside every adapter).
    """

    def __init__(self, model: nn.Module, states: Sequence[dict[str, torch.Tensor]],
                 peft_config: Any) -> None:
        self.model, self.peft_config, self.routing = model, peft_config, _Routing()
        self.keys = list(states[0])  # peft's order: the optimizer state is indexed by it
        scaling = peft_config.lora_alpha / peft_config.r
        self.layers: dict[str, _GroupedLinear] = {}
        for key in self.keys:
            path = key.removeprefix(_PREFIX).rsplit(".", 2)[0]
            if path not in self.layers:
                parent, _, name = path.rpartition(".")
                owner = model.get_submodule(parent)
                layer = _GroupedLinear(getattr(owner, name), self.routing, scaling,
                                       peft_config.lora_dropout)
                setattr(owner, name, layer)
                self.layers[path] = layer
        device = next(model.parameters()).device
        for state in states:
            for key in self.keys:
                path, which, _ = key.removeprefix(_PREFIX).rsplit(".", 2)
                getattr(self.layers[path], which).append(
                    nn.Parameter(state[key].detach().clone().to(device)))

    def __len__(self) -> int:
        return len(self.layers[next(iter(self.layers))].lora_A)

    def parameters(self, k: int) -> list[nn.Parameter]:
        """Adapter ``k``'s parameters, in peft's order."""
        out = []
        for key in self.keys:
            path, which, _ = key.removeprefix(_PREFIX).rsplit(".", 2)
            out.append(getattr(self.layers[path], which)[k])
        return out

    def state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Adapter ``k``'s weights under peft's keys."""
        return {key: p.detach() for key, p in zip(self.keys, self.parameters(k))}

    def load_state_dict(self, k: int, state: dict[str, torch.Tensor]) -> None:
        """Set adapter ``k``'s weights from peft keys (a saved adapter)."""
        with torch.no_grad():
            for key, p in zip(self.keys, self.parameters(k)):
                p.copy_(state[key])

    def save(self, k: int, path: Path) -> None:
        """Save adapter ``k`` as a peft adapter in directory ``path``."""
        from safetensors.torch import save_file

        path.mkdir(parents=True, exist_ok=True)
        save_file({key: v.contiguous() for key, v in self.state_dict(k).items()},
                  str(path / "adapter_model.safetensors"), metadata={"format": "pt"})
        self.peft_config.save_pretrained(str(path))

    def route(self, rows: list[tuple[int, int]] | None = None, only: int = 0) -> None:
        """Route the next forwards: rows grouped as ``[(adapter, n_rows), ...]``, or every row
        through adapter ``only``."""
        self.routing.rows, self.routing.only = rows, only

    def remove(self) -> None:
        """Put the frozen layers back (the base weights were never changed)."""
        for path, layer in self.layers.items():
            parent, _, name = path.rpartition(".")
            setattr(self.model.get_submodule(parent), name, layer.base)
        self.layers.clear()
