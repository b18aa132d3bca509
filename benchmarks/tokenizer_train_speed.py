"""Tokenizer training throughput: images per second per process for a preset, through the real step
(``artok.training.objectives.tokenizer.gan_step``: forward, losses, backward, optimizer; discriminator too with --gan).

    python benchmarks/tokenizer_train_speed.py --preset tiny-var-vqvae --batch-size 16
    python benchmarks/tokenizer_train_speed.py --preset var-vqvae-f16 --batch-size 16 --mixed-precision bf16 --gan
    accelerate launch --multi_gpu --num_processes 2 benchmarks/tokenizer_train_speed.py --preset tiny-var-vqvae

Images are random, so the number measures compute, not data loading. Each process prints its own line.
"""
from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny-var-vqvae")
    parser.add_argument("--batch-size", type=int, default=16, help="per process")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--mixed-precision", default="no", choices=("no", "fp16", "bf16"))
    parser.add_argument("--gan", action="store_true", help="include the discriminator update")
    parser.add_argument("--perceptual", action="store_true", help="include LPIPS (needs VGG16 weights)")
    args = parser.parse_args()

    from accelerate.utils import set_seed

    import artok
    from artok.config import LossConfig, TrainConfig
    from artok.losses import PatchDiscriminator, TokenizerLoss
    from artok.training.objectives.tokenizer import gan_step
    from artok.training.optim import build_optimizer, build_scheduler
    from artok.training.tokenizer_trainer import build_accelerator

    accelerator = build_accelerator(TrainConfig(mixed_precision=args.mixed_precision, trackers=(),
                                                out_dir="runs/benchmark-tokenizer-speed"))
    set_seed(0)
    tokenizer = artok.build_tokenizer(args.preset)
    loss_fn = TokenizerLoss(LossConfig(perceptual_weight=1.0 if args.perceptual else 0.0,
                                       gan_weight=0.5 if args.gan else 0.0)).to(accelerator.device)
    optimizer = build_optimizer(tokenizer, lr=1e-4, betas=(0.9, 0.95))
    scheduler = build_scheduler(optimizer, schedule="constant", warmup_steps=0, max_steps=1)
    model, optimizer, scheduler = accelerator.prepare(tokenizer, optimizer, scheduler)
    disc = d_opt = d_sched = None
    if args.gan:
        disc = PatchDiscriminator()
        d_opt = build_optimizer(disc, lr=1e-4, betas=(0.9, 0.95))
        d_sched = build_scheduler(d_opt, schedule="constant", warmup_steps=0, max_steps=1)
        disc, d_opt, d_sched = accelerator.prepare(disc, d_opt, d_sched)
    size = tokenizer.image_size
    images = torch.rand(args.batch_size, 3, size, size, device=accelerator.device) * 2 - 1

    def step() -> None:
        gan_step(accelerator, model, disc, optimizer, d_opt, scheduler, d_sched, loss_fn, images, step=0,
                 grad_clip=1.0)

    for _ in range(args.warmup):
        step()
    if accelerator.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if accelerator.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    params = sum(p.numel() for p in tokenizer.parameters())
    print(f"{args.preset}: {params / 1e6:.1f}M parameters, {size} px, batch {args.batch_size}, "
          f"{args.mixed_precision}, gan={'on' if args.gan else 'off'}, process {accelerator.process_index} of "
          f"{accelerator.num_processes} on {accelerator.device}, {torch.get_num_threads()} threads: "
          f"{args.batch_size * args.steps / seconds:.1f} images/s ({seconds / args.steps * 1000:.0f} ms/step)",
          flush=True)


if __name__ == "__main__":
    main()
