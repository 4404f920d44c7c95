"""The attacks against independent reimplementations of their papers, on fixed inputs.

The references below are written from the published definitions, in NumPy,
with torch used only for the model's input gradient:
- PGD / I-FGSM under L∞: x ← clip(clip(x + α·sign(g), x0 ± ε), 0, 1);
- MI-FGSM: g ← μ·g + ∇ / mean|∇| (the paper's L1 normalisation), step on sign(g);
- TI-FGSM: ∇ convolved (zero padding, "SAME") with the normalised outer product
  of a Gaussian pdf sampled on linspace(−nsig, nsig, k), before the momentum;
- DI-FGSM: nearest-neighbour resize to rnd ∈ [W, W/scale), mid-grey padding to
  W/scale at a random offset, with probability p.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from stages.adversarial.attacks import (  # noqa: E402
    AttackConfig,
    craft,
    diverse_enlarge,
    ensemble_loss,
    quantise_within_budget,
    ti_kernel_width,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 12 * 12, 3)).double().eval()
    return net.requires_grad_(False)


def fixed_inputs(n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(3)
    images = torch.from_numpy(np.rint(rng.uniform(0, 255, (n, 3, 12, 12))) / 255.0)
    return images, torch.tensor([0, 1, 2, 1][:n])


def input_gradient(nets, x: np.ndarray, labels: torch.Tensor) -> np.ndarray:
    """∇_x of the mean over nets of the summed cross-entropy (the only torch in the references)."""
    xt = torch.from_numpy(x).requires_grad_(True)
    loss = sum(torch.nn.functional.cross_entropy(net(xt), labels, reduction="sum") for net in nets) / len(nets)
    return torch.autograd.grad(loss, xt)[0].numpy()


def reference_ti_kernel(k: int, nsig: float) -> np.ndarray:
    x = np.linspace(-nsig, nsig, k)
    pdf = np.exp(-x * x / 2) / np.sqrt(2 * np.pi)
    kernel = np.outer(pdf, pdf)
    return kernel / kernel.sum()


def reference_smooth(grad: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    k = kernel.shape[0] // 2
    padded = np.pad(grad, ((0, 0), (0, 0), (k, k), (k, k)))
    out = np.zeros_like(grad)
    height, width = grad.shape[-2:]
    for dy in range(kernel.shape[0]):
        for dx in range(kernel.shape[1]):
            out += kernel[dy, dx] * padded[:, :, dy:dy + height, dx:dx + width]
    return out


def reference_mi_ti_fgsm(nets, images, labels, eps, alpha, steps, mu, kernel) -> np.ndarray:
    x0 = images.numpy()
    x, g = x0.copy(), np.zeros_like(x0)
    for _ in range(steps):
        grad = input_gradient(nets, x, labels)
        if kernel is not None:
            grad = reference_smooth(grad, kernel)
        if mu:
            g = mu * g + grad / np.abs(grad).mean(axis=(1, 2, 3), keepdims=True)
            grad = g
        x = np.clip(np.clip(x + alpha * np.sign(grad), x0 - eps, x0 + eps), 0, 1)
    return x


@pytest.mark.parametrize("momentum, ti", [(0.0, 0), (1.0, 0), (1.0, 5), (0.5, 3)])
def test_linf_pgd_mi_ti_match_the_paper_reference(momentum, ti):
    nets = [tiny_net(0), tiny_net(1)]
    images, labels = fixed_inputs()
    eps, steps = 8 / 255, 5
    config = AttackConfig(norm="linf", epsilon=eps, steps=steps, step_size=2 / 255, momentum=momentum,
                          ti_kernel=ti, ti_nsig=3.0)
    ours = craft(images, labels, nets, config, [torch.Generator().manual_seed(i) for i in range(4)]).numpy()
    kernel = reference_ti_kernel(ti, 3.0) if ti else None
    reference = reference_mi_ti_fgsm(nets, images, labels, eps, 2 / 255, steps, momentum, kernel)
    assert np.abs(ours - reference).max() < 1e-9
    clean = np.rint(images.numpy().transpose(0, 2, 3, 1) * 255).astype(np.uint8)
    for c, a, r in zip(clean, ours.transpose(0, 2, 3, 1), reference.transpose(0, 2, 3, 1)):
        assert np.array_equal(quantise_within_budget(c, a, "linf", eps)[0],
                              quantise_within_budget(c, r, "linf", eps)[0])


def test_targeted_step_descends_the_target_loss():
    nets = [tiny_net(0)]
    images, _ = fixed_inputs(2)
    target = torch.tensor([2, 2])
    config = AttackConfig(norm="linf", epsilon=4 / 255, steps=1, step_size=4 / 255, targeted=True)
    ours = craft(images, target, nets, config, [torch.Generator() for _ in range(2)]).numpy()
    grad = input_gradient(nets, images.numpy(), target)
    expected = np.clip(images.numpy() - 4 / 255 * np.sign(grad), 0, 1)
    assert np.abs(ours - expected).max() < 1e-12


def reference_di(image: np.ndarray, draws: list[float], prob: float, scale: float) -> np.ndarray:
    """One DI-FGSM transform of a C×H×W image from its four uniform draws (apply, size, top, left)."""
    apply, size, top, left = draws
    channels, height, width = image.shape
    out_h, out_w = int(height / scale), int(width / scale)
    if apply >= prob:
        return image
    rnd_h, rnd_w = height + int(size * (out_h - height)), width + int(size * (out_w - width))
    rows = np.floor(np.arange(rnd_h) * height / rnd_h).astype(int)  # nearest neighbour
    cols = np.floor(np.arange(rnd_w) * width / rnd_w).astype(int)
    resized = image[:, rows][:, :, cols]
    canvas = np.full((channels, out_h, out_w), 0.5)
    pad_top, pad_left = int(top * (out_h - rnd_h + 1)), int(left * (out_w - rnd_w + 1))
    canvas[:, pad_top:pad_top + rnd_h, pad_left:pad_left + rnd_w] = resized
    return canvas


def test_di_enlarges_and_pads_with_grey_as_the_paper():
    images = torch.rand(6, 3, 30, 30, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours = diverse_enlarge(images, 0.7, 0.8, [torch.Generator().manual_seed(i) for i in range(6)])
    sizes = set()
    for i, image in enumerate(images.numpy()):
        draws = torch.rand(4, generator=torch.Generator().manual_seed(i)).tolist()
        expected = reference_di(image, draws, 0.7, 0.8)
        assert ours[i].shape == expected.shape
        assert np.array_equal(ours[i].numpy(), expected)
        sizes.add(expected.shape[-1])
    assert sizes == {30, 37}  # untouched, or padded to int(30 / 0.8)


def test_di_applies_with_probability_p_and_every_applied_draw_changes_the_input():
    images = torch.zeros(1, 3, 32, 32)
    generator = [torch.Generator().manual_seed(5)]
    applied = [diverse_enlarge(images, 0.5, 0.9, generator)[0].shape[-1] != 32 for _ in range(2000)]
    assert abs(np.mean(applied) - 0.5) < 0.035  # an applied draw always pads to 35 px: never a no-op


def test_ti_kernel_auto_scales_with_the_image():
    assert [ti_kernel_width("auto", w) for w in (32, 64, 224, 299, 600)] == [3, 3, 11, 15, 29]
    assert ti_kernel_width(7, 32) == 7


def test_weighted_and_random_ensembles():
    nets = [tiny_net(0), tiny_net(1)]
    images, labels = fixed_inputs()
    ce = [torch.nn.functional.cross_entropy(net(images), labels, reduction="none") for net in nets]
    weighted = ensemble_loss(nets, [images, images], labels, "loss", [1.0, 3.0])
    assert float(weighted) == pytest.approx(float((ce[0].sum() + 3 * ce[1].sum()) / 4), rel=1e-12)
    picks = [1, 0, 0, 1]
    random = ensemble_loss(nets, [images, images], labels, "random", [1.0, 1.0], picks)
    assert float(random) == pytest.approx(float(sum(ce[m][i] for i, m in enumerate(picks))), rel=1e-12)
    logits = ensemble_loss(nets, [images, images], labels, "logits", [1.0, 3.0])
    mean_logits = (nets[0](images) + 3 * nets[1](images)) / 4
    assert float(logits) == pytest.approx(float(torch.nn.functional.cross_entropy(
        mean_logits, labels, reduction="sum")), rel=1e-12)


def test_random_ensemble_picks_follow_the_weights():
    from stages.adversarial.attacks import _random_picks

    generators = [torch.Generator().manual_seed(i) for i in range(4000)]
    picks = _random_picks([1.0, 3.0], generators)
    assert abs(np.mean(picks) - 0.75) < 0.03


def test_l2_pgd_matches_the_reference():
    nets = [tiny_net(2)]
    images, labels = fixed_inputs()
    eps, alpha, steps = 0.5, 0.2, 4
    config = AttackConfig(norm="l2", epsilon=eps, steps=steps, step_size=alpha)
    ours = craft(images, labels, nets, config, [torch.Generator() for _ in range(4)]).numpy()
    x0 = images.numpy()
    x = x0.copy()
    for _ in range(steps):
        grad = input_gradient(nets, x, labels)
        norms = np.sqrt((grad ** 2).sum(axis=(1, 2, 3), keepdims=True))
        delta = x + alpha * grad / norms - x0
        delta_norms = np.sqrt((delta ** 2).sum(axis=(1, 2, 3), keepdims=True))
        delta = delta * np.minimum(1.0, eps / delta_norms)
        x = np.clip(x0 + delta, 0, 1)
    assert np.abs(ours - x).max() < 1e-9
    assert np.sqrt(((ours - x0) ** 2).sum(axis=(1, 2, 3))).max() <= eps + 1e-12


def test_di_shrink_matches_torchattacks_rule():
    from stages.adversarial.attacks import diverse_shrink

    images = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ours = diverse_shrink(images, 1.0, 0.9, [torch.Generator().manual_seed(i) for i in range(5)])
    for i in range(5):
        _, size, top, left = torch.rand(4, generator=torch.Generator().manual_seed(i)).tolist()
        rnd = 28 + int(size * 4)                   # [int(0.9·32), 32) = 28..31: never a no-op
        assert 28 <= rnd <= 31
        small = torch.nn.functional.interpolate(images[i][None], size=(rnd, rnd), mode="bilinear",
                                                align_corners=False)[0]
        pad_top, pad_left = int(top * (32 - rnd)), int(left * (32 - rnd))
        expected = torch.zeros(3, 32, 32, dtype=torch.float64)
        expected[:, pad_top:pad_top + rnd, pad_left:pad_left + rnd] = small
        assert torch.equal(ours[i], expected)
