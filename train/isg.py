"""Intra-segment guidance (ISG, paper Sec. 3.3), family-agnostic.

A few-step student jumps over a whole segment [tau_prev, tau] of its anchor schedule in one
step. ISG gives that jump a local target: the teacher takes the first part of the segment
(tau -> tau_mid), the student itself (stop-grad) the rest (tau_mid -> tau_prev):

    x_mid     = euler(teacher_out(x_tau, tau, guidance), x_tau, tau -> tau_mid)
    target    = euler(student_out(x_mid, tau_mid),       x_mid, tau_mid -> tau_prev)   [no grad]
    generated = euler(student_out(x_tau, tau),           x_tau, tau -> tau_prev)       [grad]
    L_isg     = mean(sqrt((generated - target)^2 + c^2) - c)   (pseudo-Huber, c = 1e-3)

Released code: senseflow_code.md section 5 (`get_isg_guidance`). tau_prev is the next anchor, or
0 after the last one; tau_mid ~ U_int[tau_prev + margin, tau - margin], one draw per batch
(margin 50 on SD3.5's index table, 20 for FLUX/SDXL).

Steps use `backbone.euler_step`: a flow Euler step for flow families, DDIM for the DDPM family.
The released SDXL variant is not this: it re-noises with the teacher's eps at tau_mid, which
makes the student's output at x_mid cancel and the loss reduce to
sqrt(abar_prev) * (x0_student - x0_teacher) (section 5, looks like a bug). We implement the
paper's definition for every family. Another small difference: for SD3.5 the released
tau_prev = 0 indexes sigma ~= 0.003, while `sigma(0)` here is the family's own (0 for flow).
"""
from __future__ import annotations

import torch
from torch import nn

from backbones.base import Backbone, Conditioning
from backbones.schedules import shift_sigmas, unshift_sigmas

LOSS_TYPES = ("pseudo_huber", "l2")


