"""The one small interface every model family implements.

The training loop, the generator of evaluation samples and the benchmarks talk only to a
`Backbone`; family differences (latent space, text encoders, schedule, timestep units, how
guidance is applied, export layout) stay inside `backbones/<family>.py`.

Conventions shared by all families:
- `t` is a float tensor of shape (B,) in the family's *timestep units* (what the network
  is trained on): flow families (toy, sd3, flux) use `t = 1000 * sigma`, the DDPM family
  (sdxl) uses the integer DDPM index 0..999 stored as float.
- `sigma(t)` is the noise coefficient and `alpha(t)` the signal coefficient of the forward
  process x_t = alpha(t) * x0 + sigma(t) * eps (flow: alpha = 1 - sigma; DDPM: alpha =
  sqrt(abar), sigma = sqrt(1 - abar)). `alpha(t)**2` is the paper's signal power.
- Latents are what the denoiser sees (pixels in [-1, 1] for the toy family).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from configs.cli import UserError


class BackboneError(UserError, ValueError):
    """A user-fixable problem with a model family or its weights (raised before any work)."""


@dataclass
class Conditioning:
    """Encoded prompts. `embeds` (B, L, D) token features; `pooled` (B, P) or None;
    `extra` holds family-specific tensors with batch as first dim (e.g. SDXL time ids)."""

    embeds: torch.Tensor
    pooled: torch.Tensor | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.embeds.shape[0]

    def index(self, idx) -> "Conditioning":
        return Conditioning(
            self.embeds[idx],
            None if self.pooled is None else self.pooled[idx],
            {k: v[idx] for k, v in self.extra.items()},
        )

    def to(self, *args, **kwargs) -> "Conditioning":
        return Conditioning(
            self.embeds.to(*args, **kwargs),
            None if self.pooled is None else self.pooled.to(*args, **kwargs),
            {k: v.to(*args, **kwargs) for k, v in self.extra.items()},
        )

    @staticmethod
    def cat(parts: list["Conditioning"]) -> "Conditioning":
        first = parts[0]
        return Conditioning(
            torch.cat([p.embeds for p in parts]),
            None if first.pooled is None else torch.cat([p.pooled for p in parts]),
            {k: torch.cat([p.extra[k] for p in parts]) for k in first.extra},
        )

    def replace(self, **kw) -> "Conditioning":
        return replace(self, **kw)


def require_folder(path: str | Path, needed: list[str], what: str) -> Path:
    """Check that a local weights folder and the named entries inside it exist."""
    path = Path(path)
    if not path.is_dir():
        raise BackboneError(
            f"{what}: weights folder does not exist ({path}): point the setting that names it (train.teacher for "
            f"training, --teacher for generation and benchmarks) at a local diffusers folder; nothing is "
            f"downloaded at run time")
    missing = [n for n in needed if not (path / n).exists()]
    if missing:
        raise BackboneError(f"{what}: not a complete diffusers folder ({path}): it lacks {', '.join(missing)}; "
                            f"point to the folder that holds them")
    return path


class Backbone(ABC):
    """A teacher model family: frozen text encoding, schedule, network calls, sampling, export."""

    family: str = ""
    prediction: str = "flow"  # "flow" (velocity), "eps" (DDPM noise) or "v" (DDPM v-prediction)
    denoiser_subfolder: str = "transformer"  # where the distilled network lives in the folder
    resolution: tuple[int, int] = (1024, 1024)  # (H, W) of generated images; families fix or take it at load
    num_train_timesteps: int = 1000

    def __init__(self, denoiser: nn.Module, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        self.denoiser = denoiser
        self.device = torch.device(device)
        self.dtype = dtype
        self.source: Path | None = None  # the folder `load` read the teacher from

    # ---- loading -----------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def load(cls, path: str | Path, device="cpu", dtype=torch.float32) -> "Backbone":
        """Load the teacher from a local diffusers folder; BackboneError if anything is missing."""

    @abstractmethod
    def load_denoiser(self, path: str | Path) -> nn.Module:
        """Load a (student or teacher) denoiser of this family from `path/<denoiser_subfolder>` or `path`."""

    # ---- the trainable copies (generator, fake score, EMA) --------------------------------
    # Built without a second full copy of the teacher on any device: the architecture is created
    # with its parameters on the meta device, optionally sharded (`shard`), then allocated in the
    # requested dtype and filled one tensor at a time from the weight files, in their stored dtype.
    # So an fp32 student made from a teacher held in bf16 gets the exact weights on disk.
    student_dropped_prefixes: tuple[str, ...] = ()  # teacher weights the student architecture lacks

    def student_config(self) -> dict:
        """Config of the student/fake-score architecture (default: the teacher's)."""
        net = getattr(self.denoiser, "module", self.denoiser)
        return {k: v for k, v in dict(net.config).items() if not k.startswith("_")}

    def student_skeleton(self) -> nn.Module:
        """The student architecture with parameters on the meta device (nothing allocated) and
        buffers computed by its constructor on CPU."""
        from accelerate import init_empty_weights

        cls = type(getattr(self.denoiser, "module", self.denoiser))
        with init_empty_weights(include_buffers=False):
            return cls.from_config(self.student_config())

    def shardable_text_encoders(self) -> list[nn.Module]:
        """The frozen text encoders the training loop may shard with the teacher: the T5 encoders (4.7B
        parameters for T5-XXL). CLIP encoders stay replicated: the pipelines read their
        hidden_states[-2], which transformers captures with hooks that FSDP2's class swap breaks, and
        they are small (<= 0.7B)."""
        names = ("text_encoder", "text_encoder_2", "text_encoder_3")
        return [m for m in (getattr(self, n, None) for n in names)
                if isinstance(m, nn.Module) and not type(m).__name__.startswith("CLIP")]

    def unused_parameters(self, net: nn.Module) -> set[str]:
        """Names of `net`'s parameters that cannot receive a gradient by construction (their output
        is discarded); the loop's gradient audit leaves them out. Default: none."""
        return set()

    def _weights_folder(self, root: Path) -> Path | None:
        """`root/<denoiser_subfolder>` or `root` itself, whichever holds .safetensors weights."""
        for candidate in (root / self.denoiser_subfolder, root):
            if candidate.is_dir() and any(candidate.glob("*.safetensors")):
                return candidate
        return None

    def denoiser_weights(self, path: str | Path | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, tensor) of a denoiser's weights, one at a time, in the dtype they are stored in:
        from `path` (a diffusers folder of this family, or its `<denoiser_subfolder>/`), else from
        the folder the teacher was loaded from, else from the teacher in memory (exact only when it
        is held in float32)."""
        if path is not None:
            folder = self._weights_folder(Path(path))
            if folder is None:
                raise BackboneError(f"{self.family} weights {str(path)!r}: no .safetensors in it or in its "
                                    f"{self.denoiser_subfolder}/ (expected a diffusers model folder)")
        else:
            folder = self._weights_folder(self.source) if self.source else None
        if folder is None:
            yield from getattr(self.denoiser, "module", self.denoiser).state_dict().items()
            return
        for file in sorted(folder.glob("*.safetensors")):
            with safe_open(str(file), framework="pt") as f:
                for name in f.keys():
                    yield name, f.get_tensor(name)

    def init_student(self, device: str | torch.device | None = None, dtype: torch.dtype = torch.float32,
                     weights: str | Path | None = None,
                     shard: Callable[[nn.Module], nn.Module] | None = None) -> nn.Module:
        """A trainable student/fake-score network initialised from the teacher's weights (or from
        the diffusers folder `weights`, e.g. an earlier student), parameters in `dtype` on `device`
        (default: the backbone's). `shard` (e.g. FSDP2's fully_shard) is applied to the meta-device
        skeleton before allocation, so each rank only ever holds its shards."""
        net = self.student_skeleton()
        buffers = {n: b.detach().clone() for n, b in net.named_buffers()}
        if shard is not None:
            net = shard(net)
        net.to_empty(device=device or self.device)
        if any(p.dtype != dtype for p in net.parameters()):
            net.to(dtype)
        load_full_tensors(net, self.denoiser_weights(weights), self.student_dropped_prefixes, buffers)
        return net.requires_grad_(True)
    # ---- text --------------------------------------------------------------------------
    @abstractmethod
    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        ...

    @abstractmethod
    def null_conditioning(self, batch: int) -> Conditioning:
        """Unconditional input for classifier-free guidance (family convention)."""

    # ---- schedule (pure functions of t) -------------------------------------------------
    @abstractmethod
    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        ...

    @abstractmethod
    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        ...

    @abstractmethod
    def anchor_timesteps(self, num_steps: int) -> torch.Tensor:
        """Descending training anchors for an `num_steps`-step student (paper/released code)."""

    @abstractmethod
    def sample_training_timesteps(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Timesteps for the denoising (teacher/fake-score) loss, family convention."""

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return _bcast(self.alpha(t), x0) * x0 + _bcast(self.sigma(t), x0) * noise

    # ---- network ------------------------------------------------------------------------
    @abstractmethod
    def model_output(self, net: nn.Module, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning,
                     guidance: torch.Tensor | None = None) -> torch.Tensor:
        """Raw network output (velocity for flow, eps for DDPM). `guidance` is only used by
        guidance-distilled teachers (FLUX.1-dev's embedded guidance)."""

    def to_x0(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s = _bcast(self.sigma(t), x_t)
        if self.prediction == "flow":
            return x_t - s * output
        a = _bcast(self.alpha(t), x_t)
        return (x_t - s * output) / a

    def to_noise(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The eps implied by a network output."""
        if self.prediction == "flow":
            return x_t + _bcast(1 - self.sigma(t), x_t) * output
        if self.prediction == "v":  # v = alpha eps - sigma x0  =>  eps = sigma x_t + alpha v
            return _bcast(self.sigma(t), x_t) * x_t + _bcast(self.alpha(t), x_t) * output
        return output

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        """Regression target of the denoising loss: velocity eps - x0 (flow), eps, or v = alpha eps -
        sigma x0 (v-prediction DDPM teachers; needs t)."""
        if self.prediction == "flow":
            return noise - x0
        if self.prediction == "v":
            if t is None:
                raise BackboneError("v-prediction needs the timestep for its training target")
            return _bcast(self.alpha(t), x0) * noise - _bcast(self.sigma(t), x0) * x0
        return noise

    def guided_output(self, net: nn.Module, x_t, t, cond: Conditioning, guidance_scale: float | torch.Tensor = 1.0,
                      uncond: Conditioning | None = None) -> torch.Tensor:
        """Network output with true two-pass CFG when `guidance_scale != 1` (embedded guidance
        families override this)."""
        if isinstance(guidance_scale, (int, float)) and guidance_scale == 1.0:
            return self.model_output(net, x_t, t, cond)
        if uncond is None:
            uncond = self.null_conditioning(x_t.shape[0])
        both = self.model_output(net, torch.cat([x_t, x_t]), torch.cat([t, t]), Conditioning.cat([uncond, cond]))
        out_u, out_c = both.chunk(2)
        g = guidance_scale if not torch.is_tensor(guidance_scale) else _bcast(guidance_scale.to(x_t), x_t)
        return out_u + g * (out_c - out_u)

    def predict_x0(self, net, x_t, t, cond, guidance_scale=1.0, uncond=None) -> torch.Tensor:
        return self.to_x0(self.guided_output(net, x_t, t, cond, guidance_scale, uncond), x_t, t)

    # ---- sampling -----------------------------------------------------------------------
    def sampling_timesteps(self, num_steps: int) -> torch.Tensor:
        """Timesteps visited by the sampler; a few-step student visits exactly its anchors."""
        return self.anchor_timesteps(num_steps)

    @torch.no_grad()
    def sample(self, net: nn.Module, cond: Conditioning, noise: torch.Tensor, num_steps: int,
               sampler: str = "stochastic", guidance_scale: float = 1.0, uncond: Conditioning | None = None,
               generator: torch.Generator | None = None, timesteps: torch.Tensor | None = None) -> torch.Tensor:
        """Few-step sampling from pure noise. `stochastic`: x0 = G(x_t), re-noise with fresh
        noise to the next timestep (DMD2/SenseFlow "Ours"); `euler`: deterministic ODE step
        ("Ours (Euler)"). `noise` (B, *latent_shape) ~ N(0, I) is the latent at the first
        timestep, as is. Returns x0 latents."""
        if sampler not in ("stochastic", "euler"):
            raise BackboneError(f"unknown sampler {sampler!r}; use 'stochastic' or 'euler'")
        ts = (self.sampling_timesteps(num_steps) if timesteps is None else timesteps).to(noise.device)
        # start from pure N(0, I) for every family: the diffusers pipelines (init_noise_sigma = 1) and
        # DMD2/SenseFlow (x_t = noise at t = 999) do, not sigma(t0) * noise
        x = x0 = noise
        for i, t in enumerate(ts):
            x, x0 = self.sampler_step(net, x, t, ts[i + 1] if i + 1 < len(ts) else None, cond, sampler,
                                      guidance_scale, uncond, generator)
        return x0

    def sampler_step(self, net: nn.Module, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor | None,
                     cond: Conditioning, sampler: str = "stochastic", guidance_scale: float = 1.0,
                     uncond: Conditioning | None = None, generator: torch.Generator | None = None):
        """One step of `sample` from scalar timestep t to t_next: (x at t_next, x0 predicted at t);
        t_next None (the last step): (None, x0)."""
        b = x.shape[0]
        tb = t.expand(b)
        out = self.guided_output(net, x, tb, cond, guidance_scale, uncond)
        x0 = self.to_x0(out, x, tb)
        if t_next is None:
            return None, x0
        tn = t_next.expand(b)
        if sampler == "stochastic":
            fresh = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) \
                if generator is not None else torch.randn_like(x)
            return self.add_noise(x0, fresh, tn), x0
        return self.euler_step(out, x, tb, tn), x0

    def euler_step(self, output, x_t, t, t_next):
        """Deterministic ODE step from t to t_next (DDIM for eps families)."""
        if self.prediction == "flow":
            return x_t + _bcast(self.sigma(t_next) - self.sigma(t), x_t) * output
        x0 = self.to_x0(output, x_t, t)
        return self.add_noise(x0, self.to_noise(output, x_t, t), t_next)

    # ---- pixels ---------------------------------------------------------------------------
    @abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images in [-1, 1], (B, 3, H, W)."""

    @abstractmethod
    def encode_images(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images in [-1, 1] -> latents."""

    @abstractmethod
    def latent_shape(self, height: int, width: int) -> tuple[int, ...]:
        """Shape of one latent (no batch dim) for an image of height x width."""

    # ---- export ---------------------------------------------------------------------------
    def export_student(self, net: nn.Module, out_dir: str | Path) -> Path:
        """Save the student as `<out_dir>/<denoiser_subfolder>/` (config.json +
        diffusion_pytorch_model.safetensors), the layout of the teacher folder, so that folder
        replaces the teacher's in the family's diffusers pipeline."""
        unwrapped = getattr(net, "module", net)
        return self.export_student_state(unwrapped.state_dict(), out_dir, unwrapped)

    def export_student_state(self, state: dict[str, torch.Tensor], out_dir: str | Path,
                             config_from: nn.Module | None = None, max_shard_size: str = "10GB") -> Path:
        """`export_student` from a full state dict (e.g. gathered from FSDP2 shards on rank 0), without
        building a model: config.json of `config_from` (default: the student architecture) and the
        weights (`write_diffusers_weights`)."""
        target = Path(out_dir) / self.denoiser_subfolder
        target.mkdir(parents=True, exist_ok=True)
        (config_from if config_from is not None else self.student_skeleton()).save_config(target)
        write_diffusers_weights(state, target, max_shard_size)
        return target


def write_diffusers_weights(state: dict[str, torch.Tensor], folder: str | Path, max_shard_size: str = "10GB") -> None:
    """A diffusers model folder's weights: diffusion_pytorch_model.safetensors, split into shards with
    an index past `max_shard_size` as diffusers' save_pretrained does."""
    import json

    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file

    folder = Path(folder)
    split = split_torch_state_dict_into_shards(state, filename_pattern="diffusion_pytorch_model{suffix}.safetensors",
                                               max_shard_size=max_shard_size)
    for filename, names in split.filename_to_tensors.items():
        save_file({n: state[n].detach().cpu().contiguous() for n in names}, str(folder / filename),
                  metadata={"format": "pt"})
    if split.is_sharded:
        index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
        (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index, indent=2))


@torch.no_grad()
def load_full_tensors(net: nn.Module, tensors, dropped_prefixes: tuple[str, ...] = (),
                      buffers: dict[str, torch.Tensor] | None = None) -> None:
    """Fill `net`'s parameters from full (unsharded) tensors given one at a time, casting each to
    the parameter's dtype; a DTensor (FSDP2-sharded) parameter takes only its local shard. Buffers
    are set from `buffers` (the constructor's own values) and ignored in `tensors`. Every parameter
    must be filled and every tensor used (except names starting with `dropped_prefixes`), or
    BackboneError lists the difference."""
    params = dict(net.named_parameters())
    own_buffers = dict(net.named_buffers())
    for name, value in (buffers or {}).items():
        own_buffers[name].copy_(value)
    filled, unexpected = set(), []
    for name, full in tensors:
        if name in params:
            param = params[name]
            if hasattr(param, "device_mesh"):  # DTensor: cut this rank's shard out of the full tensor
                from torch.distributed.tensor import distribute_tensor

                local = distribute_tensor(full.to(param.device, param.dtype), param.device_mesh, param.placements,
                                          src_data_rank=None).to_local()
                param.to_local().copy_(local)
            else:
                param.copy_(full)
            filled.add(name)
        elif name not in own_buffers and not name.startswith(dropped_prefixes):
            unexpected.append(name)
    missing = sorted(set(params) - filled)
    if missing or unexpected:
        raise BackboneError(f"weights do not fit the {type(net).__name__} architecture: missing {missing[:5]}"
                            f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                            f"{' ...' if len(unexpected) > 5 else ''}")


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a (B,) or scalar tensor to broadcast against `like` (B, ...)."""
    v = torch.as_tensor(v, device=like.device, dtype=like.dtype)
    if v.ndim == 0:
        return v
    return v.reshape(v.shape[0], *([1] * (like.ndim - 1)))
