"""The seed's adapters (shapes, commuting resize/conv, config round trip) and CKA's known properties."""
import pytest
import torch

from builder.adapters import adapter_from_config, build_adapter
from builder.cka import linear_cka


@pytest.mark.parametrize("kind,cin,cout,out", [
    ("conv1x1", (16, 18, 40), (40, 28, 28), (2, 40, 28, 28)),
    ("conv1x1", (16, 72, 160), (24, 56, 56), (2, 24, 56, 56)),
    ("patch_embed", (32, 36, 80), (197, 768), (2, 197, 768)),
    ("conv3d", (16, 8, 18, 40), (64, 4, 56, 56), (2, 64, 4, 56, 56)),
])
def test_adapter_output_shapes_and_round_trip(kind, cin, cout, out):
    a = build_adapter(kind, cin, cout)
    x = torch.randn(2, *cin)
    y = a(x)
    assert tuple(y.shape) == out
    b = adapter_from_config(a.config())
    b.load_state_dict(a.state_dict())
    assert torch.equal(b(x), y)


def test_conv1x1_resize_and_conv_commute():
    torch.manual_seed(0)
    up = build_adapter("conv1x1", (8, 10, 10), (4, 20, 20))
    x = torch.randn(1, 8, 10, 10)
    assert up.conv_first
    a = up(x)
    up.conv_first = False
    assert torch.allclose(up(x), a, atol=1e-5)


def test_conv1x1_adapter_is_tiny():
    a = build_adapter("conv1x1", (32, 36, 80), (40, 28, 28))
    assert a.num_params() == 32 * 40 + 40


def test_cka_properties():
    torch.manual_seed(0)
    x = torch.randn(64, 50)
    q, _ = torch.linalg.qr(torch.randn(50, 50))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 3 * x @ q) == pytest.approx(1.0, abs=1e-6)  # invariant to rotation and scale
    noise = torch.randn(64, 50)
    assert linear_cka(x, noise, debiased=True) < 0.1
    # plain CKA is inflated when features are many and samples few; the debiased one is not
    few_x, few_y = torch.randn(16, 5000), torch.randn(16, 5000)
    assert linear_cka(few_x, few_y) > 0.8 and abs(linear_cka(few_x, few_y, debiased=True)) < 0.15
    with pytest.raises(ValueError, match="same samples"):
        linear_cka(x, x[:10])


def test_least_squares_init_recovers_a_linear_map_and_training_improves():
    from builder.config import AdapterTrainConfig
    from training.adapters import fit_adapter

    torch.manual_seed(0)
    x = torch.randn(12, 6, 8, 8)
    true = torch.nn.Conv2d(6, 5, 1)
    with torch.no_grad():
        y = torch.nn.functional.interpolate(true(x), size=(4, 4), mode="bilinear", align_corners=False)
    ls = fit_adapter(build_adapter("conv1x1", (6, 8, 8), (5, 4, 4)), x, y,
                     AdapterTrainConfig(init="ls", epochs=1), progress=False)
    assert ls.rel_mse < 1e-3
    sgd = fit_adapter(build_adapter("conv1x1", (6, 8, 8), (5, 4, 4)), x, y,
                      AdapterTrainConfig(lr=1e-2, epochs=30, patience=30), progress=False)
    assert sgd.history[-1] < 0.5 * sgd.history[0] and sgd.rel_mse < 0.5


def test_task_loss_pulls_the_tail_output_towards_the_teacher():
    from builder.config import AdapterTrainConfig
    from training.adapters import fit_adapter, task_loss

    torch.manual_seed(0)
    x = torch.randn(16, 6, 8, 8)
    y = torch.randn(16, 5, 4, 4)  # feature targets unrelated to the teacher: only the task loss can match it
    tail = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(5, 3))
    true = build_adapter("conv1x1", (6, 8, 8), (5, 4, 4))
    with torch.no_grad():
        true.conv.weight.mul_(5)
        teacher = tail(true(x))  # reachable by some 1x1 adapter
    kls = []
    for w in (0.0, 5.0):
        a = build_adapter("conv1x1", (6, 8, 8), (5, 4, 4))
        fit_adapter(a, x, y, AdapterTrainConfig(lr=1e-2, epochs=40, patience=40, task_loss=w), tail=tail,
                    teacher=teacher, progress=False)
        with torch.no_grad():
            kls.append(task_loss(tail(a(x)), teacher).item())
    assert kls[1] < 0.5 * kls[0]
    with pytest.raises(ValueError, match="teacher"):
        fit_adapter(build_adapter("conv1x1", (6, 8, 8), (5, 4, 4)), x, y, AdapterTrainConfig(task_loss=1.0),
                    progress=False)
