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
    diverse_shrink,
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


@pytest.mark.parametrize("momentum, ti, steps, eps", [(0.0, 0, 5, 8 / 255), (1.0, 0, 5, 8 / 255),
                                                     (1.0, 5, 5, 8 / 255), (0.5, 3, 5, 8 / 255),
                                                     (0.5, 0, 10, 16 / 255)])
def test_linf_pgd_mi_ti_match_the_paper_reference(momentum, ti, steps, eps):
    nets = [tiny_net(0), tiny_net(1)]
    images, labels = fixed_inputs()
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
    # at least one pixel larger: a scale too close to 1 for int(W / scale) > W still pads (never a no-op)
    out_h, out_w = max(height + 1, int(height / scale)), max(width + 1, int(width / scale))
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


def pooled_net(seed: int) -> torch.nn.Module:
    """A tiny net for any input size (DI enlarges the input; TI "auto" needs wide images)."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.AdaptiveAvgPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(16, 3)).double().eval()
    return net.requires_grad_(False)


def seeded(n: int, first: int = 0) -> list:
    return [torch.Generator().manual_seed(first + i) for i in range(n)]


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_random_start_draws_from_each_sample_generator(norm):
    images, labels = fixed_inputs()
    eps = 8 / 255 if norm == "linf" else 0.5
    config = AttackConfig(norm=norm, epsilon=eps, steps=0, step_size=0.0, random_start=True)
    ours = craft(images, labels, [tiny_net(0)], config, seeded(4, 10)).numpy()
    for i, x in enumerate(images.numpy()):
        g = torch.Generator().manual_seed(10 + i)
        if norm == "linf":
            delta = ((torch.rand(x.shape, generator=g) * 2 - 1) * eps).double().numpy()
            assert np.abs(delta).max() <= eps and np.abs(delta).max() > eps / 2
        else:
            direction = torch.randn(x.shape, generator=g).double().numpy()
            radius = float(torch.rand((), generator=g)) * eps
            delta = direction / np.linalg.norm(direction) * radius
            assert np.linalg.norm(delta) == pytest.approx(radius, rel=1e-6) and radius <= eps
        assert np.abs(ours[i] - np.clip(x + delta, 0, 1)).max() < 1e-6
    # a sample's start depends on its own generator only: the same seed alone gives the same image
    alone = craft(images[1:2], labels[1:2], [tiny_net(0)], config, seeded(1, 11)).numpy()
    assert np.array_equal(alone[0], ours[1])


def test_l2_random_start_of_a_single_value_image_has_the_drawn_radius():
    images, labels = torch.full((3, 1, 1, 1), 0.5, dtype=torch.float64), torch.tensor([0, 1, 2])
    config = AttackConfig(norm="l2", epsilon=0.25, steps=0, step_size=0.0, random_start=True)
    ours = craft(images, labels, [], config, seeded(3)).flatten().tolist()
    for i, value in enumerate(ours):
        g = torch.Generator().manual_seed(i)
        sign = 1.0 if float(torch.randn((1, 1, 1), generator=g)) > 0 else -1.0   # |direction| may be below 1
        assert value == pytest.approx(0.5 + sign * float(torch.rand((), generator=g)) * 0.25, abs=1e-7)


def test_di_attack_draws_only_for_the_transforms_when_the_ensemble_is_not_random():
    """Draw order per step: the random-ensemble pick (only for `random`), then DI's draws."""
    nets = [pooled_net(0), pooled_net(1)]
    images, labels = fixed_inputs()
    config = AttackConfig(norm="linf", epsilon=8 / 255, steps=1, step_size=2 / 255, diversity_prob=1.0,
                          diversity_mode="shrink", diversity_scale=0.7)
    ours = craft(images, labels, nets, config, seeded(4)).numpy()
    delta = torch.zeros_like(images).requires_grad_(True)
    inputs = diverse_shrink(images + delta, 1.0, 0.7, seeded(4))
    (grad,) = torch.autograd.grad(ensemble_loss(nets, [inputs, inputs], labels, "loss"), delta)
    expected = (images + 2 / 255 * grad.sign()).clamp(0, 1).numpy()
    assert np.abs(ours - expected).max() < 1e-12


