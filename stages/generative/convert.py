"""Slider conversion (`shiftforge convert-slider`): a CNS-Bench / Concept Sliders LoRANetwork
slider (`.pt` or `.safetensors`, keys `lora_unet_…`) as a diffusers/peft
LoRA safetensors, with a `.json` of where it came from.

The weights are copied unchanged, each layer keeping its rank and alpha, so
the converted file renders the same images as the original; every layer is
checked against the names and shapes of the model's UNet first.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SCHEMA = "shiftforge.slider/1"


def provenance_base(model: str, revision: str | None, root: Path) -> dict[str, Any]:
    from stages.generative.models import unet_weight_sha256

    return {"model": model, "revision": revision, "unet_sha256": unet_weight_sha256(str(root))}


def convert(slider: Any, layers: dict[str, Any], out: Path, base_model: dict[str, Any]) -> dict[str, Any]:
    """Write `out` and `out.json`; returns the provenance written."""
    import diffusers
    import torch

    from stages import __version__
    from stages.generative.lora_network import peft_adapter
    from stages.generative.models import file_sha256
    from stages.generative.slider_training import write_lora_file

    state, config = peft_adapter(layers)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_lora_file(out, {k: v.to(torch.float32) for k, v in state.items()}, config)
    record = {
        "schema": SCHEMA,
        "converted_from": {"file": slider.path.name, "sha256": slider.sha256, "format": slider.format},
        "base_model": base_model,
        "lora": {"layers": len(layers), "r": config["r"], "lora_alpha": config["lora_alpha"]},
        "versions": {"shiftforge": __version__, "diffusers": diffusers.__version__, "torch": torch.__version__},
        "adapter_sha256": file_sha256(out),
    }
    sidecar = out.with_suffix(".json")
    partial = sidecar.with_name(sidecar.name + ".partial")
    partial.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(partial, sidecar)
    return record
