"""Batched robust least squares: fit many small parametric laws at once.

A law maps mixtures X [n, m] and parameters P [B, p] to predictions [B, n] (`predict`) and gives
the gradient and Gauss-Newton matrix of a weighted least-squares loss (`normal`; a law can build
them from its Jacobian with `normal_from_jacobian` or in closed form). `fit_huber` minimises,
independently for each of the B problems (one per metric and random initialisation, and per
penalty, cross-validation fold or bootstrap replicate), the Huber loss between the law and its
targets summed over runs with per-problem run weights (0 leaves a run out, a count repeats it),
plus an optional quadratic penalty lambda_b * P^T R P, with Levenberg-Marquardt steps on the
iteratively reweighted Gauss-Newton model of the Huber loss (IRLS weights min(1, delta / |r|)).
Each problem keeps its own damping, so all B problems converge as if solved alone, while every
step is a handful of batched tensor operations.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Protocol

import torch


class Law(Protocol):
    def predict(self, X: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
        """Predictions [B, n] of every problem's parameters P [B, p] on X [n, m]."""

    def normal(
        self, X: torch.Tensor, P: torch.Tensor, w: torch.Tensor, wr: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """J^T (w r) [B, p] and J^T diag(w) J [B, p, p], J the Jacobian of predict at P."""


def normal_from_jacobian(J: torch.Tensor, w: torch.Tensor, wr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient and Gauss-Newton matrix from an explicit Jacobian J [B, n, p]."""
    return torch.einsum("bnp,bn->bp", J, wr), (J * w[..., None]).transpose(1, 2) @ J

MAX_JACOBIAN_ELEMENTS = 2**23  # problems are solved in chunks to bound memory (64 MB of float64)


@contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run torch ops on `n` threads, then restore the setting: the batched tensors here are small,
    and on a busy 2-core machine intra-op threading costs far more than it saves."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def huber(r: torch.Tensor, delta: float | torch.Tensor) -> torch.Tensor:
    a = r.abs()
    return torch.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


@dataclass(frozen=True)
class Penalty:
    """lambda_b * P_b^T R_b P_b added to problem b's loss: R [B, p, p] symmetric PSD; lam [B] >= 0."""

    R: torch.Tensor
    lam: torch.Tensor

    def value(self, P: torch.Tensor) -> torch.Tensor:
        return self.lam * torch.einsum("bp,bpq,bq->b", P, self.R, P)

    def __getitem__(self, rows: slice) -> "Penalty":
        return Penalty(self.R[rows], self.lam[rows])


def fit_huber(
    law: Law,
    X: torch.Tensor,
    targets: torch.Tensor,
    P0: torch.Tensor,
    delta: float | torch.Tensor,
    iterations: int,
    tolerance: float = 1e-10,
    weights: torch.Tensor | None = None,
    penalty: Penalty | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit P [B, p] from P0 so that law(X, P)[b] ~ targets[b] ([B, n]); returns (P, loss [B]).

    delta: the Huber delta, one for all problems or one per problem [B]; weights: run weights [B, n]
    (default 1); the loss returned is the weighted Huber sum plus the penalty.
    """
    n, p = X.shape[0], P0.shape[1]
    B = P0.shape[0]
    delta = torch.as_tensor(delta, dtype=P0.dtype).expand(B)
    weights = torch.ones_like(targets) if weights is None else weights
    chunk = max(1, MAX_JACOBIAN_ELEMENTS // (n * p))
    with torch_threads(1):
        parts = [
            _fit_chunk(law, X, targets[i : i + chunk], P0[i : i + chunk], delta[i : i + chunk, None],
                       weights[i : i + chunk], None if penalty is None else penalty[i : i + chunk],
                       iterations, tolerance)
            for i in range(0, B, chunk)
        ]
    return torch.cat([P for P, _ in parts]), torch.cat([L for _, L in parts])


def _fit_chunk(
    law: Law, X: torch.Tensor, Y: torch.Tensor, P: torch.Tensor, delta: torch.Tensor, weights: torch.Tensor,
    penalty: Penalty | None, iterations: int, tolerance: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    def total(P, r):
        loss = (weights * huber(r, delta)).sum(1)
        return loss if penalty is None else loss + penalty.value(P)

    damping = torch.full((P.shape[0],), 1e-3, dtype=P.dtype)
    r = law.predict(X, P) - Y
    loss = total(P, r)
    eye = torch.eye(P.shape[1], dtype=P.dtype)
    for _ in range(iterations):
        w = weights * torch.clamp(delta / r.abs().clamp_min(1e-300), max=1.0)
        grad, H = law.normal(X, P, w, w * r)
        if penalty is not None:
            grad = grad + 2 * penalty.lam[:, None] * torch.einsum("bpq,bq->bp", penalty.R, P)
            H = H + 2 * penalty.lam[:, None, None] * penalty.R
        scale = torch.diag_embed(torch.diagonal(H, dim1=1, dim2=2)) + 1e-12 * eye
        trial = P + torch.linalg.solve(H + damping[:, None, None] * scale, -grad)
        trial_r = law.predict(X, trial) - Y
        trial_loss = total(trial, trial_r)
        better = torch.isfinite(trial_loss) & (trial_loss < loss)
        improvement = torch.where(better, loss - trial_loss, torch.zeros_like(loss))
        P = torch.where(better[:, None], trial, P)
        r = torch.where(better[:, None], trial_r, r)
        loss = torch.where(better, trial_loss, loss)
        damping = torch.where(better, damping / 3, damping * 4).clamp(1e-12, 1e12)
        converged = torch.where(better, improvement <= tolerance * (1 + loss), damping > 1e8)
        if bool(converged.all()):
            break
    return P, loss
