"""LoRA layer sets of a UNet and the Concept Sliders / CNS-Bench slider format.

Target sets (which UNet layers a slider adapts):

- `cns`: what CNS-Bench trains (Concept Sliders' LoRANetwork, network type
  "c3lier", method "noxattn"): every Linear/Conv2d inside an `Attention`,
  `ResnetBlock2D`, `Downsample2D`, `Upsample2D`, `DownBlock2D` or
  `UpBlock2D` module whose name mentions neither `attn2` (cross-attention)
  nor `time_embed`. That is self-attention q/k/v/out, the resnet convs, their
  time-embedding projections and shortcuts, and the down/up-sampler convs.
- `all-blocks`: every Linear/Conv2d under down/mid/up blocks except
  cross-attention; adds proj_in/proj_out and the feed-forward layers.

A CNS-Bench slider is the state dict of a LoRANetwork (`torch.save` to `.pt`,
or safetensors): for each adapted layer `<m>`, keys
`lora_unet_<m with "." as "_">.lora_down.weight`, `.lora_up.weight` and
`.alpha`; the layer computes W x + multiplier · alpha / rank · up(down(x)).
For a conv layer `down` has the layer's kernel, stride and padding and `up`
is 1×1. peft's LoRA has the same structure with scaling lora_alpha / r, so
the weights carry over unchanged, rank and alpha per layer. (LoRANetwork
takes alpha from its constructor, which CNS-Bench's loader sets to 1.0, the
value its training stores in every `.alpha`; here the stored `.alpha` is
used, 0 meaning "alpha = rank" as in LoRANetwork.)
"""

from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path
from typing import Any, Literal

TargetSet = Literal["cns", "all-blocks"]
TARGET_SETS: tuple[str, ...] = ("cns", "all-blocks")
NETWORK_PREFIX = "lora_unet_"
_CNS_PARENTS = frozenset({"Attention", "ResnetBlock2D", "Downsample2D", "Upsample2D", "DownBlock2D", "UpBlock2D"})
_CNS_EXCLUDED = ("attn2", "time_embed")
_BLOCKS = ("down_blocks", "mid_block", "up_blocks")


def adaptable_layers(unet: Any) -> dict[str, Any]:
    """{module name: module} of every Linear/Conv2d of the UNet."""
    import torch

    return {
        name: module
        for name, module in unet.named_modules()
        if name and isinstance(module, (torch.nn.Linear, torch.nn.Conv2d))
    }


def target_modules(unet: Any, target_set: str) -> list[str]:
    """Sorted names of the layers `target_set` adapts."""
    layers = adaptable_layers(unet)
    if target_set == "all-blocks":
        return sorted(n for n in layers if n.split(".")[0] in _BLOCKS and ".attn2." not in n)
    if target_set != "cns":
        raise ValueError(f"target set must be one of {list(TARGET_SETS)}, got {target_set!r}")
    parents = [
        name
        for name, module in unet.named_modules()
        if type(module).__name__ in _CNS_PARENTS and not any(x in name for x in _CNS_EXCLUDED)
    ]
    return sorted({n for p in parents for n in layers if n.startswith(p + ".")})


def network_key(module_name: str) -> str:
    return NETWORK_PREFIX + module_name.replace(".", "_")


