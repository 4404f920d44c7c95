"""Tiny random Stable-Diffusion-shaped pipelines for tests: built from configs,
saved as a diffusers folder (safetensors) and loaded back through the real
loading path. Nothing is downloaded."""

from __future__ import annotations

import json
import shutil
import string
from pathlib import Path

TOKENIZER_MAX_LENGTH = 77


def write_tiny_tokenizer(out: Path) -> None:
    """A character-level CLIP BPE vocabulary (no merges) covering lowercase
    prompts, so any prompt the tests use tokenizes without unknown tokens."""
    out.mkdir(parents=True, exist_ok=True)
    symbols = list(string.ascii_lowercase + string.digits + ",.'-")
    vocab = ["<|startoftext|>", "<|endoftext|>"] + symbols + [s + "</w>" for s in symbols]
    (out / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
    (out / "merges.txt").write_text("#version: 0.2\n")


def build_tiny_pipeline(out: Path, prediction_type: str = "v_prediction") -> Path:
    """Save a tiny text-to-image pipeline (32x32 px, 16x16 latents) to `out`."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32),
        norm_num_groups=8,
        attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        use_linear_projection=True,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=8,
        sample_size=32,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=80,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=TOKENIZER_MAX_LENGTH,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            projection_dim=16,
        )
    )
    write_tiny_tokenizer(out / "_vocab")
    tokenizer = CLIPTokenizer(
        str(out / "_vocab" / "vocab.json"),
        str(out / "_vocab" / "merges.txt"),
        model_max_length=TOKENIZER_MAX_LENGTH,
        pad_token="<|endoftext|>",
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    shutil.rmtree(out / "_vocab")
    return out


_BUILT: dict[str, Path] = {}


def tiny_pipeline_dir() -> Path:
    """One tiny pipeline per test session, in a temp folder removed at exit."""
    if "pipeline" not in _BUILT:
        import atexit
        import tempfile

        root = Path(tempfile.mkdtemp(prefix="shiftforge-tiny-sd-"))
        atexit.register(shutil.rmtree, root, True)
        _BUILT["pipeline"] = build_tiny_pipeline(root / "tiny-sd")
    return _BUILT["pipeline"]


def write_random_slider(model_dir: Path, path: Path, alpha: float = 4.0, seed: int = 1) -> Path:
    """A slider with random (non-zero) LoRA weights for `model_dir`, saved
    through the same writer as trained sliders, so scales visibly matter."""
    import torch

    from stages.generative.models import load_fresh_model, unet_weight_sha256
    from stages.generative.slider_training import add_slider_adapter, save_slider

    model = load_fresh_model(str(model_dir), None, "cpu", "float32")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        config = add_slider_adapter(model.unet, rank=4, alpha=alpha, random_init=True)
    save_slider(
        model.unet,
        config,
        path,
        {"base_model": {"model": str(model_dir), "unet_sha256": unet_weight_sha256(str(model_dir))}},
    )
    return path
