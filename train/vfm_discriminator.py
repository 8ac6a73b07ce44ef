"""The VFM discriminator (paper Sec. 3.4): a frozen DINOv2 (`transformers.Dinov2Model`)
feature pyramid judged by small spectral-norm conv heads, conditioned on a CLIP text embedding
and on the DINOv2 features of the real reference image; hinge losses with a per-sample time
weight.

Released code: senseflow_code.md section 6 (`vfmgan.py` ProjectedDiscriminatorPlus with
conv2d=True, downsample=3, crop_plan='none'). Architecture per feature level:

    main     = [SN-conv1x1, norm, LReLU(0.2)] -> SN-conv3x3/2 -> Res[SN-conv3x3, norm, LReLU]
               -> SN-conv3x3/2 -> Res[...] -> SN-conv3x3/2          (3x3 convs pad circularly)
    cls      = SN-conv1x1 -> cmap_dim                    out  = cls(main(feat))
    refmapper= main-like stack + SN-conv1x1 -> cmap_dim  ref  = refmapper(ref_feat)
    cmapper  = equalised-lr linear text_dim -> cmap_dim  cmap = cmapper(normalise(clip_text))
    logits   = sum_c out_c * (cmap_c + ref_c) / sqrt(cmap_dim), flattened; concatenated over levels.

Differences from the released code, on purpose:
- DINOv2 is the transformers `Dinov2Model` (any size, a local folder), not timm; its position
  embeddings are interpolated bicubically (timm path: bilinear). Feature levels are
  `hidden_states` entries (index 0 = patch+position embeddings = the released `pos_drop` hook,
  index i = output of block i-1); the default maps the released hooks [2,5,8,10,14,19,23] of the
  24-block ViT-L proportionally onto the backbone's depth.
- Sides that are not a multiple of the patch size are resized (bilinear, antialiased) to the
  nearest multiple; the released timm path silently drops the remainder (1024 -> 73*14 = 1022).
- Reference features are computed under no_grad (no parameter before the heads is trainable,
  so nothing is lost) and can be passed in precomputed, as the same reference is judged three
  times per iteration (generator pass, real pass, fake pass).
- The CLIP embedding is L2-normalised here (idempotent if the caller already did).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from backbones.base import Backbone
from configs.cli import UserError
from train.diffaug import DEFAULT_POLICY, diff_augment

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RELEASED_HOOKS = (2, 5, 8, 10, 14, 19, 23)  # timm block indices of ViT-L/14 (24 blocks)
RELEASED_DEPTH = 24
TIME_WEIGHT_MODES = ("alpha_sq", "one_minus_sigma_sq", "sqrt_alphabar")


class VFMDiscriminatorError(UserError, ValueError):
    """A user-fixable problem with the discriminator's backbone or settings."""


def default_feature_layers(num_layers: int) -> list[int]:
    """`hidden_states` indices used as feature levels for a ViT with `num_layers` blocks: 0 (the
    embedding output) plus the released hooks scaled to the depth, deduplicated. For 24 blocks:
    [0, 3, 6, 9, 11, 15, 20, 24] (= released hooks + 1, plus pos_drop): 8 levels."""
    levels = {0}
    for hook in RELEASED_HOOKS:
        levels.add(max(1, min(num_layers, math.floor((hook + 1) * num_layers / RELEASED_DEPTH + 0.5))))
    return sorted(levels)


class BatchNormLocal(nn.Module):
    """Batch norm over 'virtual batches' of about `virtual_bs` samples, always with batch
    statistics (no running stats; StyleGAN-T / released `BatchNormLocal`). The batch is split
    into ceil(B / virtual_bs) near-equal groups; statistics per group and channel over the
    group's samples and all positions."""

    def __init__(self, num_features: int, virtual_bs: int = 8, eps: float = 1e-5):
        super().__init__()
        self.virtual_bs, self.eps = virtual_bs, eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = math.ceil(x.shape[0] / self.virtual_bs)
        out = []
        for g in torch.tensor_split(x, groups):
            mean = g.mean(dim=(0, 2, 3), keepdim=True)
            var = g.var(dim=(0, 2, 3), keepdim=True, unbiased=False)
            out.append((g - mean) / torch.sqrt(var + self.eps))
        return torch.cat(out) * self.weight[None, :, None, None] + self.bias[None, :, None, None]