def test_ti_auto_kernel_follows_the_image_width():
    nets = [pooled_net(0)]
    images = torch.rand(2, 3, 12, 96, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    labels = torch.tensor([0, 2])

    def attack(ti):
        config = AttackConfig(norm="linf", epsilon=8 / 255, steps=3, step_size=2 / 255, momentum=1.0, ti_kernel=ti)
        return craft(images, labels, nets, config, seeded(2)).numpy()

    assert ti_kernel_width("auto", 96) == 5 and ti_kernel_width("auto", 12) == 3
    auto = attack("auto")
    assert np.array_equal(auto, attack(5)) and not np.array_equal(auto, attack(3))


def test_gaussian_kernel_is_the_normalised_float64_gaussian_in_the_input_dtype():
    from stages.adversarial.attacks import _gaussian_kernel

    kernel = _gaussian_kernel(7, 3.0, torch.zeros(1, 2, 9, 9, dtype=torch.float64))
    assert kernel.shape == (2, 1, 7, 7) and kernel.dtype == torch.float64
    for channel in kernel:
        assert np.abs(channel[0].numpy() - reference_ti_kernel(7, 3.0)).max() < 1e-16
        assert float(channel.sum()) == pytest.approx(1.0, abs=1e-15)
    assert _gaussian_kernel(5, 2.0, torch.zeros(1, 3, 9, 9)).dtype == torch.float32


def test_l1_means_are_per_sample_and_floored_only_at_zero():
    from stages.adversarial.attacks import _l1_means

    grads = torch.tensor([[[[0.1, -0.3]]], [[[2.0, -4.0]]], [[[0.0, 0.0]]]], dtype=torch.float64)
    means = _l1_means(grads)
    assert means.shape == (3, 1, 1, 1)
    assert means.flatten().tolist() == pytest.approx([0.2, 3.0, 1e-12], rel=1e-12)


def test_model_inputs_per_diversity_mode():
    from stages.adversarial.attacks import _model_inputs

    x = torch.rand(3, 3, 20, 20, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    plain = AttackConfig(norm="linf", epsilon=0.1, steps=1, step_size=0.1)
    assert all(inputs is x for inputs in _model_inputs(x, 2, plain, seeded(3)))
    shrink = AttackConfig(norm="linf", epsilon=0.1, steps=1, step_size=0.1, diversity_prob=0.6,
                          diversity_mode="shrink", diversity_scale=0.8)
    shared = _model_inputs(x, 3, shrink, seeded(3))
    assert len(shared) == 3 and shared[0] is shared[1] is shared[2]       # one draw for all surrogates
    assert torch.equal(shared[0], diverse_shrink(x, 0.6, 0.8, seeded(3)))
    enlarge = AttackConfig(norm="linf", epsilon=0.1, steps=1, step_size=0.1, diversity_prob=0.6,
                           diversity_scale=0.8)
    ours, generators = _model_inputs(x, 3, enlarge, seeded(3)), seeded(3)
    expected = [diverse_enlarge(x, 0.6, 0.8, generators) for _ in range(3)]   # one draw per surrogate
    assert len(ours) == 3
    for got, want in zip(ours, expected, strict=True):
        assert [tuple(i.shape) for i in got] == [tuple(i.shape) for i in want]
        assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    assert {tuple(i.shape) for per_model in ours for i in per_model} == {(3, 20, 20), (3, 25, 25)}


@pytest.mark.parametrize("mode", ["enlarge", "shrink"])
def test_di_attack_is_independent_of_batch_neighbours(mode):
    nets = [pooled_net(0), pooled_net(1)]
    images, labels = fixed_inputs()
    config = AttackConfig(norm="linf", epsilon=8 / 255, steps=3, step_size=2 / 255, random_start=True,
                          diversity_prob=0.7, diversity_mode=mode, diversity_scale=0.8)
    batch = craft(images, labels, nets, config, seeded(4)).numpy()
    alone = craft(images[2:3], labels[2:3], nets, config, seeded(1, 2)).numpy()
    assert np.abs(batch[2] - alone[0]).max() < 1e-12
    no_di = craft(images, labels, nets, AttackConfig(norm="linf", epsilon=8 / 255, steps=3, step_size=2 / 255,
                                                     random_start=True), seeded(4)).numpy()
    assert not np.array_equal(batch, no_di)


def test_logits_of_a_list_of_sizes_keeps_the_sample_order():
    from stages.adversarial.attacks import logits_of

    net = pooled_net(3)
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, s, s, generator=g, dtype=torch.float64) for s in (12, 14, 12, 13, 14)]
    ours = logits_of(net, images)
    expected = torch.cat([net(image[None]) for image in images])
    assert ours.shape == (5, 3) and torch.allclose(ours, expected, rtol=0, atol=1e-12)
    batch = torch.stack([images[0], images[2]])
    assert torch.equal(logits_of(net, batch), net(batch))