def isg_segment(anchors: torch.Tensor, anchor_index: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(tau, tau_prev) for the segment that starts at `anchors[anchor_index]`.

    anchors: (N,) descending anchor timesteps; anchor_index: an int (whole batch) or (B,) long
    tensor. tau_prev is anchors[i + 1], or 0 for the last anchor. Returns two tensors of the
    shape of anchor_index (0-d for an int)."""
    anchors = torch.as_tensor(anchors, dtype=torch.float32)
    padded = torch.cat([anchors, anchors.new_zeros(1)])
    idx = torch.as_tensor(anchor_index, dtype=torch.long, device=anchors.device)
    if (idx < 0).any() or (idx >= len(anchors)).any():
        raise IndexError(f"anchor index {anchor_index} out of range for {len(anchors)} anchors")
    return padded[idx], padded[idx + 1]


def _to_index(t: torch.Tensor, total: int, shift: float) -> torch.Tensor:
    """Family timestep -> position on the unshifted index axis (identity when shift == 1)."""
    t = t.to(torch.float64)
    if shift == 1.0:
        return t
    # Round away float noise so that e.g. t=900 maps to exactly 750, not 749.99994.
    return torch.round(total * unshift_sigmas(t / total, shift) * 1e6) / 1e6


def sample_isg_midpoint(backbone: Backbone, tau: torch.Tensor, tau_prev: torch.Tensor, margin: float = 50.0,
                        shift: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """tau_mid for each sample, ~ U_int[tau_prev + margin, tau - margin] on the family's index axis.

    tau, tau_prev: (B,) or 0-d timesteps. With `shift` != 1 the interval is taken on the unshifted
    index axis k = T * unshift(t / T) and mapped back, t = T * shift(k / T), which reproduces the
    released SD3.5 rule (anchors and tau_mid are indices into the shift-3 sigma table); use
    shift = 1 for FLUX/SDXL (the released rule works in timestep units directly). `margin` is in
    index units. One uniform draw per batch (released: one tau_mid per batch), placed in each
    sample's own interval, so per-sample anchors are allowed. Returns float32 of tau's shape.
    """
    total = backbone.num_train_timesteps
    k_tau = _to_index(torch.as_tensor(tau), total, shift)
    k_prev = _to_index(torch.as_tensor(tau_prev), total, shift)
    lo = torch.ceil(k_prev + margin)
    hi = torch.floor(k_tau - margin)
    if (hi < lo).any():
        raise ValueError(f"ISG margin {margin} leaves no room between tau_prev={tau_prev.tolist()} and "
                         f"tau={tau.tolist()} (index axis, shift {shift}); lower train.isg_margin")
    u = torch.rand((), generator=generator, device=generator.device if generator is not None else "cpu")
    k_mid = torch.minimum(lo + torch.floor(u.to(lo) * (hi - lo + 1)), hi)
    if shift == 1.0:
        return k_mid.float()
    return (total * shift_sigmas(k_mid / total, shift)).float()


def isg_distance(generated: torch.Tensor, target: torch.Tensor, loss_type: str = "pseudo_huber",
                 huber_c: float = 1e-3) -> torch.Tensor:
    """Scalar mean over all elements: pseudo-Huber sqrt(d^2 + c^2) - c (released, c = 1e-3) or
    'l2' d^2 (the paper's L2), with d = generated - target, in float32."""
    d = generated.float() - target.float()
    if loss_type == "pseudo_huber":
        return (torch.sqrt(d * d + huber_c * huber_c) - huber_c).mean()
    if loss_type == "l2":
        return (d * d).mean()
    raise ValueError(f"unknown ISG loss {loss_type!r}; use one of {LOSS_TYPES}")


def isg_loss(backbone: Backbone, teacher: nn.Module, student: nn.Module, x_tau: torch.Tensor,
             student_output: torch.Tensor, anchors: torch.Tensor, anchor_index: int | torch.Tensor,
             cond: Conditioning, guidance_scale: float | torch.Tensor = 1.0, uncond: Conditioning | None = None,
             margin: float = 50.0, shift: float = 1.0, loss_type: str = "pseudo_huber", huber_c: float = 1e-3,
             t_mid: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """ISG loss for a batch of student inputs sitting at anchor `anchor_index`.

    x_tau: (B, ...) student input at tau = anchors[anchor_index]; student_output: (B, ...) the
    student's raw output (velocity / eps) at (x_tau, tau), WITH grad — the caller already ran this
    forward for the DMD loss, so it is reused. anchors: (N,) descending, from
    `backbone.anchor_timesteps`; anchor_index: int or (B,) long. guidance_scale/uncond: teacher
    guidance for tau -> tau_mid (released: SD3.5-M CFG ~U(2,4), FLUX embedded ~U(1,8)).
    t_mid: (B,) overrides `sample_isg_midpoint(margin, shift, generator)`.

    Gradient flows only through `student_output` (the generated path); the teacher step and the
    student's continuation from x_mid run under no_grad.
    Returns (scalar loss, target (B, ...) detached).
    """
    b = x_tau.shape[0]
    tau, tau_prev = isg_segment(anchors, anchor_index)
    tau = tau.to(x_tau.device).expand(b) if tau.ndim == 0 else tau.to(x_tau.device)
    tau_prev = tau_prev.to(x_tau.device).expand(b) if tau_prev.ndim == 0 else tau_prev.to(x_tau.device)
    if t_mid is None:
        t_mid = sample_isg_midpoint(backbone, tau.cpu(), tau_prev.cpu(), margin, shift, generator)
    t_mid = torch.as_tensor(t_mid, dtype=torch.float32).to(x_tau.device).expand(b)

    with torch.no_grad():
        x_in = x_tau.detach()
        teacher_out = backbone.guided_output(teacher, x_in, tau, cond, guidance_scale, uncond)
        x_mid = backbone.euler_step(teacher_out.to(x_in.dtype), x_in, tau, t_mid)
        student_mid = backbone.model_output(student, x_mid, t_mid, cond)
        target = backbone.euler_step(student_mid.to(x_mid.dtype), x_mid, t_mid, tau_prev)

    generated = backbone.euler_step(student_output, x_tau.detach(), tau, tau_prev)
    return isg_distance(generated, target, loss_type, huber_c), target


__all__ = ["isg_segment", "sample_isg_midpoint", "isg_distance", "isg_loss", "LOSS_TYPES"]
