"""CNS-Bench sliders (Concept Sliders LoRANetwork state dicts) against an
independent port of CNS-Bench's LoRA injection and sampler on a tiny UNet.

The port follows CNS-Bench's code (generation/trainscripts/textsliders/lora.py,
generation/sliding/load_network.py, call_lora_sd.py): network type "c3lier"
(Attention + ResnetBlock2D/Downsample2D/Upsample2D/DownBlock2D/UpBlock2D
parents), method "noxattn" (parents whose name holds attn2 or time_embed are
skipped), each Linear/Conv2d child gets `x -> W x + m · alpha/rank · up(down(x))`
with `down` copying a conv's kernel/stride/padding and `up` 1×1; the sampler
sets m = 0 while t > start_noise, else the slider scale, for the CFG pair.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from stages.generative.lora_network import target_modules
from stages.nuisance import NuisanceParams, NuisanceStage
from tests.stages.test_nuisance import prompt_batch
from tests.tiny_models import tiny_pipeline_dir

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PARENTS = ("Attention", "ResnetBlock2D", "Downsample2D", "Upsample2D", "DownBlock2D", "UpBlock2D")
SCALES = [0.0, 1.0, 2.5]


class PortedLoRA(torch.nn.Module):
    def __init__(self, layer: torch.nn.Module, rank: int, alpha: float):
        super().__init__()
        if isinstance(layer, torch.nn.Conv2d):
            rank = min(rank, layer.in_channels, layer.out_channels)
            self.lora_down = torch.nn.Conv2d(
                layer.in_channels, rank, layer.kernel_size, layer.stride, layer.padding, bias=False
            )
            self.lora_up = torch.nn.Conv2d(rank, layer.out_channels, 1, 1, bias=False)
        else:
            self.lora_down = torch.nn.Linear(layer.in_features, rank, bias=False)
            self.lora_up = torch.nn.Linear(rank, layer.out_features, bias=False)
        self.register_buffer("alpha", torch.tensor(alpha))
        self.scale = alpha / rank
        self.multiplier = 0.0
        self.base_forward = layer.forward
        layer.forward = self.forward

    def forward(self, x, *args):
        return self.base_forward(x) + self.lora_up(self.lora_down(x)) * self.multiplier * self.scale


def ported_network(unet, rank=4, alpha=1.0, seed=3) -> torch.nn.ModuleDict:
    network = torch.nn.ModuleDict()
    for name, module in unet.named_modules():
        if "attn2" in name or "time_embed" in name or type(module).__name__ not in PARENTS:
            continue
        for child_name, child in module.named_modules():
            if type(child).__name__ in ("Linear", "Conv2d"):
                key = f"lora_unet.{name}.{child_name}".replace(".", "_")
                if key not in network:
                    network[key] = PortedLoRA(child, rank, alpha)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for lora in network.values():
            for weight in (lora.lora_down.weight, lora.lora_up.weight):
                weight.copy_(torch.randn(weight.shape, generator=gen) * 0.3)
    return network


@torch.no_grad()
def ported_sample(pipe, network, prompt, negative, seed, steps, scale, start_noise, guidance=7.5):
    """CNS-Bench's sampling loop (text-to-image, CFG, slider gated at start_noise)."""
    cond, uncond = pipe.encode_prompt(prompt, "cpu", 1, True, negative)
    embeds = torch.cat([uncond, cond])
    pipe.scheduler.set_timesteps(steps)
    shape = (1, pipe.unet.config.in_channels, 16, 16)
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * pipe.scheduler.init_noise_sigma
    for t in pipe.scheduler.timesteps:
        for lora in network.values():
            lora.multiplier = 0.0 if t > start_noise else scale
        x = pipe.scheduler.scale_model_input(torch.cat([latents] * 2), t)
        noise_uncond, noise_text = pipe.unet(x, t, encoder_hidden_states=embeds).sample.chunk(2)
        noise = noise_uncond + guidance * (noise_text - noise_uncond)
        latents = pipe.scheduler.step(noise, t, latents).prev_sample
    image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    return ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()[0]


