"""LoRA sliders in a UNet: loading, the base-model checks, and a per-sample
LoRA scale.

A slider file is either
- diffusers/peft: `<name>.safetensors` (keys `unet.<module>.lora_A/B.weight`,
  LoRA config in the `lora_adapter_metadata` header, as diffusers'
  `save_lora_weights` writes it), or
- a CNS-Bench / Concept Sliders LoRANetwork state dict (`.pt` or
  `.safetensors`, keys `lora_unet_…`; see `lora_network`), loaded as is,
with an optional `<name>.json` beside it holding its provenance, including
the sha256 of the base UNet. Whatever the provenance says, every LoRA layer
must name a layer of the model's UNet and fit its shapes.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages.generative.models import DiffusionModel, file_sha256

SLIDER_SUFFIXES = (".safetensors", ".pt")


@dataclass(frozen=True)
class SliderFile:
    path: Path
    sha256: str
    format: str = "peft"  # or "lora-network"
    training: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def adapter_name(self) -> str:
        # content-addressed, so the same file loads once however many stages name it
        return f"slider_{self.sha256[:16]}"

    @property
    def base_unet_sha256(self) -> str | None:
        return (self.training.get("base_model") or {}).get("unet_sha256")


def read_slider(path: str | Path) -> SliderFile:
    path = Path(path).expanduser()
    if path.suffix not in SLIDER_SUFFIXES:
        raise ValueError(f"slider {str(path)!r}: expected a .safetensors or .pt LoRA file")
    if not path.is_file():
        raise FileNotFoundError(f"slider {str(path)!r}: file not found")
    sidecar = path.with_suffix(".json")
    training = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    sha = file_sha256(path)
    return SliderFile(path=path, sha256=sha, format=file_format(path, sha), training=training)


@functools.lru_cache(maxsize=256)
def file_format(path: Path, sha256: str) -> str:
    """The slider's key format; read once per file content in a process."""
    from stages.generative.lora_network import read_state_dict, slider_format

    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                keys = list(fh.keys())
        except Exception as exc:  # noqa: BLE001 - any unreadable header is bad input
            raise ValueError(f"slider {path.name!r}: unreadable safetensors ({type(exc).__name__})") from None
    else:
        try:
            keys = list(read_state_dict(path))
        except ValueError as exc:
            raise ValueError(f"slider {path.name!r}: {exc}") from None
    try:
        return slider_format(keys)
    except ValueError as exc:
        raise ValueError(f"slider {path.name!r}: {exc}") from None


def slider_layers(slider: SliderFile, model_root: Path) -> dict[str, Any]:
    """{UNet module: (down, up, alpha)} of the slider, checked against the
    names and shapes of the UNet in `model_root` (ValueError when they differ)."""
    from stages.generative.lora_network import match_layers, model_layers, read_state_dict

    try:
        return match_layers(read_state_dict(slider.path), slider.format, model_layers(model_root))
    except ValueError as exc:
        raise ValueError(f"slider {slider.path.name!r}: {exc}") from None


def slider_record(path: str | Path) -> dict[str, Any] | None:
    """What a slider file says about itself: its sha256, the fingerprint of the
    training that made it (when a build trained it) and its training provenance.
    None when the file is missing or its provenance describes another file
    (e.g. a run killed between writing the two)."""
    try:
        slider = read_slider(path)
    except (OSError, ValueError):
        return None
    if slider.training.get("adapter_sha256") != slider.sha256:
        return None
    return {
        "path": str(path),
        "sha256": slider.sha256,
        "fingerprint": slider.training.get("training_fingerprint"),
        "training": slider.training,
    }


def check_slider_base(slider: SliderFile, unet_sha256: str, model: str) -> None:
    """A slider trained on another base model steers noise it never saw."""
    expected = slider.base_unet_sha256
    if expected is not None and expected != unet_sha256:
        raise ValueError(
            f"slider {slider.path.name!r} was trained on a base model whose UNet sha256 is "
            f"{expected[:12]}…, but model {model!r} has {unet_sha256[:12]}…"
        )


def ensure_slider_loaded(model: DiffusionModel, slider: SliderFile) -> str:
    """Load the slider into the model's UNet once; returns its adapter name."""
    from stages.generative.lora_network import peft_adapter

    unet = model.unet
    name = slider.adapter_name
    if name not in (getattr(unet, "peft_config", None) or {}):
        layers = slider_layers(slider, model.root)
        if slider.format == "lora-network":
            state, config = peft_adapter(layers)
            unet.load_lora_adapter(state, prefix=None, adapter_name=name, metadata=config)
        else:
            unet.load_lora_adapter(
                str(slider.path.parent),
                weight_name=slider.path.name,
                prefix="unet",
                adapter_name=name,
                local_files_only=True,
                use_safetensors=True,
            )
        unet.to(device=model.device, dtype=None if model.dtype == "float32" else model.torch_dtype)
        unet.requires_grad_(False)
        expected, got = len(layers), len(lora_layers(unet, name))
        if got != expected:
            raise ValueError(
                f"slider {slider.path.name!r}: {expected} LoRA layers in the file but "
                f"{got} attached to the UNet (a different architecture or key format?)"
            )
    return name


def lora_layers(unet: Any, adapter_name: str) -> list[Any]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [
        m
        for m in unet.modules()
        if isinstance(m, BaseTunerLayer) and adapter_name in getattr(m, "lora_A", {})
    ]


class PerSampleLoraScale:
    """Within the block, exactly the given adapters are active and the LoRA
    update of adapter a on batch element i is multiplied by `values[a][i]`:
    several slider scales, and several sliders, share one UNet call. Works by
    a forward hook on every `lora_A` of each adapter (the update is linear in
    lora_A's output, and batch is the leading axis of every UNet activation);
    an adapter scaled by 0 adds exactly 0 to an element."""

    def __init__(self, unet: Any, adapter_names: str | list[str]):
        self.unet = unet
        self.adapter_names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        self.values: Any = None  # a tensor (one adapter) or {adapter: tensor}
        self._handles: list[Any] = []

    def __enter__(self) -> PerSampleLoraScale:
        self.unet.enable_lora()
        self.unet.set_adapters(self.adapter_names, weights=[1.0] * len(self.adapter_names))
        for name in self.adapter_names:
            hook = functools.partial(self._scale, name)
            layers = lora_layers(self.unet, name)
            if not layers:
                raise ValueError(f"adapter {name!r} has no LoRA layers in this UNet")
            self._handles += [layer.lora_A[name].register_forward_hook(hook) for layer in layers]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _scale(self, name: str, module: Any, inputs: Any, output: Any) -> Any:
        values = self.values.get(name) if isinstance(self.values, dict) else self.values
        if values is None or output.shape[0] != values.shape[0]:
            got = None if values is None else values.shape[0]
            raise RuntimeError(f"per-sample LoRA scale: batch {output.shape[0]} but {got} scale values")
        return output * values.to(output.dtype).view(-1, *([1] * (output.ndim - 1)))


class LoraOff:
    """Within the block the UNet runs as the base model (every adapter off)."""

    def __init__(self, unet: Any):
        self.unet = unet

    def __enter__(self) -> LoraOff:
        if getattr(self.unet, "peft_config", None):
            self.unet.disable_lora()
        return self

    def __exit__(self, *exc: object) -> None:
        if getattr(self.unet, "peft_config", None):
            self.unet.enable_lora()
