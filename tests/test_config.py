"""Config dataclasses: strict YAML round trips, helpful errors, presets."""
from pathlib import Path

import pytest

import artok
from artok.config import ConfigError, ConvEncoderConfig, QuantizerConfig, TokenizerConfig
from artok.registry import TOKENIZER_PRESETS, tokenizer_config

CONFIGS = Path(__file__).parent.parent / "configs"


@pytest.mark.parametrize("name", sorted(TOKENIZER_PRESETS))
def test_presets_round_trip_through_yaml(name, tmp_path):
    cfg = tokenizer_config(name)
    cfg.to_yaml(tmp_path / "c.yaml")
    assert TokenizerConfig.from_yaml(tmp_path / "c.yaml") == cfg
    assert TokenizerConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.quantizer.unused_phi_convs() == [], "presets must not carry φ convolutions no scale uses"


@pytest.mark.parametrize("name", sorted(TOKENIZER_PRESETS))
def test_configs_dir_matches_registry(name):
    sub = "tiny" if name.startswith("tiny-") else "tokenizer"
    path = CONFIGS / sub / f"{name}.yaml"
    assert path.exists(), f"{path} missing: run artok.registry.dump_tokenizer_presets('configs')"
    assert TokenizerConfig.from_yaml(path) == tokenizer_config(name)


def test_unknown_key_is_named_with_suggestion():
    data = tokenizer_config("tiny-var-vqvae").to_dict()
    data["quantizer"]["codebok_size"] = data["quantizer"].pop("codebook_size")
    with pytest.raises(ConfigError, match=r"unknown key 'codebok_size'.*did you mean 'codebook_size'"):
        TokenizerConfig.from_dict(data)
    with pytest.raises(ConfigError, match="unknown key 'imagesize'"):
        TokenizerConfig.from_yaml("imagesize: 3\nlatent_channels: 4\n")


def test_wrong_types_and_values_are_named():
    with pytest.raises(ConfigError, match=r"quantizer.codebook_size: expected an integer"):
        TokenizerConfig.from_dict({"quantizer": {"codebook_size": "many"}})
    with pytest.raises(ConfigError, match="strictly increasing"):
        QuantizerConfig(scales=(1, 4, 2))
    with pytest.raises(ConfigError, match="unknown encoder 'cnv'.*did you mean 'conv'"):
        TokenizerConfig.from_dict({"encoder": {"kind": "cnv"}})
    with pytest.raises(ConfigError, match="last quantizer scale is 8"):
        TokenizerConfig(image_size=256, encoder=ConvEncoderConfig(), quantizer=QuantizerConfig(scales=(1, 2, 8)))
    with pytest.raises(ConfigError, match="not divisible by norm_groups"):
        ConvEncoderConfig(ch=20)
    with pytest.raises(ConfigError, match="'vq' takes one scale"):
        QuantizerConfig(kind="vq", scales=(1, 2))


def test_overrides_and_preset_lookup():
    cfg = artok.tokenizer_config("var-vqvae-f16", **{"quantizer.codebook_size": 8192, "encoder.ch": 128})
    assert cfg.quantizer.codebook_size == 8192 and cfg.encoder.ch == 128
    with pytest.raises(ConfigError, match="unknown key 'codebook'.*did you mean 'codebook_size'"):
        artok.tokenizer_config("var-vqvae-f16", **{"quantizer.codebook": 1})
    with pytest.raises(ConfigError, match="unknown tokenizer preset 'var-vqvae-f61'.*did you mean 'var-vqvae-f16'"):
        artok.tokenizer_config("var-vqvae-f61")


def test_unused_phi_is_reported():
    assert QuantizerConfig(scales=(1, 2, 4), share_quant_resi=4).unused_phi_convs() == [1]
    assert QuantizerConfig(scales=(1, 2, 4), share_quant_resi=4, quant_resi=0.0).unused_phi_convs() == []


def test_a_new_encoder_kind_is_spelled_once_and_builds_inside_a_tokenizer():
    from dataclasses import dataclass

    from torch import nn

    from artok.config import ENCODER_CONFIGS, EncoderConfig, register_encoder_config
    from artok.encoders import _BUILDERS, register_encoder

    @register_encoder_config
    @dataclass
    class PatchConfig(EncoderConfig):
        kind: str = "test-patch"

        @property
        def downsample_factor(self) -> int:
            return 4

    try:
        register_encoder(PatchConfig,
                         lambda cfg, c, size: nn.Conv2d(3, c, 4, stride=4),
                         lambda cfg, c, size: nn.ConvTranspose2d(c, 3, 4, stride=4))
        cfg = TokenizerConfig.from_dict({"image_size": 16, "latent_channels": 4, "encoder": {"kind": "test-patch"},
                                         "quantizer": {"kind": "vq", "codebook_size": 8, "scales": [4]}})
        assert isinstance(cfg.encoder, PatchConfig)
        tok = artok.build_tokenizer(cfg)
        assert [tuple(i.shape) for i in tok.tokenize(__import__("torch").zeros(2, 3, 16, 16))] == [(2, 16)]

        @dataclass
        class Unregistered(EncoderConfig):
            kind: str = "test-unregistered"

        with pytest.raises(ValueError, match="not a registered encoder config"):
            register_encoder(Unregistered, None, None)
        with pytest.raises(ValueError, match="registered twice"):
            register_encoder_config(dataclass(type("Again", (EncoderConfig,), {"__annotations__": {"kind": str},
                                                                                "kind": "test-patch"})))
    finally:
        ENCODER_CONFIGS.pop("test-patch", None)
        _BUILDERS.pop("test-patch", None)