def test_random_ensemble_picks_come_from_each_sample_generator():
    from stages.adversarial.attacks import _random_picks

    picks = _random_picks([1.0, 3.0], seeded(50))
    draws = [float(torch.rand((), generator=g)) for g in seeded(50)]
    assert picks == [0 if u < 0.25 else 1 for u in draws]
    assert 0 < sum(picks) < 50


def test_random_ensemble_attack_steps_on_each_sample_pick():
    nets = [tiny_net(0), tiny_net(1)]
    images, labels = fixed_inputs()
    config = AttackConfig(norm="linf", epsilon=8 / 255, steps=2, step_size=2 / 255, ensemble="random",
                          weights=(1.0, 3.0))
    ours = craft(images, labels, nets, config, seeded(4, 20)).numpy()
    x0, generators = images.numpy(), seeded(4, 20)
    x, picked = x0.copy(), []
    for _ in range(2):
        for i, g in enumerate(generators):
            pick = 0 if float(torch.rand((), generator=g)) < 0.25 else 1
            picked.append(pick)
            grad = input_gradient([nets[pick]], x[i:i + 1], labels[i:i + 1])[0]
            x[i] = np.clip(np.clip(x[i] + 2 / 255 * np.sign(grad), x0[i] - 8 / 255, x0[i] + 8 / 255), 0, 1)
    assert set(picked) == {0, 1}
    assert np.abs(ours - x).max() < 1e-12


def test_weighted_loss_ensemble_attack_equals_repeating_the_heavier_surrogate():
    a, b = tiny_net(0), tiny_net(1)
    images, labels = fixed_inputs()

    def attack(nets, weights, ensemble="loss"):
        config = AttackConfig(norm="linf", epsilon=8 / 255, steps=3, step_size=2 / 255, weights=weights,
                              ensemble=ensemble)
        return craft(images, labels, nets, config, seeded(4)).numpy()

    weighted = attack([a, b], (1.0, 3.0))
    assert np.abs(weighted - attack([a, b, b, b], None)).max() < 1e-12
    assert not np.array_equal(weighted, attack([a, b], None))
    logits = attack([a, b], (1.0, 3.0), "logits")
    assert np.abs(logits - attack([a, b, b, b], None, "logits")).max() < 1e-12


def test_ensemble_loss_default_weights_are_equal():
    nets = [tiny_net(0), tiny_net(1)]
    images, labels = fixed_inputs()
    ce = [float(torch.nn.functional.cross_entropy(net(images), labels, reduction="sum")) for net in nets]
    assert float(ensemble_loss(nets, [images, images], labels, "loss")) == pytest.approx(sum(ce) / 2, rel=1e-12)


def test_di_enlarge_with_a_scale_near_one_still_pads_one_pixel():
    images = torch.rand(4, 3, 30, 30, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    ours = diverse_enlarge(images, 1.0, 0.99, seeded(4))              # int(30 / 0.99) = 30
    for i, image in enumerate(images.numpy()):
        draws = torch.rand(4, generator=torch.Generator().manual_seed(i)).tolist()
        assert ours[i].shape == (3, 31, 31)
        assert np.array_equal(ours[i].numpy(), reference_di(image, draws, 1.0, 0.99))


def test_di_draw_equal_to_p_leaves_the_image_unchanged():
    """apply ∈ [0, 1) transforms when apply < p, so P(transform) = p exactly; a draw equal to p does not."""
    images = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    p = torch.rand(4, generator=torch.Generator().manual_seed(9)).tolist()[0]
    assert torch.equal(diverse_enlarge(images, p, 0.9, seeded(1, 9))[0], images[0])
    assert torch.equal(diverse_shrink(images, p, 0.9, seeded(1, 9)), images)
    assert diverse_enlarge(images, np.nextafter(p, 1), 0.9, seeded(1, 9))[0].shape == (3, 35, 35)


def test_di_shrink_with_scale_one_shrinks_by_one_pixel_and_keeps_unapplied_samples():
    images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ours = diverse_shrink(images, 0.5, 1.0, seeded(6))
    applied = 0
    for i in range(6):
        apply, _, top, left = torch.rand(4, generator=torch.Generator().manual_seed(i)).tolist()
        if apply >= 0.5:
            assert torch.equal(ours[i], images[i])
            continue
        applied += 1
        small = torch.nn.functional.interpolate(images[i][None], size=(31, 31), mode="bilinear",
                                                align_corners=False)[0]
        expected = torch.zeros(3, 32, 32, dtype=torch.float64)
        expected[:, int(top):int(top) + 31, int(left):int(left) + 31] = small
        assert torch.equal(ours[i], expected)
    assert 0 < applied < 6
