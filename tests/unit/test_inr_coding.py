"""INR <-> bytes: the decoder rebuilt from the bitstream is bit-exact with the quantised model."""
import pytest
import torch

from builder.codec import CorruptBitstream
from builder.config import QuantConfig
from builder.inr import HNeRV, build_inr, decode_inr, encode_inr, hnerv_config, nerv_config, quantize_inr


def _model(arch):
    torch.manual_seed(0)
    if arch == "nerv":
        return build_inr(nerv_config(6, 48, 64, stem_dim=8, lower_width=8, mlp_dim=32))
    m = build_inr(hnerv_config(6, 48, 64, stem_dim=16, enc_dim=16))
    m.set_embeddings(torch.rand(6, 3, 48, 64))
    return m


@pytest.mark.parametrize("arch", ["nerv", "hnerv"])
@pytest.mark.parametrize("quant", [QuantConfig(), QuantConfig(bits=6, coder="zlib"), QuantConfig(bits=8, prune=0.3)],
                         ids=["8bit-ans", "6bit-zlib", "8bit-prune30"])
def test_decoded_model_is_bit_exact_with_quantised_model(arch, quant):
    model = _model(arch).eval()
    blob = encode_inr(model, quant)
    dec = decode_inr(blob)
    ref = quantize_inr(model, quant)
    assert dec.config == model.config and dec.quant == quant and dec.num_bytes == len(blob)
    for k, v in ref.state_dict().items():
        assert torch.equal(dec.model.state_dict()[k], v), k
    idx = torch.arange(6)
    with torch.no_grad():
        assert torch.equal(dec.model(idx), ref(idx))
        if not quant.prune:  # quantisation alone changes the output only a little
            assert (dec.model(idx) - model(idx)).abs().max() < (0.1 if quant.bits == 8 else 0.3)
    if quant.prune:
        w = [v for k, v in dec.model.stored_state_dict().items() if k.endswith(".weight") and v.ndim >= 2]
        zeros = sum((t == 0).sum().item() for t in w) / sum(t.numel() for t in w)
        assert zeros >= quant.prune - 0.01


def test_hnerv_stores_embeddings_not_encoder():
    model = _model("hnerv")
    dec = decode_inr(encode_inr(model)).model
    assert isinstance(dec, HNeRV) and dec.encoder is None
    assert (dec.embeddings - model.embeddings).abs().max() > 0  # quantised...
    assert torch.allclose(dec.embeddings, model.embeddings, atol=0.05)  # ...but close


def test_fewer_bits_and_pruning_give_fewer_bytes():
    model = _model("nerv")
    n8 = len(encode_inr(model, QuantConfig(bits=8)))
    assert len(encode_inr(model, QuantConfig(bits=6))) < n8
    assert len(encode_inr(model, QuantConfig(bits=8, prune=0.5))) < n8


def test_damaged_bytes_are_refused():
    blob = bytearray(encode_inr(_model("nerv")))
    blob[len(blob) // 2] ^= 0x40
    with pytest.raises(CorruptBitstream, match="checksum"):
        decode_inr(bytes(blob))
