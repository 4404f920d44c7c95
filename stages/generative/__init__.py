"""Shared machinery of the diffusion-backed stages (nuisance, styles) and of
slider training.

- `spec`: params shared by every diffusion stage and device/dtype choice
  (no torch import, so manifest validation stays light).
- `models`: loading pipelines from a local folder or the local HF cache,
  once per worker process, and the sha256 of every weight file.
- `sliders`: LoRA sliders (diffusers/peft format) in a UNet, with a
  per-sample scale so several scales share one batched UNet call.
- `sampling`: the denoising loops (a plain per-scale loop and the
  shared-prefix, batched-scale loop), prompt encoding, VAE decode.
- `slider_training`: the Concept Sliders objective; `cli`: `train-slider`.
"""
