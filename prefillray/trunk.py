"""SharedTrunkNet: one MLP over the concatenated feature blocks, one logit per target model.

Sharing the trunk lets every target's labels shape one representation of the query (which
queries are hard, which are code, which are commonsense); the heads only read it differently.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class TrunkConfig:
    input_dim: int
    num_targets: int
    hidden: tuple[int, ...] = (256, 128)
    dropout: float = 0.1

    def as_dict(self) -> dict:
        out = asdict(self)
        out["hidden"] = list(self.hidden)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "TrunkConfig":
        return cls(int(d["input_dim"]), int(d["num_targets"]), tuple(int(h) for h in d["hidden"]), float(d["dropout"]))


class SharedTrunkNet(nn.Module):
    def __init__(self, config: TrunkConfig):
        super().__init__()
        layers: list[nn.Module] = []
        width = config.input_dim
        for hidden in config.hidden:
            layers += [nn.Linear(width, hidden), nn.GELU(), nn.Dropout(config.dropout)]
            width = hidden
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Linear(width, config.num_targets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [batch, targets]; sigmoid gives P(correct) per target."""
        return self.head(self.trunk(x))


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, batches) -> None:
    """One pass over ``batches`` of {x, y, mask}: the step shared by Ray Train and Tune trials."""
    model.train()
    for batch in batches:
        loss, count = masked_bce(model(batch["x"]), batch["y"], batch["mask"])
        optimizer.zero_grad()
        (loss / count.clamp(min=1)).backward()
        optimizer.step()


def predict_batches(model: nn.Module, batches) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed masked BCE and label count over ``batches``, plus logits and labels (for AUCs)."""
    model.eval()
    total, count, logits, labels = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64), [], []
    with torch.no_grad():
        for batch in batches:
            out = model(batch["x"])
            loss, n = masked_bce(out, batch["y"], batch["mask"])
            total, count = total + loss.double().cpu(), count + n.double().cpu()
            logits.append(out.cpu())
            labels.append(torch.where(batch["mask"] > 0, batch["y"], torch.nan).cpu())
    return total, count, torch.cat(logits), torch.cat(labels)


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of per-label BCE over labelled cells, and how many there were (missing labels
    contribute nothing: they are unknown, not wrong)."""
    loss = nn.functional.binary_cross_entropy_with_logits(logits, torch.nan_to_num(targets), weight=mask, reduction="sum")
    return loss, mask.sum()