def read_state_dict(path: Path) -> dict[str, Any]:
    """Tensors of a slider file; `.pt` loads with weights_only (tensors, never code)."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable pickle is bad input
        raise ValueError(f"not a tensor state dict ({type(exc).__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("not a state dict of tensors")
    return state


def slider_format(keys: list[str]) -> str:
    """'lora-network' (CNS-Bench / Concept Sliders) or 'peft' (diffusers)."""
    if keys and all(k.startswith(NETWORK_PREFIX) for k in keys):
        return "lora-network"
    if any(".lora_A." in k for k in keys):
        return "peft"
    sample = ", ".join(sorted(keys)[:2]) or "no tensors"
    raise ValueError(f"neither a LoRANetwork (lora_unet_…) nor a diffusers/peft LoRA file ({sample})")


def layer_pairs(state: dict[str, Any], fmt: str) -> dict[str, tuple[Any, Any, Any]]:
    """{file layer id: (down/A, up/B, alpha or None)} of a slider state dict."""
    down, up = ("lora_down", "lora_up") if fmt == "lora-network" else ("lora_A", "lora_B")
    pairs: dict[str, list[Any]] = {}
    for key, tensor in state.items():
        for slot, tail in enumerate((f".{down}.weight", f".{up}.weight", ".alpha")):
            if key.endswith(tail):
                pairs.setdefault(key[: -len(tail)], [None, None, None])[slot] = tensor
                break
        else:
            raise ValueError(f"unexpected tensor {key!r}")
    broken = sorted(k for k, (d, u, _) in pairs.items() if d is None or u is None)
    if broken:
        raise ValueError(f"layer {broken[0]!r} lacks its {down} or {up} weight")
    return {k: (d, u, a) for k, (d, u, a) in pairs.items()}


def match_layers(state: dict[str, Any], fmt: str, layers: dict[str, Any]) -> dict[str, tuple[Any, Any, float]]:
    """{UNet module name: (down, up, alpha)}; raises ValueError when a layer
    is not in the UNet or its shapes do not fit it."""
    pairs = layer_pairs(state, fmt)
    if fmt == "lora-network":
        by_key = {network_key(n): n for n in layers}
        names = {k: by_key.get(k) for k in pairs}
    else:
        names = {k: k.removeprefix("unet.") for k in pairs}
        names = {k: (n if n in layers else None) for k, n in names.items()}
    unknown = sorted(k for k, n in names.items() if n is None)
    if unknown:
        raise ValueError(
            f"{len(unknown)} of {len(pairs)} LoRA layers are not in this UNet (e.g. {unknown[0]!r}): "
            "a slider for another base model?"
        )
    matched = {}
    for key, (d, u, a) in pairs.items():
        name = names[key]
        check_shapes(name, layers[name], tuple(d.shape), tuple(u.shape))
        rank = d.shape[0]
        alpha = float(a) if a is not None else float(rank)
        matched[name] = (d, u, alpha if alpha != 0 else float(rank))
    return matched


def check_shapes(name: str, layer: Any, down: tuple[int, ...], up: tuple[int, ...]) -> None:
    rank = down[0]
    if hasattr(layer, "kernel_size"):
        want_down = (rank, layer.in_channels, *layer.kernel_size)
        want_up = (layer.out_channels, rank, 1, 1)
    else:
        want_down, want_up = (rank, layer.in_features), (layer.out_features, rank)
    if (down, up) != (want_down, want_up):
        raise ValueError(
            f"LoRA layer {name!r} has shapes down {list(down)}, up {list(up)} but this UNet's layer needs "
            f"{list(want_down)}, {list(want_up)}: a slider for another base model?"
        )


def peft_adapter(matched: dict[str, tuple[Any, Any, float]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state dict with `<module>.lora_A/B.weight` keys, LoraConfig kwargs)
    giving every layer the rank and alpha it had."""
    state = {}
    for name in sorted(matched):
        down, up, _ = matched[name]
        state[f"{name}.lora_A.weight"] = down.detach().to("cpu").contiguous()
        state[f"{name}.lora_B.weight"] = up.detach().to("cpu").contiguous()
    ranks = {n: int(d.shape[0]) for n, (d, _, _) in matched.items()}
    alphas = {n: a for n, (_, _, a) in matched.items()}
    r = Counter(ranks.values()).most_common(1)[0][0]
    alpha = Counter(alphas.values()).most_common(1)[0][0]
    config = {
        "r": r,
        "lora_alpha": alpha,
        "rank_pattern": {n: v for n, v in sorted(ranks.items()) if v != r},
        "alpha_pattern": {n: v for n, v in sorted(alphas.items()) if v != alpha},
        "target_modules": sorted(matched),
        "init_lora_weights": False,
    }
    return state, config


@functools.lru_cache(maxsize=8)
def unet_skeleton(unet_dir: str) -> Any:
    """The UNet of a model folder built from its config on the meta device:
    names and shapes of every layer, no weights read, no memory used."""
    import torch
    from diffusers import UNet2DConditionModel

    config = UNet2DConditionModel.load_config(unet_dir)
    with torch.device("meta"):
        return UNet2DConditionModel.from_config(config)


def model_layers(model_root: Path) -> dict[str, Any]:
    return adaptable_layers(unet_skeleton(str(Path(model_root) / "unet")))
