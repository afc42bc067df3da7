"""INR interface: shapes and FLOPs known without running, per-block features, the stride rule, Table 1."""
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from builder.inr import (HNeRV, INRConfig, NeRV, build_inr, choose_layout, hnerv_config, inr_config, nerv_config,
                         seed_size_rule)

TINY = dict(stem_dim=8, lower_width=8, mlp_dim=32)


def tiny_configs():
    return [
        nerv_config(6, 48, 64, **TINY),
        nerv_config(5, 40, 56, **TINY, activation="gelu", norm="none"),  # 40x56 -> padded canvas
        hnerv_config(6, 48, 64, stem_dim=16, enc_dim=16),
    ]


@pytest.mark.parametrize("cfg", tiny_configs(), ids=lambda c: f"{c.arch}-{c.out_width}x{c.out_height}")
def test_block_shapes_params_and_flops_are_static(cfg):
    torch.manual_seed(0)
    model = build_inr(cfg).eval()
    rows = cfg.block_info()
    out, feats = model.forward_intermediates([0, 1, 2])
    # features after stem and each block have exactly the declared shapes
    declared = [r.shape for r in rows if r.name == "stem" or r.name.startswith("block")]
    assert [tuple(f.shape[1:]) for f in feats] == declared
    assert tuple(out.shape) == (3, 3, cfg.out_height, cfg.out_width)
    assert sum(r.params for r in rows) == model.num_params()
    with FlopCounterMode(display=False) as fc:
        model(torch.tensor([0]))
    assert math.isclose(fc.get_total_flops() / 1e9, sum(r.gflops for r in rows), rel_tol=1e-9)


@pytest.mark.parametrize("cfg", tiny_configs(), ids=lambda c: c.arch)
def test_last_block_features_through_head_equal_forward(cfg):
    torch.manual_seed(0)
    model = build_inr(cfg).eval()
    if isinstance(model, HNeRV):
        model.embeddings.normal_()
    idx = torch.tensor([0, 3, cfg.frames - 1])
    with torch.no_grad():
        full = model(idx)
        last = model.features(idx, exit_block=cfg.num_blocks)
        assert torch.equal(model.to_rgb(last), full)
        # each exit equals running the blocks by hand from the previous exit
        x = model.features(idx, exit_block=0)
        for k, block in enumerate(model.blocks, start=1):
            x = block(x)
            assert torch.equal(model.features(idx, exit_block=k), x)


def test_out_of_range_indices_and_exits_are_clear_errors():
    model = build_inr(nerv_config(4, 48, 64, **TINY))
    with pytest.raises(IndexError, match="has 4 frames"):
        model(torch.tensor([4]))
    with pytest.raises(IndexError, match="has 4 frames"):
        model.features([-1], exit_block=1)
    with pytest.raises(IndexError, match="exit block 9"):
        model.features([0], exit_block=9)
    with pytest.raises(TypeError, match="integers"):
        model(torch.tensor([0.5]))


@pytest.mark.parametrize("size,strides,canvas", [
    ((1280, 720), (5, 2, 2, 2, 2), (1280, 720)),
    ((320, 240), (5, 2, 2, 2), (320, 240)),
    ((640, 480), (5, 2, 2, 2, 2), (640, 480)),
    ((768, 576), (4, 3, 2, 2, 2), (768, 576)),
])
def test_stride_rule_reaches_common_sizes_exactly(size, strides, canvas):
    w, h = size
    got, ch, cw = choose_layout(h, w)
    assert got == strides and (cw, ch) == canvas


@pytest.mark.parametrize("w,h", [(1000, 562), (640, 272), (176, 144), (33, 17)])
def test_any_size_encodes_by_padding_and_cropping(w, h):
    strides, ch, cw = choose_layout(h, w)
    p = math.prod(strides)
    assert ch % p == 0 and cw % p == 0 and ch >= h and cw >= w
    assert (ch * cw) / (h * w) < 1.35  # padding stays modest
    cfg = nerv_config(2, h, w, **TINY)
    assert build_inr(cfg)(torch.tensor([1])).shape == (1, 3, h, w)


def test_seed_table1_and_nerv_channel_rule():
    assert seed_size_rule(40) == (24, 124) and seed_size_rule(41) == (24, 148)
    assert seed_size_rule(132) == (32, 148) and seed_size_rule(301) == (128, 196)
    cfg = nerv_config(132, 720, 1280)  # Big Buck Bunny: 5 blocks, Table 1 row 100 < n <= 150
    assert cfg.strides == (5, 2, 2, 2, 2) and cfg.stem_channels == 32 and cfg.channels == (32, 148, 148, 148, 148)
    assert cfg.grid == (9, 16)


def test_config_round_trip_and_validation():
    cfg = hnerv_config(10, 240, 320)
    assert INRConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.kernels == (1, 3, 5, 5)  # HNeRV's growing kernels
    assert all(a > b for a, b in zip((cfg.stem_channels,) + cfg.channels, cfg.channels))  # per-block reduction
    with pytest.raises(ValueError, match="arch"):
        inr_config("siren", 4, 32, 32)
    with pytest.raises(ValueError, match="unknown keys"):
        INRConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_hnerv_embeddings_drive_decoding_and_encoder_is_not_stored():
    torch.manual_seed(0)
    cfg = hnerv_config(4, 48, 64, stem_dim=16, enc_dim=16)
    model = HNeRV(cfg).eval()
    frames = torch.rand(4, 3, 48, 64)
    model.set_embeddings(frames)
    with torch.no_grad():
        assert torch.allclose(model(torch.arange(4)), model(torch.arange(4), frames), atol=1e-5)
    assert not any(k.startswith("encoder.") for k in model.stored_state_dict())
    assert "embeddings" in model.stored_state_dict()
    dec_only = HNeRV(cfg, with_encoder=False)
    with pytest.raises(RuntimeError, match="without its encoder"):
        dec_only.embed(frames)


def test_nerv_rejects_wrong_config():
    with pytest.raises(ValueError):
        NeRV(hnerv_config(4, 48, 64))
