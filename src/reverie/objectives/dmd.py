"""Distribution Matching Distillation (DMD, Yin et al. arXiv 2311.18828), as used by Self
Forcing (arXiv 2506.08009) and RELIC (arXiv 2512.04040 §4.4.2).

The KL gradient (DMD eq. 7) ``∇θ D_KL ≈ E[-(s_real(x_u) - s_fake(x_u)) dG/dθ]`` is implemented
with x0-predictions: the real score model (frozen teacher, with CFG) and the fake score model
(the critic trained on generator samples) each denoise the re-noised generator sample ``x_u``;
the gradient on the generator's output ``x`` is

    grad = (x0_fake - x0_real) / mean(|x - x0_real|)     (the mean is per sample)

(the per-sample normaliser is DMD's gradient weighting, as in Self Forcing's implementation),
and it reaches the generator through the surrogate ``0.5 * MSE(x, stopgrad(x - grad))``, whose
gradient w.r.t. ``x`` is ``grad / x.numel()``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dmd_gradient(x: torch.Tensor, real_x0: torch.Tensor, fake_x0: torch.Tensor) -> torch.Tensor:
    """The normalised DMD gradient on the generator output.

    Shapes:
        x: ``(B, ...)`` generator output (clean latents, e.g. ``(B, T, C, H, W)``).
        real_x0, fake_x0: same shape, x0-predictions of the real (teacher) and fake (critic)
            score models at the re-noised ``x``.
        returns: float32 ``(B, ...)``; ``(fake_x0 - real_x0) / mean_{non-batch}|x - real_x0|``,
            with NaN/inf (a zero normaliser) replaced by 0. No gradient flows through it.

    Raises:
        ValueError: mismatched shapes.
    """
    if not x.shape == real_x0.shape == fake_x0.shape:
        raise ValueError(
            f"shapes differ: x {tuple(x.shape)}, real {tuple(real_x0.shape)}, "
            f"fake {tuple(fake_x0.shape)}"
        )
    with torch.no_grad():
        x, real, fake = x.float(), real_x0.float(), fake_x0.float()
        dims = tuple(range(1, x.ndim))
        scale = (x - real).abs().mean(dim=dims, keepdim=True)  # (B, 1, ..., 1)
        return torch.nan_to_num((fake - real) / scale, nan=0.0, posinf=0.0, neginf=0.0)


def dmd_loss(x: torch.Tensor, real_x0: torch.Tensor, fake_x0: torch.Tensor) -> torch.Tensor:
    """The DMD surrogate loss ``0.5 * MSE(x, stopgrad(x - grad))`` with ``grad`` from
    :func:`dmd_gradient`; back-propagating it applies ``grad / x.numel()`` to ``x``.

    Shapes:
        x: ``(B, ...)`` generator output, requires grad. real_x0, fake_x0: same shape.
        returns: a float32 scalar (equal to ``0.5 * mean(grad^2)``).

    Raises:
        ValueError: mismatched shapes.
    """
    grad = dmd_gradient(x, real_x0, fake_x0)
    target = (x.detach().float() - grad).detach()
    return 0.5 * F.mse_loss(x.float(), target)
