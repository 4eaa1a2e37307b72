"""Per-target Platt scaling of the ensemble's probabilities, fitted on validation rows.

Routing compares P(correct) *across* targets (argmax, or "within τ of the best"), so each
head's probabilities must mean the same thing. Heads trained jointly with early stopping on
the pooled loss can be over- or under-confident in different ways; a scale and a bias per
target on the logit, fitted on the validation rows the trunk never trained on, fixes that
without changing any head's ranking of queries (its AUC).
"""

from __future__ import annotations

import numpy as np
import torch

EPS = 1e-6


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def fit_platt(p: np.ndarray, y: np.ndarray, l2: float = 1e-2, steps: int = 200) -> dict[str, list[float]]:
    """Scale and bias per target minimising masked BCE of sigmoid(scale·logit(p) + bias)
    against ``y`` (0/1 or expected accuracies; NaN = missing), with a small L2 pull toward
    the identity (scale 1, bias 0) so that a target with few validation labels stays put."""
    z = torch.from_numpy(logit(p).astype(np.float64))
    target = torch.from_numpy(np.nan_to_num(y).astype(np.float64))
    mask = torch.from_numpy((~np.isnan(y)).astype(np.float64))
    scale = torch.ones(p.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(p.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([scale, bias], max_iter=steps, line_search_fn="strong_wolfe")
    count = mask.sum(0).clamp(min=1)

    def closure():
        optimizer.zero_grad()
        bce = torch.nn.functional.binary_cross_entropy_with_logits(scale * z + bias, target, weight=mask, reduction="none")
        loss = (bce.sum(0) / count).sum() + l2 * (((scale - 1) ** 2).sum() + (bias**2).sum())
        loss.backward()
        return loss

    optimizer.step(closure)
    return {"scale": scale.detach().numpy().tolist(), "bias": bias.detach().numpy().tolist()}


def apply_platt(p: np.ndarray, calibration: dict[str, list[float]] | None) -> np.ndarray:
    if not calibration:
        return p
    z = np.asarray(calibration["scale"]) * logit(p) + np.asarray(calibration["bias"])
    return 1.0 / (1.0 + np.exp(-z))