def _norm(kind: str, channels: int, virtual_bs: int) -> nn.Module:
    if kind == "batch_local":
        return BatchNormLocal(channels, virtual_bs)
    if kind == "group":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    raise VFMDiscriminatorError(f"unknown discriminator norm {kind!r}; use 'batch_local' or 'group'")


def _sn_conv(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Module:
    conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2,
                     padding_mode="circular" if kernel > 1 else "zeros")
    return spectral_norm(conv, n_power_iterations=1, eps=1e-12, dim=0)


class _Residual(nn.Module):
    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return (self.fn(x) + x) / math.sqrt(2)


def _block(channels: int, kernel: int, norm: str, virtual_bs: int) -> nn.Sequential:
    return nn.Sequential(_sn_conv(channels, channels, kernel), _norm(norm, channels, virtual_bs), nn.LeakyReLU(0.2))


def _trunk(channels: int, downsample: int, norm: str, virtual_bs: int) -> list[nn.Module]:
    """1x1 block, then [down?, residual 3x3] x2, then down? (downsample = number of stride-2 convs)."""
    def down(i):
        return [_sn_conv(channels, channels, 3, stride=2)] if downsample > i else []
    return ([_block(channels, 1, norm, virtual_bs)] + down(0) + [_Residual(_block(channels, 3, norm, virtual_bs))]
            + down(1) + [_Residual(_block(channels, 3, norm, virtual_bs))] + down(2))


class EqualizedLinear(nn.Module):
    """Linear layer with StyleGAN's equalised learning rate: weight ~ N(0, 1) scaled by
    1/sqrt(in_features) at run time, bias 0 (released `FullyConnectedLayer`, linear activation)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.gain = 1.0 / math.sqrt(in_features)

    def forward(self, x):
        return F.linear(x, self.weight * self.gain, self.bias)


class DiscriminatorHead(nn.Module):
    """Head for one feature level. feat, ref_feat: (B, C, h, w); text: (B, text_dim) ->
    logits (B, 1, h', w') with h' = h halved (ceil) `downsample` times."""

    def __init__(self, channels: int, text_dim: int, cmap_dim: int = 64, downsample: int = 3,
                 norm: str = "batch_local", virtual_bs: int = 8):
        super().__init__()
        if not 0 <= downsample <= 3:
            raise VFMDiscriminatorError(f"downsample must be 0..3, got {downsample}")
        self.cmap_dim = cmap_dim
        self.main = nn.Sequential(*_trunk(channels, downsample, norm, virtual_bs))
        self.cls = _sn_conv(channels, cmap_dim, 1)
        self.cmapper = EqualizedLinear(text_dim, cmap_dim)
        self.refmapper = nn.Sequential(*_trunk(channels, downsample, norm, virtual_bs), _sn_conv(channels, cmap_dim, 1))

    def forward(self, feat: torch.Tensor, text: torch.Tensor, ref_feat: torch.Tensor) -> torch.Tensor:
        out = self.cls(self.main(feat))
        cmap = self.cmapper(text)[:, :, None, None]
        refmap = self.refmapper(ref_feat)
        return (out * (cmap + refmap)).sum(1, keepdim=True) / math.sqrt(self.cmap_dim)