@pytest.fixture(scope="module")
def cns(tmp_path_factory):
    """(CNS slider .pt, images the port renders at SCALES, the port's layer names)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_pipeline_dir()), use_safetensors=True)
    network = ported_network(pipe.unet)
    path = tmp_path_factory.mktemp("cns") / "goldfish_heavy_snow_alpha1.0_rank4_noxattn_last.pt"
    torch.save(network.state_dict(), path)
    images = [
        ported_sample(pipe, network, "a picture of a goldfish", "blurry", 0, 4, s, 750) for s in SCALES
    ]
    return path, np.stack(images), sorted(network.keys())


def stage_for(path, sampler="branched") -> NuisanceStage:
    return NuisanceStage(
        NuisanceParams(
            stage="nuisance",
            model=str(tiny_pipeline_dir()),
            device="cpu",
            steps=4,
            negative_prompt="blurry",
            scales=SCALES,
            sampler=sampler,
            sliders=[{"shift": "heavy snow", "path": str(path), "class_name": "goldfish"}],
        )
    )


def generate(stage) -> np.ndarray:
    batch = prompt_batch()
    batch.meta[0]["seed"] = 0
    out = stage.apply(batch, stage.variants()[0])
    assert out.status == ["ok"] * len(SCALES), out.reasons
    return np.stack(out.images)


def test_cns_target_set_is_the_ported_layer_set(cns):
    from stages.generative.models import load_fresh_model

    unet = load_fresh_model(str(tiny_pipeline_dir()), None, "cpu", "float32").unet
    names = target_modules(unet, "cns")
    assert sorted(f"lora_unet_{n.replace('.', '_')}" for n in names) == cns[2]
    assert not any(".attn2." in n or "proj_in" in n or ".ff." in n for n in names)
    assert any(n.endswith("attn1.to_q") for n in names) and any("downsamplers" in n for n in names)
    wider = set(target_modules(unet, "all-blocks"))
    assert set(names) - wider == set() and any("proj_in" in n for n in wider - set(names))


@pytest.mark.parametrize("sampler", ["branched", "plain"])
def test_pt_slider_gives_the_images_of_cns_bench_sampler(cns, sampler):
    images = generate(stage_for(cns[0], sampler))
    diff = np.abs(images.astype(int) - cns[1].astype(int))
    assert diff.max() <= 1, diff.max()
    # the slider matters: scale 2.5 differs from scale 0 by far more than the tolerance
    assert np.abs(cns[1][2].astype(int) - cns[1][0].astype(int)).max() > 20


@pytest.mark.slow
def test_convert_slider_cli_gives_the_same_images(cns, tmp_path):
    out = tmp_path / "goldfish-heavy_snow.safetensors"
    cmd = [sys.executable, "-m", "pipeline", "convert-slider", str(cns[0]), "--model", str(tiny_pipeline_dir())]
    run = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["converted_from"]["format"] == "lora-network"
    assert record["converted_from"]["sha256"] == hashlib.sha256(cns[0].read_bytes()).hexdigest()
    assert record["base_model"]["unet_sha256"] and record["adapter_sha256"]
    np.testing.assert_array_equal(generate(stage_for(out)), generate(stage_for(cns[0])))
    again = subprocess.run([*cmd, "--out", str(tmp_path / "b.safetensors")], capture_output=True, timeout=300)
    assert again.returncode == 0 and (tmp_path / "b.safetensors").read_bytes() == out.read_bytes()


def test_cns_keys_in_a_safetensors_file_load_too(cns, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "goldfish.safetensors"
    save_file(torch.load(cns[0], weights_only=True), str(path))
    stage = stage_for(path)
    assert len(stage.weight_hashes()) > 2
    np.testing.assert_array_equal(generate(stage), generate(stage_for(cns[0])))


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda s: s.update({f"lora_unet_not_a_layer.lora_{x}.weight": torch.zeros(4, 4) for x in ("down", "up")}),
            "not in this UNet",
        ),
        (lambda s: s.update({k: torch.zeros(4, 7) for k in s if k.endswith("attn1_to_q.lora_down.weight")}), "shapes"),
        (lambda s: [s.pop(k) for k in [k for k in s if k.endswith("conv1.lora_up.weight")][:1]], "lacks"),
        (lambda s: s.update({"lora_unet_x.lora_mid.weight": torch.zeros(1)}), "unexpected tensor"),
    ],
)
def test_slider_for_another_unet_fails_at_planning(cns, tmp_path, edit, message):
    state = torch.load(cns[0], weights_only=True)
    edit(state)
    path = tmp_path / "other.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match=message) as info:
        stage_for(path).weight_hashes()
    assert "nuisance.sliders[0].path" in str(info.value)


def test_a_pickle_that_is_not_a_state_dict_is_refused(tmp_path):
    path = tmp_path / "junk.pt"
    torch.save({"net": [1, 2]}, path)
    with pytest.raises(ValueError, match="state dict"):
        stage_for(path).weight_hashes()
