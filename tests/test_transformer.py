"""The block-causal transformer (artok.models.Generator): contract and property tests on tiny configs."""
from pathlib import Path

import pytest
import torch

import artok
from artok.config import ConfigError, GeneratorConfig
from artok.models import Generator
from artok.registry import GENERATOR_PRESETS, generator_config

CONFIGS = Path(__file__).parent.parent / "configs"


def strong_weights(model: torch.nn.Module, seed: int = 0, std: float = 0.3) -> torch.nn.Module:
    """Random O(1) weights: VAR's init makes every block start near the identity (γ ≈ 1e-5), which would
    hide mistakes in the attention mask."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("log_scale"):
                p.copy_(torch.rand(p.shape, generator=g) * 2)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def tiny(name: str = "tiny-var", **overrides) -> tuple[torch.nn.Module, Generator]:
    tok = artok.build_tokenizer("tiny-var-vqvae" if name == "tiny-var" else "tiny-vq").eval()
    gen = strong_weights(artok.build_generator(name, **overrides)).eval()
    return tok, gen


def random_inputs(tok, B: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = [torch.randint(0, tok.codebook_size, (B, s * s), generator=g) for s in tok.scales]
    labels = torch.randint(0, 10, (B,), generator=g)
    return ids, tok.teacher_inputs(ids).detach(), labels


@pytest.mark.parametrize("name", ["tiny-var", "tiny-raster"])
def test_forward_shapes_and_every_parameter_gets_a_gradient(name):
    tok, gen = tiny(name)
    gen.train()
    ids, inputs, labels = random_inputs(tok)
    logits = gen(inputs, labels)
    assert logits.shape == (3, gen.num_tokens, tok.codebook_size) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), torch.cat(ids, 1).flatten())
    loss.backward()
    missing = [n for n, p in gen.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
               or p.grad.abs().sum() == 0]
    assert not missing, f"parameters without a gradient: {missing}"


@pytest.mark.parametrize("name,shared,l2", [("tiny-var", False, True), ("tiny-var", True, False),
                                            ("tiny-raster", False, True), ("tiny-raster", True, True)])
def test_block_causal_perturbing_block_k_plus_1_leaves_earlier_logits_unchanged(name, shared, l2):
    tok, gen = tiny(name, shared_adaln=shared, attention_l2_norm=l2)
    _, inputs, labels = random_inputs(tok)
    base = gen(inputs, labels)
    sizes, first = gen.block_sizes, gen.block_sizes[0]
    bounds = torch.tensor([0] + sizes).cumsum(0).tolist()
    for k in range(len(sizes) - 1):
        start, end = bounds[k + 1], bounds[k + 2]  # positions of block k+1
        changed = inputs.clone()
        changed[:, start - first:end - first] += torch.randn_like(changed[:, start - first:end - first])
        out = gen(changed, labels)
        diff_before = (out[:, :start] - base[:, :start]).abs().max().item()
        assert diff_before <= 1e-6, f"block {k + 1} leaked into earlier positions: max diff {diff_before:.3e}"
        assert (out[:, start:end] - base[:, start:end]).abs().max() > 1e-3, "block k+1 ignores its own input"


def test_raster_order_is_causal_within_the_single_scale():
    tok, gen = tiny("tiny-raster")
    assert gen.block_sizes == [1] * 16 and tok.block_sizes == gen.block_sizes
    assert torch.equal(gen.attn_mask, torch.ones(16, 16, dtype=torch.bool).tril())


def test_labels_select_the_class_and_null_class_is_accepted():
    tok, gen = tiny()
    _, inputs, _ = random_inputs(tok, B=2)
    a = gen(inputs, torch.tensor([1, 10]))  # 10 = null class
    b = gen(inputs, torch.tensor([2, 10]))
    assert (a[0] - b[0]).abs().max() > 1e-3 and torch.equal(a[1], b[1])


def test_class_dropout_replaces_labels_with_the_null_class_in_training_only():
    tok, gen = tiny(class_dropout=0.5)
    _, inputs, labels = random_inputs(tok, B=8)
    torch.manual_seed(3)
    dropped = torch.rand(8) < 0.5
    assert 0 < dropped.sum() < 8
    torch.manual_seed(3)
    trained = gen.train()(inputs, labels)
    expected = gen.eval()(inputs, torch.where(dropped, torch.tensor(10), labels))
    assert torch.allclose(trained, expected, atol=1e-6)
    assert torch.equal(gen(inputs, labels), gen(inputs, labels)), "eval mode must not drop labels"


def test_same_seed_same_model_and_save_load_round_trip(tmp_path):
    torch.manual_seed(7)
    a = artok.build_generator("tiny-var")
    torch.manual_seed(7)
    b = artok.build_generator("tiny-var")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))

    tok, gen = tiny()
    gen.save_pretrained(tmp_path / "g")
    keys = set(gen.state_dict())
    assert not any(k.endswith(("levels", "attn_mask", "zero_k_bias")) for k in keys), "derived buffers are saved"
    loaded = artok.from_pretrained(tmp_path / "g")
    assert isinstance(loaded, Generator) and loaded.config == gen.config and not loaded.training
    _, inputs, labels = random_inputs(tok)
    assert torch.equal(loaded(inputs, labels), gen(inputs, labels))


def test_bad_inputs_are_named():
    tok, gen = tiny()
    _, inputs, labels = random_inputs(tok)
    with pytest.raises(ValueError, match=r"teacher inputs must be \(B, 20, 8\)"):
        gen(inputs[:, :-1], labels)
    with pytest.raises(ValueError, match=r"class id 11 is out of range: this generator has 10 classes"):
        gen(inputs, torch.tensor([0, 1, 11]))
    with pytest.raises(ValueError, match="class id -1 is out of range"):
        gen(inputs, torch.tensor([0, -1, 2]))
    with pytest.raises(ValueError, match="got 2 labels for a batch of 3"):
        gen(inputs, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="1-D integer tensor"):
        gen(inputs, torch.tensor([0.0, 1.0, 2.0]))


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="embed_dim 30 is not divisible by num_heads 4"):
        GeneratorConfig(embed_dim=30, num_heads=4)
    with pytest.raises(ConfigError, match="unknown 'raster'.*choose one of scale, token"):
        GeneratorConfig(block_unit="raster")
    with pytest.raises(ConfigError, match="strictly increasing"):
        GeneratorConfig(scales=(1, 3, 2))
    with pytest.raises(ConfigError, match=r"class_dropout must be in \[0, 1\)"):
        GeneratorConfig(class_dropout=1.0)
    with pytest.raises(ConfigError, match="unknown generator preset 'var-d61'.*did you mean"):
        artok.generator_config("var-d61")


@pytest.mark.parametrize("name", sorted(GENERATOR_PRESETS))
def test_presets_match_configs_dir_and_build_on_meta(name):
    sub = "tiny" if name.startswith("tiny-") else "generator"
    path = CONFIGS / sub / f"{name}.yaml"
    assert path.exists(), f"{path} missing: run artok.registry.dump_generator_presets('configs')"
    assert GeneratorConfig.from_yaml(path) == generator_config(name)
    with torch.device("meta"):
        gen = artok.build_generator(name)
    assert gen.pos_embed.shape == (1, gen.num_tokens, gen.config.embed_dim)


def test_autocast_bfloat16_forward_is_close_to_float32():
    tok, gen = tiny()
    _, inputs, labels = random_inputs(tok)
    ref = gen(inputs, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = gen(inputs, labels)
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    assert (low - ref).abs().max() < 0.1 * ref.abs().max()
