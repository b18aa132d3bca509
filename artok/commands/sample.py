"""``artok sample CHECKPOINT``: class-conditional samples (``--classes``, ``--per-class``) or text-to-image
samples of a text-conditioned HART pipeline (``--prompt``, ``--prompt-file``; the prompts go to
``prompts.jsonl``) as PNGs, an image grid, and with ``--npz`` the ``.npz`` array that the standard ImageNet FID
evaluator reads (``arr_0``: uint8, N×H×W×3).

Prompts are encoded by the text encoder the pipeline records (``text_encoder.json``; ``--text-encoder`` points
at a local copy of its weights) and guided against its null prompt (HART's zero context unless the record
names one).

Batch b is drawn with the seed ``seed + b``, so the images depend on the seed and the batch size only;
``sample/sample.py`` (``accelerate launch``) splits the same batches across processes and writes the same
files. The helpers here are shared by both; writing the files is ``artok.sampling.to_disk``'s (its names
are re-exported here for the entry scripts).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from artok.models.text_encoder import TextEncoder
from artok.pipeline import from_pretrained, load_pipeline, open_pipeline  # noqa: F401  (eval generator: cmd.load_pipeline)
from artok.sampling import Acceleration, check_text_encoder, generate, generate_from_prompts
from artok.sampling.to_disk import (GRID_MAX, GRID_NAME, NPZ_NAME, PROMPT_SAMPLE_NAME, SAMPLE_NAME, SAMPLE_RE,
                                    check_out_dir, existing_samples, finish, prepare_out_dir, sample_paths, to_uint8,
                                    write_grid, write_npz, write_pngs, write_prompts)

__all__ = ["GRID_MAX", "GRID_NAME", "NPZ_NAME", "SAMPLE_NAME", "SAMPLE_RE", "add_arguments", "add_sampling_arguments",
           "batches", "check_out_dir", "default_device", "existing_samples", "finish", "load_pipeline", "load_text_encoder",
           "plan_labels", "plan_prompts", "prepare_out_dir", "read_prompts", "register", "resolve_sampling", "run", "sample_batch",
           "sample_jobs", "sample_paths", "to_uint8", "write_grid", "write_npz", "write_pngs"]


# ---------------------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------------------

def add_arguments(p) -> None:
    p.add_argument("checkpoint", help="artok pipeline directory (tokenizer/ + generator/), e.g. from `artok convert var`")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--classes", nargs="+", type=int, metavar="ID", help="class ids to sample, one image each")
    which.add_argument("--per-class", type=int, metavar="N", help="N images of every class (50 for ImageNet FID)")
    which.add_argument("--prompt", action="append", metavar="TEXT",
                       help="a text prompt (text-conditioned HART pipelines); repeat for several")
    which.add_argument("--prompt-file", metavar="FILE", help="prompts, one per line (blank lines skipped)")
    p.add_argument("--per-prompt", type=int, default=1, metavar="N", help="images of every prompt")
    p.add_argument("--text-encoder", metavar="DIR_OR_NAME",
                   help="load the recorded text encoder from here instead (a local copy of its weights)")
    p.add_argument("--out", required=True, help="output directory for the PNGs, grid.png and samples.npz")
    add_sampling_arguments(p)
    p.add_argument("--npz", action="store_true", help=f"also write {NPZ_NAME} (arr_0: uint8 N×H×W×3, labels)")
    fast = p.add_argument_group("training-free acceleration (VAR generators; approximate, off by default)")
    fast.add_argument("--guidance-off-last", type=int, default=0, metavar="N",
                      help="no unconditional pass in the last N blocks")
    fast.add_argument("--merge-last", type=int, default=0, metavar="N", help="token merging in the last N blocks")
    fast.add_argument("--merge-ratio", type=float, default=0.5, help="fraction of a block's tokens merged (<= 0.5)")
    fast.add_argument("--draft", metavar="DIR", help="a smaller generator (or pipeline) on the same tokenizer ...")
    fast.add_argument("--draft-last", type=int, default=0, metavar="N", help="... that predicts the last N blocks")


# VAR's FID settings: what sampling uses where neither a flag nor the pipeline's own defaults say otherwise
SAMPLING_DEFAULTS = {"cfg": 1.5, "cfg_schedule": "linear", "top_k": 900, "top_p": 0.96, "temperature": 1.0}


def add_sampling_arguments(p) -> None:
    """The sampling settings, shared by ``artok sample`` and ``artok eval generator``. An unset flag takes the
    pipeline's recorded default (``Pipeline.sampling``, what its training recipe chose), else VAR's FID
    setting (``SAMPLING_DEFAULTS``)."""
    d = SAMPLING_DEFAULTS
    p.add_argument("--cfg", type=float, default=None,
                   help=f"classifier-free guidance strength (0: none; default: the pipeline's, else {d['cfg']})")
    p.add_argument("--cfg-schedule", choices=("linear", "constant"), default=None,
                   help="linear: VAR's ramp from 0 at the first step to --cfg at the last; constant: --cfg throughout "
                        f"(default: the pipeline's, else {d['cfg_schedule']})")
    p.add_argument("--top-k", type=int, default=None,
                   help=f"keep the k most likely tokens (0: all; 1: greedy; default: the pipeline's, else {d['top_k']})")
    p.add_argument("--top-p", type=float, default=None,
                   help=f"nucleus sampling mass (0: off; default: the pipeline's, else {d['top_p']})")
    p.add_argument("--temperature", type=float, default=None,
                   help=f"divides the guided logits (default: the pipeline's, else {d['temperature']})")
    p.add_argument("--more-smooth", action="store_true", help="VAR's Gumbel soft codes (visual quality, not for FID)")
    p.add_argument("--seed", type=int, default=0, help="batch b uses seed + b")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32", help="autocast dtype")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace samples already in --out")


def resolve_sampling(args, pipeline_sampling: dict | None) -> str:
    """Fill the sampling flags left unset: the pipeline's defaults first, then VAR's. Returns a one-line
    account of where each came from."""
    sources = []
    for key, fallback in SAMPLING_DEFAULTS.items():
        if getattr(args, key) is not None:
            sources.append(f"{key} {getattr(args, key)} (flag)")
        elif pipeline_sampling and key in pipeline_sampling:
            setattr(args, key, pipeline_sampling[key])
            sources.append(f"{key} {pipeline_sampling[key]} (pipeline)")
        else:
            setattr(args, key, fallback)
    if not sources:
        return "sampling with VAR's defaults (" + ", ".join(f"{k} {v}" for k, v in SAMPLING_DEFAULTS.items()) + ")"
    if len(sources) < len(SAMPLING_DEFAULTS):
        sources.append("VAR's defaults for the rest")
    return "sampling with " + ", ".join(sources)


# ---------------------------------------------------------------------------------------------------------
# Loading and planning
# ---------------------------------------------------------------------------------------------------------


def plan_labels(classes: list[int] | None, per_class: int | None, num_classes: int) -> list[int]:
    """The class of every image to draw, in output order."""
    if per_class is not None:
        if per_class < 1:
            raise ValueError(f"--per-class must be >= 1, got {per_class}")
        return [c for c in range(num_classes) for _ in range(per_class)]
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"class id {bad[0]} is out of range: the generator has {num_classes} classes "
                         f"(0..{num_classes - 1})")
    return list(classes)


def read_prompts(prompts: list[str] | None, prompt_file: str | None) -> list[str]:
    """The prompts of ``--prompt`` (repeated) or ``--prompt-file`` (one per line, blank lines skipped)."""
    if prompt_file is not None:
        prompts = [line.strip() for line in Path(prompt_file).read_text(encoding="utf-8").splitlines()]
        prompts = [p for p in prompts if p]
        if not prompts:
            raise ValueError(f"--prompt-file {prompt_file} holds no prompts")
    return list(prompts or [])


def plan_prompts(prompts: list[str], per_prompt: int) -> list[int]:
    """The prompt number of every image to draw, in output order."""
    if per_prompt < 1:
        raise ValueError(f"--per-prompt must be >= 1, got {per_prompt}")
    return [p for p in range(len(prompts)) for _ in range(per_prompt)]


def load_text_encoder(pipe, device: torch.device, override: str | None = None) -> TextEncoder:
    """The text encoder a text-conditioned pipeline records (``override``: another name or folder for it),
    checked against the generator."""
    if pipe.text_encoder is None:
        raise ValueError(f"{pipe.directory} holds a text-conditioned generator but no text-encoder record "
                         f"(text_encoder.json); artok convert hart and artok train generator write one")
    record = pipe.text_encoder if override is None else pipe.text_encoder.replace(name_or_path=override)
    encoder = TextEncoder(record, device=device, base_dir=pipe.directory)
    check_text_encoder(pipe.generator, encoder)
    return encoder


def batches(labels: list[int], batch_size: int) -> list[tuple[int, int, list[int]]]:
    """(batch index, index of its first image, its labels) for every batch."""
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    return [(b, start, labels[start:start + batch_size]) for b, start in enumerate(range(0, len(labels), batch_size))]


# ---------------------------------------------------------------------------------------------------------
# Sampling (writing: artok.sampling.to_disk)
# ---------------------------------------------------------------------------------------------------------

def sample_batch(tok, gen, labels: list[int], batch_index: int, args, device: torch.device, *,
                 encoder: TextEncoder | None = None, prompts: list[str] | None = None,
                 acceleration: Acceleration | None = None) -> np.ndarray:
    """Batch ``batch_index`` drawn with the seed ``args.seed + batch_index``, as (B, H, W, 3) uint8. With an
    ``encoder``, ``labels`` are prompt numbers into ``prompts``."""
    rng = torch.Generator(device=device).manual_seed(args.seed + batch_index)
    options = dict(top_k=args.top_k, top_p=args.top_p, temperature=args.temperature, more_smooth=args.more_smooth,
                   dtype=args.dtype, generator=rng)
    if encoder is not None:
        if args.cfg_schedule != "linear":
            raise ValueError(f"HART guides with its own linear schedule; --cfg-schedule {args.cfg_schedule} does "
                             "not apply")
        out = generate_from_prompts(gen, tok, encoder, [prompts[p] for p in labels], cfg_scale=args.cfg, **options)
    else:
        out = generate(gen, tok, torch.tensor(labels, device=device), cfg_scale=args.cfg,
                       cfg_schedule=args.cfg_schedule, acceleration=acceleration, **options)
    return to_uint8(out.images)


def sample_jobs(tok, gen, jobs, args, device, *, out: Path, progress: bool = True, total: int | None = None,
                encoder: TextEncoder | None = None, prompts: list[str] | None = None,
                acceleration: Acceleration | None = None) -> int:
    """Draw and write the given batches; returns the number of images written. Shows images/s. With an
    ``encoder``, the jobs' labels are prompt numbers into ``prompts``."""
    from tqdm.auto import tqdm

    n = 0
    with tqdm(total=total or sum(len(j[2]) for j in jobs), unit="img", desc="sampling", disable=not progress,
              dynamic_ncols=True) as bar:
        for batch_index, start, labels in jobs:
            images = sample_batch(tok, gen, labels, batch_index, args, device, encoder=encoder, prompts=prompts,
                                  acceleration=acceleration)
            write_pngs(out, start, labels, images, name=SAMPLE_NAME if encoder is None else PROMPT_SAMPLE_NAME)
            n += len(labels)
            bar.update(len(labels))
    return n


