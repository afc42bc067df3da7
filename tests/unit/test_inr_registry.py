"""INR families are registered: duplicates refused, unknown names list the registered ones, stored dicts of
today's format load, and a family defined elsewhere (here: in this test) works everywhere without edits."""
import json
import subprocess
import sys
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from torch import Tensor, nn

import builder.inr.registry as registry
from builder.config import QuantConfig
from builder.inr import (INR, BlockInfo, HNeRVConfig, INRConfig, NeRV, NeRVConfig, build_inr, choose_layout,
                         decode_inr, encode_inr, get_inr_family, hnerv_config, inr_config, list_inr_families,
                         nerv_config, quantize_inr, register_inr)
from builder.inr.layers import nerv_decoder

# config dicts exactly as today's code stores them (bitstream header and entry.json "inr": the union of fields)
OLD_NERV = {"arch": "nerv", "frames": 32, "out_height": 48, "out_width": 64, "height": 48, "width": 64,
            "strides": [4, 2, 2], "channels": [16, 16, 16], "kernels": [3, 3, 3], "stem_channels": 16,
            "mlp_dim": 64, "pe_base": 1.25, "pe_levels": 40, "embed_dim": 16, "enc_dim": 64, "activation": "relu",
            "norm": "instance", "head_kernel": 1, "out_act": "tanh"}
OLD_HNERV = {"arch": "hnerv", "frames": 32, "out_height": 48, "out_width": 64, "height": 48, "width": 64,
             "strides": [4, 2, 2], "channels": [27, 22, 18], "kernels": [1, 3, 5], "stem_channels": 32,
             "mlp_dim": 512, "pe_base": 1.25, "pe_levels": 40, "embed_dim": 16, "enc_dim": 16, "activation": "gelu",
             "norm": "none", "head_kernel": 3, "out_act": "sigmoid"}


def test_builtin_families_are_registered():
    assert list_inr_families() == ["dnerv", "hnerv", "nerv"]
    assert list_inr_families(shared=False) == ["hnerv", "nerv"]  # what `encode --arch` offers
    assert get_inr_family("nerv").model is NeRV and get_inr_family("nerv").config is NeRVConfig
    assert "mlp_dim" in get_inr_family("nerv").size_options
    assert "mlp_dim" not in get_inr_family("hnerv").size_options


def test_registry_refuses_duplicate_names(monkeypatch):
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))
    with pytest.raises(ValueError, match="'nerv' is already registered"):
        register_inr("nerv", config=NeRVConfig, sizing=nerv_config)(NeRV)
    with pytest.raises(ValueError, match="arch must be 'other'"):
        register_inr("other", config=NeRVConfig, sizing=nerv_config)(NeRV)
    assert get_inr_family("nerv").model is NeRV


def test_unknown_arch_errors_list_the_registered_families():
    for call in (lambda: get_inr_family("siren"), lambda: inr_config("siren", 4, 32, 32),
                 lambda: INRConfig.from_dict({**OLD_NERV, "arch": "siren"})):
        with pytest.raises(ValueError, match="unknown INR arch 'siren'; registered: dnerv, hnerv, nerv"):
            call()


@pytest.mark.parametrize("old,cls", [(OLD_NERV, NeRVConfig), (OLD_HNERV, HNeRVConfig)], ids=["nerv", "hnerv"])
def test_todays_stored_config_dicts_load_and_are_written_back_unchanged(old, cls):
    cfg = INRConfig.from_dict(json.loads(json.dumps(old)))
    assert type(cfg) is cls and cfg.arch == old["arch"] and cfg.channels == tuple(old["channels"])
    assert not hasattr(cfg, "embed_dim" if cls is NeRVConfig else "mlp_dim")  # the other family's fields are gone
    assert json.dumps(cfg.to_dict()) == json.dumps(old)  # same keys, same order: stored bytes do not change
    assert cls.from_dict(old) == cfg
    with pytest.raises(ValueError, match="cannot load"):
        (HNeRVConfig if cls is NeRVConfig else NeRVConfig).from_dict(old)


def test_foreign_fields_with_non_default_values_and_unknown_keys_are_refused():
    with pytest.raises(ValueError, match="embed_dim=8 does not apply to arch 'nerv'"):
        INRConfig.from_dict({**OLD_NERV, "embed_dim": 8})
    with pytest.raises(ValueError, match="mlp_dim=64 does not apply to arch 'hnerv'"):
        INRConfig.from_dict({**OLD_HNERV, "mlp_dim": 64})
    with pytest.raises(ValueError, match="unknown keys"):
        INRConfig.from_dict({**OLD_HNERV, "bogus": 1})
    with pytest.raises(ValueError, match="has no 'arch'"):
        INRConfig.from_dict({k: v for k, v in OLD_NERV.items() if k != "arch"})
    with pytest.raises(TypeError, match="shared base"):
        INRConfig(frames=1, out_height=8, out_width=8, height=8, width=8, strides=(2,), channels=(4,), kernels=(3,),
                  stem_channels=4)
    with pytest.raises(ValueError, match="do\\(es\\) not apply to arch 'hnerv'"):
        inr_config("hnerv", 4, 32, 32, mlp_dim=64)


