"""Zero-shot editing: the white pixels of a mask are generated, the rest teacher-forced at every scale."""
import pytest
import torch

import artok
from artok.pipeline import build_hart
from artok.sampling import edit, generate
from artok.sampling.edit import check_mask, keep_masks


def strong(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def var_pair():
    torch.manual_seed(0)
    return artok.build_tokenizer("tiny-var-vqvae").eval(), strong(artok.build_generator("tiny-var"))


@pytest.fixture(scope="module")
def hart_pair():
    torch.manual_seed(0)
    return artok.build_tokenizer("tiny-hart-tokenizer").eval(), build_hart("tiny-hart-c2i").eval()


def images(n=2, seed=3):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("kind", ["var", "hart"])
def test_an_all_black_mask_returns_the_inputs_ids_and_an_all_white_one_is_plain_sampling(kind, var_pair, hart_pair):
    tok, model = var_pair if kind == "var" else hart_pair
    x, labels = images(), torch.tensor([1, 4])
    out = edit(model, tok, x, torch.zeros(32, 32), labels, cfg_scale=2.0, generator=torch.Generator().manual_seed(0))
    real = tok.tokenize(x)
    assert all(torch.equal(a, b) for a, b in zip(out.ids, real))
    if kind == "hart":  # the residual is the input's too: the output is the hybrid reconstruction
        torch.testing.assert_close(out.residual, tok.residual(x))
        torch.testing.assert_close(out.images, tok.detokenize(real, residual=tok.residual(x)).clamp(-1, 1))
    white = edit(model, tok, x, torch.ones(1, 32, 32), labels, cfg_scale=2.0, generator=torch.Generator().manual_seed(5))
    plain = generate(model, tok, labels, cfg_scale=2.0, generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(a, b) for a, b in zip(white.ids, plain.ids))
    torch.testing.assert_close(white.images, plain.images)


def test_inpainting_keeps_the_tokens_and_pixels_outside_the_mask(var_pair):
    tok, gen = var_pair
    x = images()
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 8:16, 8:16] = 1  # one cell of the 4x4 grid, a quarter of a 2x2 cell
    out = edit(gen, tok, x, mask, torch.tensor([0, 2]), cfg_scale=1.0, generator=torch.Generator().manual_seed(1))
    real = tok.tokenize(x)
    for k, keep in enumerate(keep_masks(mask > 0, tok.scales)):
        assert torch.equal(out.ids[k][keep], real[k][keep])
    keep = keep_masks(mask > 0, tok.scales)
    assert [int((~k).sum()) for k in keep] == [0, 0, 2]  # only the 4x4 cell, more than half white, is generated
    rec = tok.detokenize(real)
    far = torch.ones(32, 32, dtype=torch.bool)
    far[:24, :24] = False  # pixels well away from the generated cell
    # away from the generated cell the decoder sees the input's latent: the pixels are its reconstruction's
    kept = (out.images - rec).abs()[..., far].mean()
    free = (generate(gen, tok, torch.tensor([0, 2]), cfg_scale=1.0, generator=torch.Generator().manual_seed(1)).images
            - rec).abs()[..., far].mean()
    assert kept < 0.02 and kept < free / 3, (kept, free)


def test_bad_masks_are_named():
    x = images()
    with pytest.raises(ValueError, match="one channel"):
        check_mask(torch.zeros(2, 3, 32, 32), x)
    with pytest.raises(ValueError, match="16x16 pixels, the images 32x32"):
        check_mask(torch.zeros(16, 16), x)
    with pytest.raises(ValueError, match="binary"):
        check_mask(torch.full((32, 32), 0.5), x)
    with pytest.raises(ValueError, match="batch 3"):
        check_mask(torch.zeros(3, 1, 32, 32), x)
    assert check_mask(torch.ones(32, 32, dtype=torch.bool), x).shape == (2, 1, 32, 32)


def test_edit_refuses_images_of_the_wrong_size(var_pair):
    tok, gen = var_pair
    with pytest.raises(ValueError, match="the tokenizer takes 32x32"):
        edit(gen, tok, torch.zeros(1, 3, 16, 16), torch.zeros(16, 16), torch.tensor([0]), cfg_scale=1.0)


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory, var_pair):
    tok, gen = var_pair
    d = tmp_path_factory.mktemp("edit") / "pipeline"
    artok.Pipeline(tok, gen).save_pretrained(d)
    return d


def write_png(path, array):
    from PIL import Image

    Image.fromarray(array).save(path)
    return str(path)


def test_artok_edit_writes_edits_and_a_strip_and_keeps_everything_under_a_black_mask(pipeline_dir, tmp_path, var_pair):
    import numpy as np

    from artok.cli import main
    from artok.sampling.to_disk import to_uint8

    tok, _ = var_pair
    rgb = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    image = write_png(tmp_path / "in.png", rgb)
    black = write_png(tmp_path / "black.png", np.zeros((32, 32), np.uint8))
    out = tmp_path / "edits"
    assert main(["edit", str(pipeline_dir), "--image", image, "--mask", black, "--class", "2", "--num", "2",
                 "--out", str(out), "--top-k", "0", "--top-p", "0"]) == 0
    from PIL import Image

    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 127.5 - 1
    expected = to_uint8(tok.detokenize(tok.tokenize(x)))[0]
    for i in range(2):
        got = np.asarray(Image.open(out / f"edit_{i:04d}.png")).astype(int)
        assert np.abs(got - expected).max() <= 1  # the input's reconstruction, up to rounding of batched decoding
    assert Image.open(out / "grid.png").size[0] > 4 * 32  # input, mask, two edits

    centre = np.zeros((32, 32), np.uint8)
    centre[8:24, 8:24] = 255
    assert main(["edit", str(pipeline_dir), "--image", image, "--mask", write_png(tmp_path / "c.png", centre),
                 "--class", "2", "--num", "1", "--out", str(tmp_path / "e2")]) == 0
    assert (tmp_path / "e2" / "edit_0000.png").exists()


def test_artok_edit_names_bad_masks_and_sizes(pipeline_dir, tmp_path, capsys):
    import numpy as np

    from artok.cli import main

    image = write_png(tmp_path / "in.png", np.zeros((32, 32, 3), np.uint8))
    grey = write_png(tmp_path / "grey.png", np.full((32, 32), 128, np.uint8))
    small = write_png(tmp_path / "small.png", np.zeros((16, 16), np.uint8))
    assert main(["edit", str(pipeline_dir), "--image", image, "--mask", grey, "--class", "1", "--out",
                 str(tmp_path / "o1")]) == 2
    assert "grey pixels" in capsys.readouterr().err
    assert main(["edit", str(pipeline_dir), "--image", image, "--mask", small, "--class", "1", "--out",
                 str(tmp_path / "o2")]) == 2
    assert "16x16 pixels" in capsys.readouterr().err
    assert main(["edit", str(pipeline_dir), "--image", image, "--mask", small, "--class", "99", "--out",
                 str(tmp_path / "o3")]) == 2
    assert "classes 0..9" in capsys.readouterr().err
