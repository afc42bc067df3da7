"""The coder seen from training: QAT sees exactly the weights the coder will store; the rate term estimates its
bytes."""
import torch

from builder.codec import fake_quantize, ste_quantize
from builder.config import QuantConfig
from builder.inr import build_inr, encode_inr, inr_config, quantize_inr
from builder.inr.qat import quantization_aware, rate_bits
from training import fit_inr
from training.config import TrainConfig


def test_ste_quantize_forwards_the_coders_values_and_passes_gradients_through():
    w = torch.randn(8, 4, 3, 3, requires_grad=True)
    for bits, axis in ((6, 0), (4, None)):
        q = ste_quantize(w, bits, axis)
        assert torch.allclose(q, fake_quantize(w.detach(), bits, axis), atol=1e-6)
        assert len(torch.unique(q[0])) <= 2 ** bits
        (g,) = torch.autograd.grad((q * 3).sum(), w)
        assert torch.equal(g, torch.full_like(w, 3.0))


def test_quantization_aware_model_is_the_coded_model_and_leaves_float_weights():
    for arch, sizes in (("nerv", {"stem_dim": 8, "lower_width": 8, "mlp_dim": 32}), ("hnerv", {"stem_dim": 16})):
        model = build_inr(inr_config(arch, 4, 32, 48, **sizes)).eval()
        frames = torch.rand(4, 3, 32, 48)
        if arch == "hnerv":
            model.set_embeddings(frames)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        quant = QuantConfig(bits=5)
        idx = torch.arange(4)
        with torch.no_grad(), quantization_aware(model, quant):
            inside = model(idx)
        with torch.no_grad():
            coded = quantize_inr(model, quant)
            if arch == "hnerv":  # embeddings are a buffer, coded after training: compare with the float ones
                coded.embeddings.copy_(model.embeddings)
            assert torch.allclose(inside, coded(idx), atol=1e-4)
            assert not torch.allclose(inside, model(idx), atol=1e-4)  # the float model differs
        assert model.state_dict().keys() == before.keys()
        assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_fine_tuning_through_the_quantiser_trains_the_float_weights():
    model = build_inr(inr_config("nerv", 4, 32, 48, stem_dim=8, lower_width=8, mlp_dim=32))
    frames = torch.rand(4, 3, 32, 48)
    w0 = model.head.weight.detach().clone()
    with quantization_aware(model, QuantConfig(bits=6)):
        fit_inr(model, frames, TrainConfig(epochs=2), progress=False, init=False)
    assert not torch.equal(model.head.weight.detach(), w0)
    assert "parametrizations" not in "".join(model.state_dict())


def test_rate_estimate_tracks_the_coders_bytes_and_has_gradients():
    torch.manual_seed(0)
    model = build_inr(inr_config("nerv", 4, 32, 48, stem_dim=16, lower_width=16, mlp_dim=64))
    for bits in (8, 6):
        quant = QuantConfig(bits=bits)
        est, real = rate_bits(model, quant, noise=False).item() / 8, len(encode_inr(model, quant))
        assert 0.85 < est / real < 1.1, (bits, est, real)  # the coder's tables and header are not estimated
    bits = rate_bits(model, QuantConfig())
    bits.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_rate_term_makes_the_same_model_code_smaller():
    torch.manual_seed(0)
    frames = torch.rand(2, 3, 32, 48) * 0.2 + 0.4
    quant, sizes = QuantConfig(), {"stem_dim": 16, "lower_width": 16, "mlp_dim": 64}
    coded = []
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        model = build_inr(inr_config("nerv", 2, 32, 48, **sizes))
        pixels = 2 * 32 * 48
        fit_inr(model, frames, TrainConfig(epochs=40, rate_weight=weight), progress=False,
                penalty=(lambda m=model, w=weight: w * rate_bits(m, quant) / pixels) if weight else None)
        coded.append(len(encode_inr(model, quant)))
    assert coded[1] < 0.95 * coded[0], coded