# ---------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------

def default_device(name: str | None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def acceleration_from(args, device: torch.device, *, text: bool) -> Acceleration | None:
    """The ``Acceleration`` the flags ask for (None when none is set); the draft loads onto ``device``."""
    wanted = (args.guidance_off_last, args.merge_last, args.draft, args.draft_last)
    if not any(wanted):
        return None
    if text:
        raise ValueError("--guidance-off-last, --merge-last and --draft apply to VAR generators, not to HART")
    draft = None
    if args.draft:
        loaded = from_pretrained(args.draft)  # a generator folder, or a pipeline whose generator is taken
        draft = getattr(loaded, "generator", loaded).to(device).eval()
    return Acceleration(guidance_off_last=args.guidance_off_last, merge_last=args.merge_last,
                        merge_ratio=args.merge_ratio, draft=draft, draft_last=args.draft_last)


def run(args) -> int:
    """One process, or each of the processes of ``accelerate launch`` (``sample/sample.py``): batch b goes to
    process b mod P and is drawn with seed ``seed + b``, so the files do not depend on the number of
    processes; the main process then writes the grid and the npz."""
    from accelerate import PartialState

    state = PartialState(cpu=args.device == "cpu")
    device = default_device(args.device) if state.num_processes == 1 else state.device
    check_out_dir(args.out, args.overwrite)  # before the (slow) load, on every process
    pipe = open_pipeline(args.checkpoint, device)
    tok, gen = pipe.tokenizer, pipe.generator
    told = resolve_sampling(args, pipe.sampling)
    if state.is_main_process:
        print(told, flush=True)
    text = args.prompt is not None or args.prompt_file is not None
    encoder = prompts = None
    if text != pipe.text_conditioned:
        raise ValueError(f"{args.checkpoint} holds a text-conditioned generator: pass --prompt or --prompt-file"
                         if pipe.text_conditioned else
                         f"{args.checkpoint} holds a class-conditional generator ({gen.num_classes} classes): pass "
                         "--classes or --per-class (--prompt needs a text-conditioned HART pipeline)")
    if text:
        prompts = read_prompts(args.prompt, args.prompt_file)
        labels = plan_prompts(prompts, args.per_prompt)
        encoder = load_text_encoder(pipe, device, args.text_encoder)
    else:
        labels = plan_labels(args.classes, args.per_class, gen.num_classes)
    acceleration = acceleration_from(args, device, text=text)
    if acceleration is not None:
        acceleration.checked(gen, len(gen.block_sizes))  # a bad option is an error before any sampling
    jobs = batches(labels, args.batch_size)
    mine = jobs[state.process_index::state.num_processes]
    if state.is_main_process:
        prepare_out_dir(args.out, args.overwrite)
    state.wait_for_everyone()
    out = Path(args.out)
    t0 = time.perf_counter()
    n = sample_jobs(tok, gen, mine, args, device, out=out, progress=state.is_main_process, encoder=encoder,
                    prompts=prompts, acceleration=acceleration)
    seconds = time.perf_counter() - t0
    state.wait_for_everyone()
    if state.is_main_process:
        written = finish(out, npz=args.npz)
        if text:
            written.append(write_prompts(out, prompts, labels, seed=args.seed, batch_size=args.batch_size))
        print(f"wrote {len(labels)} samples to {out} with {state.num_processes} process(es) (main process: "
              f"{n / seconds:.2f} images/s on {device}, {args.dtype}); " + ", ".join(p.name for p in written))
    state.wait_for_everyone()
    return 0


def register(sub, formatter_class) -> None:
    p = sub.add_parser("sample", help="sample class-conditional or text-to-image images from an artok pipeline",
                       description=__doc__.split("\n\n")[0], formatter_class=formatter_class)
    add_arguments(p)
    p.set_defaults(func=run)
