"""Adapter fitting: INR features in, a frozen backbone's features at the injection layer as targets."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .config import AdapterTrainConfig

__all__ = ["AdapterFitResult", "feature_loss", "task_loss", "fit_adapter", "least_squares_init"]


def feature_loss(pred: Tensor, target: Tensor) -> Tensor:
    """1.0 MSE + 0.2 (1 - cosine) + 0.1 SmoothL1, cosine over each sample's flattened features."""
    cos = F.cosine_similarity(pred.flatten(1), target.flatten(1), dim=1).mean()
    return F.mse_loss(pred, target) + 0.2 * (1 - cos) + 0.1 * F.smooth_l1_loss(pred, target)


@dataclass
class AdapterFitResult:
    epochs: int
    loss: float
    rel_mse: float  # ||pred - target||^2 / ||target - mean||^2 over all samples: 0 = perfect, 1 = predicts the mean
    history: list[float] = field(default_factory=list)


@torch.no_grad()
def least_squares_init(adapter: nn.Module, inputs: Tensor, targets: Tensor) -> None:
    """Closed-form least-squares weights for the linear 1x1 path of an adapter (2-D or 3-D), the rest held fixed:
    for a plain 1x1 adapter the best any such adapter can fit; for ``conv3x3``/``bottleneck`` (which start as a
    1x1) the same fit, as their starting point."""
    x = adapter.ls_input(inputs)  # raises for adapters without a linear 1x1 path
    conv = adapter.conv
    cin = x.shape[1]
    a = x.movedim(1, -1).reshape(-1, cin).double()
    b = targets.movedim(1, -1).reshape(-1, targets.shape[1]).double()
    a1 = torch.cat([a, torch.ones(a.shape[0], 1, dtype=a.dtype)], dim=1)
    sol = torch.linalg.lstsq(a1, b, driver="gelsd").solution  # (cin + 1, cout)
    conv.weight.copy_(sol[:-1].T.reshape_as(conv.weight).float())
    conv.bias.copy_(sol[-1].float())


def task_loss(logits: Tensor, teacher: Tensor) -> Tensor:
    """KL(teacher || student) of the class distributions: the backbone's raw-frame answer as the target."""
    return F.kl_div(F.log_softmax(logits, 1), F.log_softmax(teacher, 1), log_target=True, reduction="batchmean")


def fit_adapter(adapter: nn.Module, inputs: Tensor, targets: Tensor, cfg: AdapterTrainConfig = AdapterTrainConfig(),
                *, tail: torch.nn.Module | None = None, teacher: Tensor | None = None,
                progress: bool = True) -> AdapterFitResult:
    """Train ``adapter`` so that ``adapter(inputs) ~ targets`` (both precomputed: INR and backbone are frozen).

    With ``cfg.task_loss > 0``, ``tail`` (frozen) and ``teacher`` (raw-frame logits, one row per sample), the
    loss adds ``task_loss x KL(teacher || tail(adapter(inputs)))``: the adapter is trained for the answer, not only
    for the features.
    """
    if inputs.shape[0] != targets.shape[0]:
        raise ValueError(f"{inputs.shape[0]} inputs but {targets.shape[0]} targets")
    use_task = cfg.task_loss > 0
    if use_task and (tail is None or teacher is None or teacher.shape[0] != inputs.shape[0]):
        raise ValueError("task_loss needs the frozen tail and one row of teacher logits per input")
    if use_task:
        for p in tail.parameters():
            p.requires_grad_(False)
    torch.manual_seed(cfg.seed)
    inputs, targets = inputs.detach().float(), targets.detach().float()
    if cfg.init == "ls":
        least_squares_init(adapter, inputs, targets)
    opt = torch.optim.Adam(adapter.parameters(), lr=cfg.lr)
    n = inputs.shape[0]
    best, stale, history = float("inf"), 0, []
    bar = tqdm(range(cfg.epochs), desc=f"adapter {adapter.kind}", unit="epoch", file=sys.stderr,
               disable=not progress, mininterval=0.5)
    adapter.train()
    for epoch in bar:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
        total = 0.0
        for i in range(0, n, cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            pred = adapter(inputs[idx])
            loss = feature_loss(pred, targets[idx])
            if use_task:
                out = tail(pred)
                loss = loss + cfg.task_loss * task_loss(out if isinstance(out, Tensor) else out[0], teacher[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        history.append(total / n)
        bar.set_postfix(loss=f"{history[-1]:.4f}")
        if history[-1] < best * 0.99:
            best, stale = history[-1], 0
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    adapter.eval()
    with torch.no_grad():
        pred = torch.cat([adapter(inputs[i:i + 16]) for i in range(0, n, 16)])
        rel = float(((pred - targets) ** 2).sum() / ((targets - targets.mean(0)) ** 2).sum().clamp_min(1e-12))
    return AdapterFitResult(epochs=len(history), loss=history[-1], rel_mse=rel, history=history)
