"""artok.sampling.generate: official VAR parity (greedy and stochastic), KV cache = teacher forcing, top-k/top-p
support with a uniform stub, guidance, raster order, dtypes and bad input."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import artok
from artok import convert
from artok.config import GeneratorConfig
from artok.models import Generator
from artok.sampling import filter_logits, generate, guidance_strength

VAR = Path(__file__).parent / "fixtures" / "var"
SCALES = (1, 2, 3, 4, 5, 6, 8)


@pytest.fixture(scope="module")
def var_tokenizer():
    return convert.var_vqvae(VAR / "vqvae_state_dict.safetensors", scales=SCALES)


def var_generator(name: str) -> Generator:
    return convert.var_transformer(VAR / f"{name}_state_dict.safetensors", scales=SCALES,
                                   num_heads=None if name == "var_a" else 2)


def io(name: str) -> dict:
    return load_file(str(VAR / f"{name}_io.safetensors"))


def spec(name: str) -> dict:
    return json.loads((VAR / f"{name}.json").read_text())


def strong(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.rand(p.shape, generator=g) * 2 if name.endswith("log_scale")
                    else torch.randn(p.shape, generator=g) * 0.3)
    return model.eval()


def tiny_pair(raster: bool = False):
    tok = artok.build_tokenizer("tiny-vq" if raster else "tiny-var-vqvae").eval()
    return tok, strong(artok.build_generator("tiny-raster" if raster else "tiny-var"))


def guided_teacher_logits(gen, tok, ids, labels, cfg, schedule="linear"):
    """The guided logits that KV-cached sampling must have produced, recomputed by teacher forcing."""
    inputs = tok.teacher_inputs(ids)
    with torch.no_grad():
        cond = gen(inputs, labels)
        uncond = gen(inputs, torch.full_like(labels, gen.null_class))
    out, start = [], 0
    for k, size in enumerate(gen.block_sizes):
        t = guidance_strength(cfg, k, len(gen.block_sizes), schedule)
        out.append((1 + t) * cond[:, start:start + size] - t * uncond[:, start:start + size])
        start += size
    return torch.cat(out, 1)


# -- parity with the official sampler ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["var_a", "var_b"])
def test_greedy_generation_matches_the_official_sampler(name, var_tokenizer):
    gen, ref, greedy = var_generator(name), io(name), spec(name)["ar_greedy"]
    out = generate(gen, var_tokenizer, ref["ar_labels"], cfg_scale=greedy["cfg"], top_k=1)
    ids = torch.cat(out.ids, 1)
    assert torch.equal(ids, ref["ar_ids"]), f"{int((ids != ref['ar_ids']).sum())} ids differ"
    d = (out.latent - ref["ar_fhat"]).abs().max().item()
    assert torch.allclose(out.latent, ref["ar_fhat"], atol=1e-4, rtol=1e-4), f"latent max abs diff {d:.3e}"
    image_sum = ((out.images.double() + 1) * 0.5).sum().item()
    # a sum over 4·3·256·256 pixels: the decoder's channels-last convolutions round differently from the
    # official NCHW ones (measured 0.025 of 42,518, 6e-7 relative); the ids and the latent above are exact
    assert abs(image_sum - greedy["ar_img_sum"]) < 5e-2, (image_sum, greedy["ar_img_sum"])
    assert torch.equal(out.latent, var_tokenizer.ids_to_latent(out.ids)), "the latent must be the ids' f̂"


def test_stochastic_generation_reproduces_the_official_ids_bit_for_bit(var_tokenizer):
    gen, ref, run = var_generator("var_a"), io("var_a"), spec("var_a")["ar_stochastic"]
    rng = torch.Generator("cpu").manual_seed(run["g_seed"])
    out = generate(gen, var_tokenizer, ref["stoch_labels"], cfg_scale=run["cfg"], top_k=run["top_k"],
                   top_p=run["top_p"], generator=rng, decode=False)
    ids = torch.cat(out.ids, 1)
    assert torch.equal(ids, ref["stoch_ids"]), f"{int((ids != ref['stoch_ids']).sum())} of {ids.numel()} ids differ"
    assert out.images is None


def test_kv_cached_logits_equal_guided_teacher_forcing_on_the_sampled_ids(var_tokenizer):
    gen, ref = var_generator("var_a"), io("var_a")
    out = generate(gen, var_tokenizer, ref["ar_labels"], cfg_scale=4.0, top_k=1, return_logits=True, decode=False)
    cached = torch.cat(out.logits, 1)
    expected = guided_teacher_logits(gen, var_tokenizer, out.ids, ref["ar_labels"], 4.0)
    d = (cached - expected).abs().max().item()
    assert torch.allclose(cached, expected, atol=3e-4, rtol=1e-4), f"max abs diff {d:.3e}"


@pytest.mark.parametrize("raster,schedule", [(False, "linear"), (True, "linear"), (True, "constant")])
def test_kv_cache_equals_teacher_forcing_for_tiny_models(raster, schedule):
    tok, gen = tiny_pair(raster)
    labels = torch.tensor([0, 3, 9])
    out = generate(gen, tok, labels, cfg_scale=2.0, cfg_schedule=schedule, generator=torch.Generator().manual_seed(1),
                   return_logits=True, decode=False)
    cached = torch.cat(out.logits, 1)
    expected = guided_teacher_logits(gen, tok, out.ids, labels, 2.0, schedule)
    assert torch.allclose(cached, expected, atol=1e-4, rtol=1e-4), (cached - expected).abs().max()


# -- determinism and reproducibility ----------------------------------------------------------------------

def test_greedy_is_deterministic_and_seeds_reproduce():
    tok, gen = tiny_pair()
    labels = torch.tensor([1, 2, 3, 4])
    a = generate(gen, tok, labels, cfg_scale=1.5, top_k=1)
    b = generate(gen, tok, labels, cfg_scale=1.5, top_k=1)
    assert all(torch.equal(x, y) for x, y in zip(a.ids, b.ids)) and torch.equal(a.images, b.images)

    def draw(seed):
        return torch.cat(generate(gen, tok, labels, cfg_scale=1.5, generator=torch.Generator().manual_seed(seed),
                                  decode=False).ids, 1)
    assert torch.equal(draw(5), draw(5))
    assert not torch.equal(draw(5), draw(6))


def test_raster_generation_with_a_single_scale_vq_tokenizer():
    tok, gen = tiny_pair(raster=True)
    out = generate(gen, tok, torch.tensor([0, 5]), cfg_scale=1.0, top_k=8, generator=torch.Generator().manual_seed(0))
    assert len(out.ids) == 1 and out.ids[0].shape == (2, 16)
    assert torch.equal(out.latent, tok.ids_to_latent(out.ids))
    assert out.images.shape == (2, 3, 32, 32) and out.images.abs().max() <= 1


# -- top-k, top-p and guidance on a stub with uniform logits ----------------------------------------------

class StubGenerator(torch.nn.Module):
    """Uniform logits, plus ``favour`` on token (label mod V) for conditional rows: isolates the sampler."""

    def __init__(self, config: GeneratorConfig, favour: float = 0.0) -> None:
        super().__init__()
        self.config, self.favour = config, favour
        self.class_embed = torch.nn.Embedding(config.num_classes + 1, 1)  # gives check_labels its device

    check_labels = Generator.check_labels
    num_classes = property(lambda self: self.config.num_classes)
    null_class = property(lambda self: self.config.num_classes)
    block_sizes = property(lambda self: self.config.block_sizes)

    def condition(self, labels):
        return self.check_labels(labels)

    def new_cache(self):
        return None

    def start_tokens(self, cond):
        return torch.zeros(cond.shape[0], self.block_sizes[0], 1)

    def embed_block(self, inputs, start):
        return torch.zeros(inputs.shape[0], inputs.shape[1], 1)

    def step(self, x, cond, cache):
        V = self.config.codebook_size
        logits = torch.zeros(x.shape[0], x.shape[1], V)
        rows = cond != self.null_class
        logits[rows, :, cond[rows] % V] += self.favour
        return logits


def stub_ids(favour=0.0, **kwargs) -> torch.Tensor:
    tok = artok.build_tokenizer("tiny-var-vqvae").eval()
    stub = StubGenerator(artok.generator_config("tiny-var"), favour)
    labels = torch.arange(64) % 10
    out = generate(stub, tok, labels, generator=torch.Generator().manual_seed(0), decode=False, **kwargs)
    return torch.cat(out.ids, 1)  # (64, 21)


def test_uniform_stub_top_k_and_top_p_restrict_the_support():
    everything = stub_ids(cfg_scale=0.0)
    assert everything.unique().numel() > 50, "uniform logits should reach (almost) every one of the 64 codes"
    assert stub_ids(cfg_scale=0.0, top_k=5).unique().numel() <= 5
    assert stub_ids(cfg_scale=0.0, top_k=1).unique().numel() == 1
    assert stub_ids(cfg_scale=0.0, top_p=0.25).unique().numel() <= 17  # 16 of 64 equal probabilities (+ rounding)
    assert stub_ids(cfg_scale=0.0, top_k=20, top_p=0.5).unique().numel() <= 11


def test_filter_logits_on_known_values():
    logits = torch.tensor([[[0.0, 3.0, 1.0, 2.0, -1.0]]])
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[[True, False, True, False, True]]]
    probs = logits.softmax(-1)  # sorted mass: 0.01, 0.03, 0.09, 0.23, 0.64
    kept = ~torch.isinf(filter_logits(logits, top_p=0.8))
    assert kept.tolist() == [[[False, True, False, True, False]]], probs
    assert torch.equal(filter_logits(logits), logits)


def test_guidance_follows_the_linear_ramp_and_pushes_towards_the_class():
    ids = stub_ids(favour=1.0, cfg_scale=10.0)  # cond logit e at the class, t from 0 (first scale) to 10 (last)
    labels = (torch.arange(64) % 10)[:, None]
    hit = ids == labels
    assert hit[:, 0].float().mean() < 0.25, "t = 0 at the first scale: e/(e+63) ≈ 4% expected"
    assert hit[:, 5:].float().mean() > 0.99, "t = cfg at the last scale: ≈ 99.9% expected"
    unguided = stub_ids(favour=1.0, cfg_scale=0.0) == labels
    assert unguided.float().mean() < 0.2
    constant = stub_ids(favour=1.0, cfg_scale=10.0, cfg_schedule="constant") == labels
    assert constant[:, 0].float().mean() > 0.95
    assert guidance_strength(1.5, 0, 10) == 0.0 and guidance_strength(1.5, 9, 10) == 1.5


# -- options: Gumbel soft codes, dtypes, temperature ------------------------------------------------------

def test_more_smooth_uses_soft_codes_reproducibly():
    tok, gen = tiny_pair()
    labels = torch.tensor([1, 2])
    a = generate(gen, tok, labels, cfg_scale=1.5, more_smooth=True, generator=torch.Generator().manual_seed(0))
    b = generate(gen, tok, labels, cfg_scale=1.5, more_smooth=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.latent, b.latent) and torch.isfinite(a.images).all()
    assert (a.latent - tok.ids_to_latent(a.ids)).abs().max() > 1e-4, "soft codes should differ from hard codes"


@pytest.mark.parametrize("dtype", ["bf16", torch.float16])
def test_low_precision_autocast_generation(dtype):
    tok, gen = tiny_pair()
    out = generate(gen, tok, torch.tensor([1, 2, 3]), cfg_scale=1.5, top_k=10, top_p=0.9, dtype=dtype,
                   generator=torch.Generator().manual_seed(0))
    assert out.images.dtype == torch.float32 and torch.isfinite(out.images).all()
    assert all(int(i.max()) < tok.codebook_size for i in out.ids)


# -- bad input ----------------------------------------------------------------------------------------------

def test_incompatible_tokenizer_and_bad_arguments_are_named():
    tok, gen = tiny_pair()
    labels = torch.tensor([1])
    with pytest.raises(ValueError, match=r"disagree: .*scales: generator \(1, 2, 4\), tokenizer \(4,\)"):
        generate(gen, artok.build_tokenizer("tiny-vq"), labels, cfg_scale=1.0)
    with pytest.raises(ValueError, match="codebook size: generator 32, tokenizer 64"):
        generate(artok.build_generator("tiny-var", codebook_size=32), tok, labels, cfg_scale=1.0)
    with pytest.raises(ValueError, match="latent channels: generator 4, tokenizer 8"):
        generate(artok.build_generator("tiny-var", latent_channels=4), tok, labels, cfg_scale=1.0)
    with pytest.raises(ValueError, match="steps: the generator predicts one token per step"):
        generate(artok.build_generator("tiny-var", block_unit="token"), tok, labels, cfg_scale=1.0)
    with pytest.raises(ValueError, match="class id 12 is out of range"):
        generate(gen, tok, torch.tensor([1, 12]), cfg_scale=1.0)
    with pytest.raises(ValueError, match="top_p=1.0"):
        generate(gen, tok, labels, cfg_scale=1.0, top_p=1.0)
    with pytest.raises(ValueError, match="unknown cfg schedule 'cosine'"):
        generate(gen, tok, labels, cfg_scale=1.0, cfg_schedule="cosine")
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        generate(gen, tok, labels, cfg_scale=1.0, dtype="fp8")
    with pytest.raises(ValueError, match="temperature must be positive"):
        generate(gen, tok, labels, cfg_scale=1.0, temperature=0)


def test_a_prefix_of_real_ids_is_kept_and_the_rest_continues_it_consistently():
    tok, gen = tiny_pair()
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    real = tok.tokenize(images)
    labels = torch.tensor([0, 3, 9])
    out = generate(gen, tok, labels, cfg_scale=2.0, prefix=real[:2], generator=torch.Generator().manual_seed(1),
                   return_logits=True)
    assert torch.equal(out.ids[0], real[0]) and torch.equal(out.ids[1], real[1])
    # the cached logits are those of teacher forcing on the forced-then-sampled ids
    expected = guided_teacher_logits(gen, tok, out.ids, labels, 2.0)
    assert torch.allclose(torch.cat(out.logits, 1), expected, atol=1e-4, rtol=1e-4)
    whole = generate(gen, tok, labels, cfg_scale=2.0, prefix=real)  # every block given: the tokenizer's decoding
    assert all(torch.equal(a, b) for a, b in zip(whole.ids, real))
    assert torch.allclose(whole.images, tok.detokenize(real), atol=1e-5)
    with pytest.raises(ValueError, match="prefix block 1 has shape"):
        generate(gen, tok, labels, cfg_scale=2.0, prefix=[real[0], real[2]])
    with pytest.raises(ValueError, match="outside"):
        generate(gen, tok, labels, cfg_scale=2.0, prefix=[real[0] + 10 ** 4])
    with pytest.raises(ValueError, match="gives 4 blocks"):
        generate(gen, tok, labels, cfg_scale=2.0, prefix=[*real, real[0]])


def test_hart_keeps_a_prefix_too():
    from artok.pipeline import build_hart

    tok, model = artok.build_tokenizer("tiny-hart-tokenizer").eval(), build_hart("tiny-hart-c2i").eval()
    real = tok.tokenize(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4)) * 2 - 1)
    out = generate(model, tok, torch.tensor([1, 2]), cfg_scale=1.0, prefix=real[:2])
    assert torch.equal(out.ids[0], real[0]) and torch.equal(out.ids[1], real[1])
    with pytest.raises(ValueError, match="not both"):
        generate(model, tok, torch.tensor([1, 2]), cfg_scale=1.0, prefix=real[:1], forced=object())
