"""The LM head and next-token cross-entropy of K stacked proxies, a block of logits at a time.

The logits of a step, [K, rows, V], dwarf everything else a tiny proxy computes when the vocabulary
is large (RegMix's 1M shape with a 50k vocabulary: 2048 tokens of 64 proxies make 26 GB of float32
logits). Here they exist one block at a time: whole proxies, several at once, while a proxy's rows
fit `block` elements, else one proxy's rows in pieces. Each block's logits are multiplied in the
matmul dtype (bfloat16 under autocast), turned into the loss and the loss's gradient in float32,
and multiplied at once into the gradients of the hidden states and of the head; only those are
kept for the backward, which scales them by each proxy's loss gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def logit_blocks(n_models: int, rows: int, vocab: int, block: int) -> list[tuple[slice, slice]]:
    """(proxies, rows) index pairs covering [n_models, rows] with at most `block` logits each.

    Whole proxies when one proxy's rows fit (the head's gradient of each proxy is then written
    once), else one proxy's rows in pieces of block // vocab (at least one row).
    """
    per_block = max(1, min(rows, block // vocab))
    proxies = max(1, min(n_models, block // (per_block * vocab))) if per_block == rows else 1
    return [(slice(k, k + proxies), slice(r, r + per_block))
            for k in range(0, n_models, proxies) for r in range(0, rows, per_block)]


class ChunkedCrossEntropy(torch.autograd.Function):
    """Mean next-token cross-entropy per proxy [K] of hidden states [K, N, D] through the head [K, D, V].

    In each block the log-probabilities come from the logits in float32 (an exact logsumexp, so a
    target whose probability underflows still has its finite loss); the target's entry of the
    gradient, p - 1, is minus the sum of the other probabilities, exact also when p is near 1
    (p - 1 itself would cancel, and so would log p there). The gradient of the logits is rounded
    once to the matmul dtype for its two products. No value is read back to the host.
    """

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, head: torch.Tensor, targets: torch.Tensor, block: int) -> torch.Tensor:
        k, n, _ = hidden.shape
        with torch.autocast(hidden.device.type, enabled=False):
            grad_hidden = torch.empty_like(hidden)
            grad_head = torch.empty(head.shape, dtype=torch.float32, device=head.device)
            nll = torch.empty(k, n, dtype=torch.float32, device=hidden.device)
            for proxies, rows in logit_blocks(k, n, head.shape[-1], block):
                h, w, t = hidden[proxies, rows], head[proxies].to(hidden.dtype), targets[proxies, rows, None]
                log_probs = torch.log_softmax(torch.bmm(h, w), dim=-1, dtype=torch.float32)
                nll[proxies, rows] = -log_probs.gather(-1, t).squeeze(-1)
                probs = log_probs.exp_().scatter_(-1, t, 0.0)
                grad = probs.scatter_(-1, t, -probs.sum(-1, keepdim=True)).to(hidden.dtype)
                grad_hidden[proxies, rows] = torch.bmm(grad, w.transpose(1, 2))
                head_part = torch.bmm(h.transpose(1, 2), grad)
                if rows.start == 0:
                    grad_head[proxies] = head_part
                else:
                    grad_head[proxies] += head_part
        ctx.save_for_backward(grad_hidden, grad_head)
        return nll.mean(1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad_hidden, grad_head = ctx.saved_tensors
        scale = (grad.float() / grad_hidden.shape[1])[:, None, None]
        return grad_hidden * scale, grad_head * scale, None, None


def chunked_token_nll(hidden: torch.Tensor, head: torch.Tensor, targets: torch.Tensor, block: int) -> torch.Tensor:
    """Per-token cross-entropy [K, N] (float32) of `targets` [K, N], for evaluation (no gradients)."""
    k, n, _ = hidden.shape
    nll = torch.empty(k, n, dtype=torch.float32, device=hidden.device)
    with torch.no_grad():
        for proxies, rows in logit_blocks(k, n, head.shape[-1], block):
            logits = torch.bmm(hidden[proxies, rows], head[proxies].to(hidden.dtype)).float()
            part = F.cross_entropy(logits.flatten(0, 1), targets[proxies, rows].flatten(), reduction="none")
            nll[proxies, rows] = part.view(logits.shape[:2])
    return nll