class VFMDiscriminator(nn.Module):
    """DINOv2 feature pyramid + conditional spectral-norm heads.

    backbone: a `Dinov2Model` (or a registers variant); frozen here (requires_grad False, kept
    in eval mode by `train()`), so only `heads` train — optimise `trainable_parameters()` and
    checkpoint `heads.state_dict()`.
    text_dim: width of the CLIP text embedding (768 for CLIP ViT-L/14).
    feature_layers: `hidden_states` indices; default `default_feature_layers(depth)`.
    image_mean/std: the backbone's processor normalisation (ImageNet for DINOv2).
    resolution: if set, images are resized to resolution x resolution before the backbone;
    otherwise they are used at their own size (released: full 1024^2), rounded to the patch size.
    """

    def __init__(self, backbone: nn.Module, text_dim: int, feature_layers: list[int] | None = None,
                 cmap_dim: int = 64, downsample: int = 3, norm: str = "batch_local", virtual_bs: int = 8,
                 diffaug: bool = True, policy: str = DEFAULT_POLICY, image_mean=IMAGENET_MEAN,
                 image_std=IMAGENET_STD, resolution: int | None = None):
        super().__init__()
        config = backbone.config
        depth = config.num_hidden_layers
        self.feature_layers = list(feature_layers) if feature_layers is not None else default_feature_layers(depth)
        bad = [i for i in self.feature_layers if not 0 <= i <= depth]
        if bad:
            raise VFMDiscriminatorError(f"feature layers {bad} out of range 0..{depth} for this backbone")
        patch = config.patch_size
        self.patch_size = patch if isinstance(patch, int) else patch[0]
        self.backbone = backbone.eval().requires_grad_(False)
        self.heads = nn.ModuleList(DiscriminatorHead(config.hidden_size, text_dim, cmap_dim, downsample, norm, virtual_bs)
                                   for _ in self.feature_layers)
        self.diffaug, self.policy, self.resolution = diffaug, policy, resolution
        self.register_buffer("image_mean", torch.tensor(image_mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(image_std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    @classmethod
    def from_pretrained(cls, path: str | Path, text_dim: int, **kwargs) -> "VFMDiscriminator":
        """Load the DINOv2 backbone from a local transformers folder (config.json + weights); the
        folder's preprocessor_config.json, if any, supplies image_mean/std unless given."""
        from transformers import AutoModel

        path = Path(path)
        if not (path / "config.json").is_file():
            raise VFMDiscriminatorError(
                f"VFM discriminator: no DINOv2 model at {str(path)!r} (config.json missing). Point "
                f"`models.dinov2` in params.yaml at a local transformers folder; nothing is downloaded.")
        proc = path / "preprocessor_config.json"
        if proc.is_file():
            cfg = json.loads(proc.read_text())
            kwargs.setdefault("image_mean", tuple(cfg.get("image_mean", IMAGENET_MEAN)))
            kwargs.setdefault("image_std", tuple(cfg.get("image_std", IMAGENET_STD)))
        return cls(AutoModel.from_pretrained(path), text_dim, **kwargs)

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()  # frozen VFM: no dropout / drop-path, whatever the heads do
        if getattr(self, "_checkpointed_layers", None):
            for layer in self._checkpointed_layers:  # the layer's own flag gates transformers' checkpointing;
                layer.training = True                # its dropout/drop-path children stay in eval mode
        return self

    def enable_gradient_checkpointing(self) -> None:
        """Recompute the frozen backbone's layers in the backward (the generator's adversarial gradient
        passes through them; at 1024^2 DINOv2-L would otherwise keep ~10 GB of activations). Same
        results: only what is stored for the backward changes."""
        from transformers.modeling_layers import GradientCheckpointingLayer

        self.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self._checkpointed_layers = [m for m in self.backbone.modules() if isinstance(m, GradientCheckpointingLayer)]
        self.train(self.training)

    def trainable_parameters(self):
        return self.heads.parameters()

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] -> [0, 1] -> resized to the patch grid -> mean/std normalised."""
        x = (images.float() + 1) / 2
        h, w = x.shape[-2:]
        p = self.patch_size
        size = (self.resolution, self.resolution) if self.resolution else \
            (max(p, round(h / p) * p), max(p, round(w / p) * p))
        if size != (h, w):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return (x - self.image_mean) / self.image_std

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps (B, hidden, h, w) of images (B, 3, H, W) in [-1, 1], one per feature level:
        CLS token added to every patch token. Differentiable in `images` (no DiffAugment here)."""
        x = self._prepare(images)
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        param = next(self.backbone.parameters())
        hidden = self.backbone(pixel_values=x.to(param.dtype), output_hidden_states=True).hidden_states
        head_dtype = next(self.heads.parameters()).dtype
        maps = []
        for i in self.feature_layers:
            tokens = hidden[i]
            extra = tokens.shape[1] - h * w  # CLS (+ register tokens, if any) come first
            patches = tokens[:, extra:] + tokens[:, :1]
            maps.append(patches.transpose(1, 2).reshape(tokens.shape[0], -1, h, w).to(head_dtype))
        return maps

    @torch.no_grad()
    def reference_features(self, ref_images: torch.Tensor) -> list[torch.Tensor]:
        """`features` of the reference (real) images, no augmentation, no grad."""
        return self.features(ref_images)

    def forward(self, images: torch.Tensor, text_embeds: torch.Tensor, ref_images: torch.Tensor | None = None,
                ref_features: list[torch.Tensor] | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Logits (B, sum over levels of h'*w') for images (B, 3, H, W) in [-1, 1].

        text_embeds: (B, text_dim) CLIP text embedding (normalised here). The reference is
        `ref_images` (B, 3, H, W) in [-1, 1] or its precomputed `reference_features`. DiffAugment
        (if enabled) is applied to `images` only, with `generator` for reproducibility.
        """
        if ref_features is None:
            if ref_images is None:
                raise VFMDiscriminatorError("VFM discriminator needs ref_images or ref_features")
            ref_features = self.reference_features(ref_images)
        if self.diffaug:
            images = diff_augment(images, self.policy, generator)
        feats = self.features(images)
        text = F.normalize(text_embeds.float(), dim=-1).to(feats[0].dtype)
        logits = [head(f, text, r).flatten(1) for head, f, r in zip(self.heads, feats, ref_features)]
        return torch.cat(logits, dim=1)


def adversarial_time_weight(backbone: Backbone, t: torch.Tensor, mode: str = "alpha_sq") -> torch.Tensor:
    """Per-sample weight (B,) of the GAN terms for generator inputs at timestep t (B,).

    'alpha_sq' (default, paper Eq. 15): alpha(t)^2, the signal power of the anchor.
    'one_minus_sigma_sq' (released FLUX code): (1 - sigma(t))^2, equal to alpha^2 for flow
        families. The released SD3.5 code reaches about the same thing through a reversed lookup
        of the shifted sigma table, sigmas_desc[anchor_index]^2, which gives (1e-5, 0.251, 0.564,
        0.811) at sigma (1, 0.9, 0.75, 0.5) instead of alpha^2 = (0, 0.01, 0.0625, 0.25).
    'sqrt_alphabar' (released SDXL code): alpha(t) to the power 1 (= sqrt(abar) for DDPM).
    """
    if mode == "alpha_sq":
        w = backbone.alpha(t) ** 2
    elif mode == "one_minus_sigma_sq":
        w = (1 - backbone.sigma(t)) ** 2
    elif mode == "sqrt_alphabar":
        w = backbone.alpha(t)
    else:
        raise VFMDiscriminatorError(f"unknown adversarial time weight {mode!r}; use one of {TIME_WEIGHT_MODES}")
    return torch.as_tensor(w).float()


def _weight(weight: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    if weight is None:
        return torch.ones(like.shape[0], device=like.device, dtype=torch.float32)
    return torch.as_tensor(weight, device=like.device, dtype=torch.float32).reshape(-1).expand(like.shape[0])


def d_hinge_loss(real_logits: torch.Tensor | None, fake_logits: torch.Tensor | None,
                 weight: torch.Tensor | None = None) -> torch.Tensor:
    """Discriminator hinge loss: mean_b weight_b * (mean_k relu(1 - real_bk) + mean_k relu(1 + fake_bk)).

    Logits (B, K); weight (B,) or None (ones). Released: weight = the time weight only (no GAN
    weight on the D side). Either side may be None, so the real and fake terms can be
    back-propagated separately (as released) and still sum to the joint loss."""
    if real_logits is None and fake_logits is None:
        raise ValueError("d_hinge_loss needs real or fake logits")
    like = real_logits if real_logits is not None else fake_logits
    per_sample = torch.zeros(like.shape[0], device=like.device, dtype=torch.float32)
    if real_logits is not None:
        per_sample = per_sample + F.relu(1 - real_logits.float()).mean(dim=1)
    if fake_logits is not None:
        per_sample = per_sample + F.relu(1 + fake_logits.float()).mean(dim=1)
    return (_weight(weight, like) * per_sample).mean()


def g_hinge_loss(fake_logits: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Generator hinge loss: mean_b weight_b * (-mean_k fake_bk). Logits (B, K); weight (B,) =
    time weight * adversarial weight (released: gan_weight * timew)."""
    return (_weight(weight, fake_logits) * -fake_logits.float().mean(dim=1)).mean()


__all__ = ["VFMDiscriminator", "DiscriminatorHead", "BatchNormLocal", "EqualizedLinear", "default_feature_layers",
           "adversarial_time_weight", "d_hinge_loss", "g_hinge_loss", "IMAGENET_MEAN", "IMAGENET_STD",
           "TIME_WEIGHT_MODES", "VFMDiscriminatorError"]