def test_block_rows_carry_their_exit_number():
    rows = hnerv_config(4, 48, 64, stem_dim=16, enc_dim=16).block_info()
    assert [(r.name, r.exit) for r in rows] == [("embeddings", None), ("stem", 0), ("block1", 1), ("block2", 2),
                                                ("block3", 3), ("head", None)]
    assert [r.exit for r in nerv_config(4, 48, 64).block_info()] == [0, 1, 2, 3, None]


# --- a family defined outside builder/inr: one class per concept, one registration, nothing else edited -------

@dataclass(frozen=True)
class LatentConfig(INRConfig):
    arch: ClassVar[str] = "latent_test"
    latent_dim: int = 3

    def stem_info(self) -> list[BlockInfo]:
        gh, gw = self.grid
        latents = self.frames * self.latent_dim * gh * gw
        proj = self.latent_dim * self.stem_channels + self.stem_channels
        return [BlockInfo("stem", self.stem_channels, gh, gw, 1, 1, latents + proj,
                          2.0 * self.latent_dim * self.stem_channels * gh * gw / 1e9, exit=0)]


def latent_config(frames: int, height: int, width: int, *, stem_dim: int = 4, latent_dim: int = 3) -> LatentConfig:
    strides, ch, cw = choose_layout(height, width)
    return LatentConfig(frames=frames, out_height=height, out_width=width, height=ch, width=cw, strides=strides,
                        channels=(stem_dim,) * len(strides), kernels=(3,) * len(strides), stem_channels=stem_dim,
                        latent_dim=latent_dim)


class Latent(INR):
    """A learned latent grid per frame (auto-decoder), projected by a 1x1 conv: only the index is an input."""

    recipe = "hnerv"
    quant_axes = {"latents": 1}

    def __init__(self, config: LatentConfig) -> None:
        super().__init__(config)
        self.blocks, self.head = nerv_decoder(config)
        self.latents = nn.Parameter(torch.randn(config.frames, config.latent_dim, *config.grid))
        self.proj = nn.Conv2d(config.latent_dim, config.stem_channels, 1)

    def stem(self, idx: Tensor, frames: Tensor | None = None) -> Tensor:
        return self.proj(self.latents[idx])


@pytest.fixture
def latent_family(monkeypatch):
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))  # registered for this test only
    register_inr("latent_test", config=LatentConfig, sizing=latent_config)(Latent)
    return "latent_test"


def test_a_family_registered_elsewhere_builds_trains_codes_and_decodes(latent_family):
    from training import fit_inr
    from training.config import TrainConfig

    cfg = inr_config(latent_family, 3, 16, 24, stem_dim=4)
    assert INRConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert list(cfg.to_dict())[:2] == ["arch", "frames"] and "latent_dim" in cfg.to_dict()
    torch.manual_seed(0)
    model = build_inr(cfg)
    assert sum(r.params for r in cfg.block_info()) == model.num_params()
    frames = torch.rand(3, 3, 16, 24)
    res = fit_inr(model, frames, TrainConfig(recipe=model.recipe, epochs=2), progress=False)
    assert res.epochs == 2
    quant = QuantConfig(bits=8)
    blob = encode_inr(model, quant)
    dec = decode_inr(blob)
    assert type(dec.model) is Latent and dec.config == cfg
    with torch.no_grad():
        assert torch.equal(dec.model(torch.arange(3)), quantize_inr(model, quant)(torch.arange(3)))
        assert torch.equal(dec.model.features([1], 0), dec.model.proj(dec.model.latents[[1]]))


def test_cli_arch_choices_come_from_the_registry(latent_family, tmp_path, capsys):
    from builder.cli import build_parser, main

    args = build_parser().parse_args(["encode", "clip.mp4", "--id", "x", "--arch", latent_family])
    assert args.arch == latent_family
    # a size flag the family's sizing rule does not take is refused before any work
    code = main(["encode", str(tmp_path / "missing.mp4"), "--id", "x", "--arch", "hnerv", "--mlp-dim", "64",
                 "--store", str(tmp_path), "--json"])
    assert code == 1 and "--mlp-dim applies to --arch nerv only" in capsys.readouterr().out


def test_training_imports_nothing_from_builder():
    code = ("import sys, training, training.adapters, training.joint, training.metrics, training.config; "
            "print(sorted(m for m in sys.modules if m == 'builder' or m.startswith('builder.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
