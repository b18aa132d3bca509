"""``artok edit``: zero-shot in-painting, out-painting and conditional edits with an artok pipeline: the mask's
white pixels are generated under ``--class`` (VAR, class-conditional HART) or ``--prompt`` (text-conditioned
HART), the rest is kept from the input image, teacher-forced at every scale (``artok.sampling.edit``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from artok.commands.sample import add_sampling_arguments, default_device, load_text_encoder, resolve_sampling
from artok.data.images import load_image
from artok.data.transforms import pil_to_tensor
from artok.pipeline import open_pipeline
from artok.sampling import check_text_encoder, edit, prompt_condition
from artok.sampling.to_disk import check_out_dir, prepare_out_dir, to_uint8

EDIT_NAME = "edit_{:04d}.png"


def read_image(path: str | Path, size: int, *, resize: bool) -> torch.Tensor:
    """(1, 3, size, size) in [-1, 1], decoded as training data is (``load_image``); an image of another size is
    an error unless ``resize``."""
    from PIL import Image

    image = load_image(path)
    if image.size != (size, size):
        if not resize:
            raise ValueError(f"{path} is {image.size[0]}x{image.size[1]} pixels; the pipeline's tokenizer takes "
                             f"{size}x{size} (pass --resize to resize it)")
        image = image.resize((size, size), Image.BICUBIC)
    return pil_to_tensor(image)[None]


def read_mask(path: str | Path, size: int, *, resize: bool) -> torch.Tensor:
    """(size, size) in {0, 1} from a black-and-white PNG (white: generate). Grey pixels are an error."""
    from PIL import Image

    mask = Image.open(path)
    if mask.mode not in ("1", "L", "LA", "RGB", "RGBA", "P"):
        raise ValueError(f"{path}: unsupported mask mode {mask.mode}")
    mask = mask.convert("L")
    if mask.size != (size, size):
        if not resize:
            raise ValueError(f"{path} is {mask.size[0]}x{mask.size[1]} pixels; the images are {size}x{size} "
                             "(pass --resize to resize it)")
        mask = mask.resize((size, size), Image.NEAREST)
    values = np.asarray(mask)
    if not np.isin(values, (0, 255)).all():
        raise ValueError(f"{path} has grey pixels; a mask holds only black (0: keep) and white (255: generate)")
    return torch.from_numpy(values == 255).float()


def edit_tiles(image: torch.Tensor, mask: torch.Tensor, edits: np.ndarray) -> list[torch.Tensor]:
    """(H, W, 3) uint8 tiles of one row: the input (1, 3, H, W) in [-1, 1], the mask (H, W) in {0, 1}, then
    every edit (N, H, W, 3) uint8."""
    return [torch.from_numpy(to_uint8(image)[0]), (mask[..., None].repeat(1, 1, 3) * 255).to(torch.uint8),
            *[torch.from_numpy(np.ascontiguousarray(e)) for e in edits]]


def write_strip(out: Path, image: torch.Tensor, mask: torch.Tensor, edits: np.ndarray) -> Path:
    """grid.png: the input, the mask, then every edit, in one row."""
    from PIL import Image
    from torchvision.utils import make_grid

    tiles = edit_tiles(image, mask, edits)
    grid = make_grid(torch.stack(tiles).permute(0, 3, 1, 2), nrow=len(tiles), padding=2, pad_value=255)
    path = out / "grid.png"
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(path)
    return path


def run(args) -> int:
    device = default_device(args.device)
    check_out_dir(args.out, args.overwrite)
    pipe = open_pipeline(args.checkpoint, device)
    print(resolve_sampling(args, pipe.sampling), flush=True)
    tok, gen = pipe.tokenizer, pipe.generator
    if args.prompt is not None:
        if not pipe.text_conditioned:
            raise ValueError(f"{args.checkpoint} holds a class-conditional generator ({gen.num_classes} classes): "
                             "edit it with --class (--prompt needs a text-conditioned HART pipeline)")
        if args.cfg_schedule != "linear":
            raise ValueError(f"HART guides with its own linear schedule; --cfg-schedule {args.cfg_schedule} does not apply")
        encoder = load_text_encoder(pipe, device, args.text_encoder)
        check_text_encoder(gen, encoder)
        what = f"prompt {args.prompt!r}"
    else:
        if pipe.text_conditioned:
            raise ValueError(f"{args.checkpoint} holds a text-conditioned generator: pass --prompt")
        if not 0 <= args.class_id < gen.num_classes:
            raise ValueError(f"--class {args.class_id}: the generator has classes 0..{gen.num_classes - 1}")
        what = f"class {args.class_id}"

    def condition(n: int) -> dict:
        """edit()'s labels and, for a prompt, HART's context keywords, for n copies."""
        if args.prompt is None:
            return {"labels": torch.full((n,), args.class_id, device=device)}
        return prompt_condition(encoder, [args.prompt] * n)

    size = tok.config.image_size
    image = read_image(args.image, size, resize=args.resize).to(device)
    mask = read_mask(args.mask, size, resize=args.resize).to(device)
    out = prepare_out_dir(args.out, args.overwrite)
    edits = []
    for start in range(0, args.num, args.batch_size):
        n = min(args.batch_size, args.num - start)
        cond = condition(n)
        result = edit(gen, tok, image.expand(n, -1, -1, -1), mask, cond.pop("labels"), **cond,
                      cfg_scale=args.cfg, cfg_schedule=args.cfg_schedule, top_k=args.top_k, top_p=args.top_p,
                      temperature=args.temperature, more_smooth=args.more_smooth, dtype=args.dtype,
                      generator=torch.Generator().manual_seed(args.seed + start))
        edits.extend(to_uint8(result.images))
    from PIL import Image

    for i, array in enumerate(edits):
        Image.fromarray(array).save(out / EDIT_NAME.format(i))
    grid = write_strip(out, image.cpu(), mask.cpu(), np.stack(edits))
    print(f"wrote {len(edits)} edits of {args.image} ({what}) to {out}; {grid.name}: input, mask, edits")
    return 0


def register(sub, formatter_class) -> None:
    p = sub.add_parser("edit", help="in-paint / out-paint an image with an artok pipeline under a class or a prompt",
                       description=__doc__, formatter_class=formatter_class,
                       epilog="example:\n  artok edit artok-quickstart/pipeline --image shape.png --mask centre.png "
                              "--class 3 --num 8 --cfg 3 --top-k 0 --top-p 0 --out edits")
    p.add_argument("checkpoint", help="artok pipeline directory (tokenizer/ + generator/)")
    p.add_argument("--image", required=True, help="the input image (PNG/JPEG) at the tokenizer's size")
    p.add_argument("--mask", required=True, help="black-and-white PNG of the same size: white pixels are generated")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--class", dest="class_id", type=int, help="class id to generate the white region under")
    which.add_argument("--prompt", help="text prompt to generate the white region under (text-conditioned HART)")
    p.add_argument("--text-encoder", metavar="DIR_OR_NAME",
                   help="load the pipeline's recorded text encoder from here (a local copy of its weights)")
    p.add_argument("--num", type=int, default=4, help="how many edits (seeds --seed, --seed + 1, ...)")
    p.add_argument("--resize", action="store_true", help="resize image and mask to the tokenizer's size")
    p.add_argument("--out", required=True, help="output directory: edit_0000.png, ... and grid.png")
    add_sampling_arguments(p)
    p.set_defaults(func=run)
