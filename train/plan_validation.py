"""Check the memory planner's activation estimate (train/plan.py) against memory measured on CPU.

For small configs of the real architectures (SD3 / FLUX transformers, an SDXL-style UNet, the VAE
decoder), a fresh subprocess builds the network with real weights, runs one forward with gradients
on real inputs and measures how much its resident memory grew while the activations are held
(after `malloc_trim`, so freed transients do not count). The planner's meta-device estimate for the
same network and inputs (`saved_activations(...).total`, fp32, no checkpointing) is divided by that
measurement: `ratio` = estimated / measured (1.0 = exact; > 1 = the planner is conservative).

    python -m train.plan_validation      # prints the table (train.plan --paper --validate stores it)
"""
from __future__ import annotations

import ctypes
import gc
import json
import subprocess
import sys

import torch

SMALL = {  # sized so that activations are hundreds of MB: well above RSS noise
    "sd3_transformer": ("SD3Transformer2DModel", dict(sample_size=64, patch_size=2, in_channels=16, out_channels=16,
                                                      num_layers=4, attention_head_dim=64, num_attention_heads=8,
                                                      joint_attention_dim=256, caption_projection_dim=512,
                                                      pooled_projection_dim=256, pos_embed_max_size=64,
                                                      qk_norm="rms_norm", dual_attention_layers=(0,))),
    "flux_transformer": ("FluxTransformer2DModel", dict(patch_size=1, in_channels=64, num_layers=2,
                                                        num_single_layers=4, attention_head_dim=64,
                                                        num_attention_heads=8, joint_attention_dim=256,
                                                        pooled_projection_dim=128, guidance_embeds=False,
                                                        axes_dims_rope=(16, 24, 24))),
    "sdxl_unet": ("UNet2DConditionModel", dict(sample_size=64, in_channels=4, out_channels=4,
                                               down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                               up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                                               block_out_channels=(128, 256), layers_per_block=2,
                                               transformer_layers_per_block=(1, 2), attention_head_dim=(4, 8),
                                               cross_attention_dim=256, addition_embed_type="text_time",
                                               addition_time_embed_dim=32, projection_class_embeddings_input_dim=320,
                                               use_linear_projection=True)),
}
BATCH, RES, TEXT = 4, 512, 64  # latent 64x64


def _inputs(family: str, device: str, dtype=torch.float32) -> dict:
    side = RES // 8
    g = torch.Generator().manual_seed(0)

    def t(*shape):
        return torch.randn(*shape, generator=g).to(device=device, dtype=dtype) if device != "meta" else \
            torch.empty(*shape, device="meta", dtype=dtype)

    if family == "sd3_transformer":
        return dict(hidden_states=t(BATCH, 16, side, side), encoder_hidden_states=t(BATCH, TEXT, 256),
                    pooled_projections=t(BATCH, 256), timestep=t(BATCH).abs() * 0 + 500, return_dict=False)
    if family == "flux_transformer":
        tokens = (side // 2) ** 2
        return dict(hidden_states=t(BATCH, tokens, 64), encoder_hidden_states=t(BATCH, TEXT, 256),
                    pooled_projections=t(BATCH, 128), timestep=t(BATCH).abs() * 0 + 0.5, img_ids=t(tokens, 3),
                    txt_ids=t(TEXT, 3), return_dict=False)
    return dict(sample=t(BATCH, 4, side, side), timestep=t(BATCH).abs() * 0 + 500, encoder_hidden_states=t(BATCH, TEXT, 256),
                added_cond_kwargs={"text_embeds": t(BATCH, 128), "time_ids": t(BATCH, 6)}, return_dict=False)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def measure(name: str) -> int:
    """Resident bytes held after a forward with gradients (this process; run it in a fresh one)."""
    import diffusers

    torch.manual_seed(0)
    torch.set_num_threads(1)
    cls_name, config = SMALL[name]
    net = getattr(diffusers, cls_name)(**config)
    inputs = _inputs(name, "cpu")
    libc = ctypes.CDLL("libc.so.6")
    gc.collect()
    libc.malloc_trim(0)
    before = _rss()
    out = net(**inputs)[0]
    gc.collect()
    libc.malloc_trim(0)
    held = _rss() - before - out.numel() * out.element_size()
    out.float().mean().backward()  # the activations were real: they feed a backward
    return held


def estimate(name: str) -> int:
    from train.plan import build_meta, saved_activations

    cls_name, config = SMALL[name]
    net = build_meta(cls_name, dict(config))
    return saved_activations(net, lambda n: n(**_inputs(name, "meta")), torch.float32).total


def validate() -> list[dict]:
    rows = []
    for name in SMALL:
        proc = subprocess.run([sys.executable, "-m", "train.plan_validation", "--measure", name],
                              capture_output=True, text=True, check=True)
        measured = int(proc.stdout.strip().splitlines()[-1])
        estimated = estimate(name)
        rows.append({"config": name, "batch": BATCH, "resolution": RES, "estimated_mb": estimated / 1e6,
                     "measured_mb": measured / 1e6, "ratio": estimated / measured})
    return rows


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--measure":
        print(measure(sys.argv[2]))
    else:
        for row in validate():
            print(json.dumps(row))
