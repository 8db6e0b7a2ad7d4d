"""Per-epoch measurements that do not depend on the training loop itself."""
from __future__ import annotations

import resource

import torch
from torch import nn

from ..params import WEIGHT_LAYERS


def weight_matrices(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Every Linear/Conv weight as a 2-D matrix (conv kernels as out x in*k*k), in module order."""
    return [(name, m.weight.detach().reshape(m.weight.shape[0], -1))
            for name, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS)]


def matrix_stats(w: torch.Tensor) -> dict[str, float]:
    """Condition number, spectral norm and effective-rank ratio of one weight matrix.

    effective rank = exp(-sum p_i ln p_i) with p_i = sigma_i / sum(sigma) (Roy & Vetterli), divided
    by the full rank min(rows, cols) to give a ratio in (0, 1].
    """
    # float64 on the CPU keeps tiny singular values meaningful; float32 on the GPU is fast enough.
    dtype = torch.float64 if w.device.type == "cpu" else torch.float32
    s = torch.linalg.svdvals(w.to(dtype))
    smax, smin = s[0], s[-1]
    p = s / s.sum()
    entropy = -(p * torch.log(p.clamp_min(torch.finfo(dtype).tiny))).sum()
    return {
        "cond": (smax / smin).item() if smin > 0 else float("inf"),
        "spectral_norm": smax.item(),
        "eff_rank_ratio": (torch.exp(entropy) / s.numel()).item(),
        "frob_norm": torch.linalg.norm(w.to(dtype)).item(),
    }


def layer_rows(model: nn.Module) -> list[dict]:
    rows = []
    for index, (name, w) in enumerate(weight_matrices(model), start=1):
        rows.append({"layer": name, "layer_index": index, "rows": w.shape[0], "cols": w.shape[1],
                     **matrix_stats(w)})
    return rows


def averages(layers: list[dict]) -> dict[str, float]:
    """Layer averages for the epoch table (mean over weight matrices)."""
    def mean(key):
        vals = [r[key] for r in layers]
        return sum(vals) / len(vals) if vals else float("nan")
    return {"avg_cond": mean("cond"), "avg_spectral_norm": mean("spectral_norm"),
            "avg_eff_rank_ratio": mean("eff_rank_ratio")}


def flat_params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).float() for p in model.parameters()])


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """Peak GPU memory since the last reset, or the process's peak resident memory on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss"


@torch.no_grad()
def evaluate(model: nn.Module, batches, *, amp: bool = False) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over batches; sums stay on the device until the end."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    count = 0
    for x, y in batches:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        loss_sum += nn.functional.cross_entropy(logits.float(), y, reduction="sum").double()
        correct += (logits.argmax(1) == y).sum()
        count += y.numel()
    model.train(was_training)
    return (loss_sum / count).item(), (correct.double() / count).item()
