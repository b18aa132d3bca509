"""Training configs: data, losses, runtime knobs, and the tokenizer/generator training sections."""
from __future__ import annotations

from dataclasses import dataclass, field

from artok.config.base import Config, ConfigError, _choice
from artok.config.generator import GeneratorConfig, HartConfig
from artok.config.presets import HART_PRESETS, generator_config, hart_config, tokenizer_config
from artok.config.text import TextEncoderConfig
from artok.config.tokenizer import TokenizerConfig

# ---------------------------------------------------------------------------------------------------------
# Training (runtime knobs only: none of these reach model code)
# ---------------------------------------------------------------------------------------------------------

DATA_SOURCES = ("folder", "hf", "webdataset", "fashion-mnist", "skimage", "procedural", "procedural-centred")
BUILTIN_SOURCES = DATA_SOURCES[3:]  # the offline sets --data names
CROP_MODES = ("random", "center")
RECONSTRUCTION_LOSSES = ("l1", "l2")
PERCEPTUAL_NETWORKS = ("vgg", "alex", "squeeze")
GAN_LOSSES = ("hinge", "non-saturating")
DISCRIMINATOR_NORMS = ("batch", "group", "none")
MIXED_PRECISION = ("no", "fp16", "bf16")
LR_SCHEDULES = ("constant", "cosine", "linear")
SCHEDULE_UNITS = ("steps", "minutes")



@dataclass
class DataConfig(Config):
    """Where training images come from and how they are cropped.

    ``source``: ``folder`` (``path`` is a directory, searched recursively; first-level sub-folders are
    classes), ``hf`` (``path`` is a Hugging Face dataset name or a ``save_to_disk`` folder), ``webdataset``
    (``path`` is a tar shard, a glob or a brace pattern such as ``shards/{000..009}.tar``), or a built-in
    offline set: ``fashion-mnist``, ``skimage`` (random crops of scikit-image's photos), ``procedural`` (shapes
    scattered on gradients) or ``procedural-centred`` (the quickstart's: centred shapes on flat backgrounds).
    ``resize`` is the shorter side before cropping (None: the image size, so crops keep the whole width).
    ``pad_small``: images smaller than the model's size are padded with black (centred) instead of
    upscaled, as Fashion-MNIST's 28 px images are usually padded to 32 px. ``caption_key``: the text column of
    a Hugging Face dataset, or the field of a tar sample's ``.json`` member, that text-conditioned training
    reads (folders: a ``.txt`` beside each image; tar shards: a ``.txt`` member first). ``preload``: decode
    every training image once into memory before the first step (in parallel processes, not counted in
    ``train.max_minutes``, refused beyond half the machine's memory), so that small datasets cost no
    decoding per step.
    """

    source: str = "procedural"
    path: str | None = None
    split: str = "train"
    image_key: str = "image"
    label_key: str = "label"
    caption_key: str = "caption"
    num_samples: int = 10000
    resize: int | None = None
    crop: str = "random"
    horizontal_flip: bool = True
    pad_small: bool = False
    num_workers: int = 2
    preload: bool = False

    def validate(self) -> None:
        _choice("data.source", self.source, DATA_SOURCES)
        _choice("data.crop", self.crop, CROP_MODES)
        if self.num_samples < 1:
            raise ConfigError(f"data.num_samples must be >= 1, got {self.num_samples}")
        if self.resize is not None and self.resize < 1:
            raise ConfigError(f"data.resize must be positive or null, got {self.resize}")
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {self.num_workers}")


@dataclass
class LossConfig(Config):
    """Weights of the tokenizer training loss (VQGAN, Esser et al. 2021, eq. 4-7; VAR §4).

    total = reconstruction_weight·L1/L2 + perceptual_weight·LPIPS + commitment_weight·commitment
            + codebook_weight·codebook + entropy_weight·entropy + gan_weight·λ_adaptive·G loss (after
            ``gan_start_step``). ``gan_weight`` 0 trains no discriminator; ``perceptual_weight`` 0 needs no
            LPIPS weights. ``perceptual_backbone_weights`` is a local torchvision state dict for the LPIPS
            backbone (offline machines). The entropy term (``artok/losses/entropy.py``) acts on the vectors
            each scale quantises; ``entropy_temperature`` is relative to the batch's mean squared distance to
            the codes (absolute for cosine codes); ``entropy_scales`` applies it to the first (coarsest)
            scales only (null: every scale).
    """

    reconstruction: str = "l1"
    reconstruction_weight: float = 1.0
    perceptual_weight: float = 1.0
    perceptual_network: str = "vgg"
    perceptual_backbone_weights: str | None = None
    commitment_weight: float = 1.0
    codebook_weight: float = 1.0
    entropy_weight: float = 0.0
    entropy_temperature: float = 0.01
    entropy_scales: int | None = None
    gan_weight: float = 0.0
    gan_start_step: int = 0
    gan_loss: str = "hinge"
    adaptive_gan_weight: bool = True
    max_adaptive_weight: float = 1e4
    discriminator_channels: int = 64
    discriminator_layers: int = 3
    discriminator_norm: str = "group"

    def validate(self) -> None:
        _choice("loss.reconstruction", self.reconstruction, RECONSTRUCTION_LOSSES)
        _choice("loss.perceptual_network", self.perceptual_network, PERCEPTUAL_NETWORKS)
        _choice("loss.gan_loss", self.gan_loss, GAN_LOSSES)
        _choice("loss.discriminator_norm", self.discriminator_norm, DISCRIMINATOR_NORMS)
        for name in ("reconstruction_weight", "perceptual_weight", "commitment_weight", "codebook_weight",
                     "entropy_weight", "gan_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"loss.{name} must be >= 0, got {getattr(self, name)}")
        if self.entropy_scales is not None and self.entropy_scales < 1:
            raise ConfigError(f"loss.entropy_scales must be >= 1 or null (all scales), got {self.entropy_scales}")
        if self.entropy_temperature <= 0:
            raise ConfigError(f"loss.entropy_temperature must be positive, got {self.entropy_temperature}")
        if self.gan_start_step < 0:
            raise ConfigError(f"loss.gan_start_step must be >= 0, got {self.gan_start_step}")
        if self.discriminator_channels < 1 or self.discriminator_layers < 1:
            raise ConfigError(f"loss.discriminator_channels and discriminator_layers must be >= 1, got "
                              f"{self.discriminator_channels} and {self.discriminator_layers}")


@dataclass
class TrainConfig(Config):
    """Runtime knobs of a training run, shared by every trainer (tokenizer now, generator next).

    Steps count optimizer updates; ``batch_size`` is per process and per micro-step, so one update sees
    batch_size × gradient_accumulation_steps × processes images. ``resume``: ``auto`` continues from the
    newest complete checkpoint in ``out_dir/checkpoints`` when there is one, ``never`` starts fresh, or a
    checkpoint folder. ``init_from`` loads weights from an artok checkpoint before training (e.g. the
    discrete tokenizer a hybrid one starts from); ``freeze`` lists parameter-name prefixes kept fixed.
    ``schedule_over``: ``steps`` decays the LR over ``max_steps``; ``minutes`` over ``max_minutes`` (the
    fraction of the time budget spent, or of ``max_steps`` if that ends the run first), so a time-boxed run
    ends at its lowest rate however many steps the machine manages. Time-laid schedules depend on the
    machine's speed, so two runs are not bit-identical; resuming continues from the recorded run time.
    """

    out_dir: str = "runs/tokenizer"
    seed: int = 0
    batch_size: int = 16
    max_steps: int = 10000
    max_minutes: float | None = None
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"
    lr: float = 1e-4
    discriminator_lr: float | None = None
    betas: tuple[float, float] = (0.5, 0.9)
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    schedule_over: str = "steps"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    grad_clip: float | None = 1.0
    ema_decay: float | None = 0.999
    log_every: int = 10
    sample_every: int = 500
    save_every: int = 1000
    checkpoints_total_limit: int | None = 3
    eval_images: int = 256
    trackers: tuple[str, ...] = ("tensorboard",)
    resume: str = "auto"
    init_from: str | None = None
    freeze: tuple[str, ...] = ()
    find_unused_parameters: bool = False
    cpu: bool = False

    def validate(self) -> None:
        _choice("train.mixed_precision", self.mixed_precision, MIXED_PRECISION)
        _choice("train.lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _choice("train.schedule_over", self.schedule_over, SCHEDULE_UNITS)
        if self.schedule_over == "minutes" and self.max_minutes is None:
            raise ConfigError("train.schedule_over 'minutes' lays the LR decay over train.max_minutes: set "
                              "train.max_minutes too (or use schedule_over 'steps')")
        for name in ("batch_size", "max_steps", "gradient_accumulation_steps", "log_every", "sample_every",
                     "save_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or (self.discriminator_lr is not None and self.discriminator_lr <= 0):
            raise ConfigError(f"train.lr and train.discriminator_lr must be positive, got {self.lr} and "
                              f"{self.discriminator_lr}")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"train.betas must be in [0, 1), got {self.betas}")
        if self.warmup_steps < 0 or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"train.warmup_steps must be >= 0 and train.min_lr_ratio in [0, 1], got "
                              f"{self.warmup_steps} and {self.min_lr_ratio}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"train.grad_clip must be positive or null, got {self.grad_clip}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"train.ema_decay must be in (0, 1) or null, got {self.ema_decay}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ConfigError(f"train.max_minutes must be positive or null, got {self.max_minutes}")
        if self.checkpoints_total_limit is not None and self.checkpoints_total_limit < 1:
            raise ConfigError(f"train.checkpoints_total_limit must be >= 1 or null, got {self.checkpoints_total_limit}")
        if self.eval_images < 0:
            raise ConfigError(f"train.eval_images must be >= 0, got {self.eval_images}")


@dataclass
class TokenizerTrainConfig(Config):
    """A tokenizer training run: the model (a ``TokenizerConfig``, or a preset name in YAML), the data,
    the loss weights and the runtime knobs."""

    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def from_dict(cls, data: dict, *, where: str | None = None):
        if isinstance(data, dict) and isinstance(data.get("tokenizer"), str):
            data = {**data, "tokenizer": tokenizer_config(data["tokenizer"]).to_dict()}
        return super().from_dict(data, where=where)



# ---------------------------------------------------------------------------------------------------------
# Generator training (artok/training/generator_trainer.py)
# ---------------------------------------------------------------------------------------------------------

VIEW_MODES = ("random", "all")


@dataclass
class GeneratorDataConfig(Config):
    """Where the generator's token ids come from.

    ``tokens``: a directory written by ``artok encode`` (preferred: no tokenizer work during training). Its
    manifest must name the same tokenizer weights as ``GeneratorTrainConfig.tokenizer``. With several views
    per image (hflip, ten-crop), ``views: random`` draws one view per image per epoch (LlamaGen) and
    ``views: all`` treats every view as its own sample. Without ``tokens``, ``images`` are tokenized on the fly.
    A text-conditioned generator reads the captions (and contexts) that ``artok encode --captions`` /
    ``--text-encoder`` stored beside the ids, or each image's caption (``images.caption_key``).
    """

    tokens: str | None = None
    views: str = "random"
    images: DataConfig | None = None
    num_workers: int = 2

    def validate(self) -> None:
        _choice("data.views", self.views, VIEW_MODES)
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {self.num_workers}")


@dataclass
class GeneratorRecipeConfig(Config):
    """The VAR recipe (Tian et al., 2024, section 4 and the official training script), all adjustable.

    ``scale_lr``: the learning rate is ``train.lr × global batch / 256`` (VAR's ``tblr``). ``label_smoothing``
    of the cross-entropy. Progressive training over scales: start with ``progressive_start`` scales and add
    scales linearly until all are trained at ``progressive_steps`` (0 disables). Sample grids every
    ``train.sample_every`` steps use the fixed ``sample_classes`` and ``sample_seed``; a text-conditioned
    generator's grids have one row per ``sample_prompts`` (default: the first distinct captions of the data, as
    many as ``sample_classes``). With ``export_sampling`` the exported pipeline records ``sample_cfg``,
    ``sample_top_k`` and ``sample_top_p`` as its sampling defaults, which ``artok sample`` and ``artok eval
    generator`` then use where their flags are not given (otherwise they use VAR's: cfg 1.5, top-k 900,
    top-p 0.96).
    """

    scale_lr: bool = True
    label_smoothing: float = 0.0
    progressive_start: int = 0
    progressive_steps: int = 0
    sample_classes: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7)
    sample_prompts: tuple[str, ...] = ()
    samples_per_class: int = 2
    sample_seed: int = 0
    sample_cfg: float = 1.5
    sample_top_k: int = 0
    sample_top_p: float = 0.0
    export_sampling: bool = False

    def validate(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"recipe.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.progressive_start < 0 or self.progressive_steps < 0:
            raise ConfigError("recipe.progressive_start and progressive_steps must be >= 0")
        if (self.progressive_start > 0) != (self.progressive_steps > 0):
            raise ConfigError("recipe.progressive_start and progressive_steps are set together (both 0 disables)")
        if self.samples_per_class < 1 or any(c < 0 for c in self.sample_classes):
            raise ConfigError("recipe.samples_per_class must be >= 1 and sample_classes non-negative")


def _generator_train_defaults() -> TrainConfig:
    """VAR's optimiser settings: AdamW β (0.9, 0.95), weight decay 0.05, lr 1e-4 per 256 images, warm-up then
    linear decay, gradient clipping 2."""
    return TrainConfig(out_dir="runs/generator", batch_size=64, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05,
                       lr_schedule="linear", warmup_steps=500, min_lr_ratio=0.0, grad_clip=2.0, ema_decay=0.9999,
                       sample_every=1000, save_every=2000)


@dataclass
class GeneratorTrainConfig(Config):
    """A generator training run: the model (a ``GeneratorConfig`` for VAR/raster generators, a ``HartConfig``
    for class-conditional or text-conditioned HART with its residual diffusion head, or a preset name of either
    in YAML), the tokenizer checkpoint whose ids it models, the data, the recipe and the runtime knobs.

    ``text_encoder`` (text-conditioned HART): the encoder that turns captions into contexts, recorded in the
    exported pipeline; it may be left out when ``data.tokens`` stores contexts (their record is used). Caption
    dropout for guidance is ``generator.class_dropout``: a dropped caption becomes the record's null prompt
    (HART's zero context by default)."""

    generator: GeneratorConfig | HartConfig = field(default_factory=GeneratorConfig)
    tokenizer: str = ""
    text_encoder: TextEncoderConfig | None = None
    data: GeneratorDataConfig = field(default_factory=GeneratorDataConfig)
    recipe: GeneratorRecipeConfig = field(default_factory=GeneratorRecipeConfig)
    train: TrainConfig = field(default_factory=_generator_train_defaults)

    @classmethod
    def from_dict(cls, data: dict, *, where: str | None = None):
        if isinstance(data, dict) and isinstance(data.get("generator"), str):
            name = data["generator"]
            data = {**data, "generator": (hart_config(name) if name in HART_PRESETS else generator_config(name)).to_dict()}
        if isinstance(data, dict) and isinstance(data.get("train"), dict):
            # train keys not given keep the generator defaults, not TrainConfig's tokenizer defaults
            data = {**data, "train": {**_generator_train_defaults().to_dict(), **data["train"]}}
        return super().from_dict(data, where=where)

    @property
    def is_hart(self) -> bool:
        return isinstance(self.generator, HartConfig)

    @property
    def text_conditioned(self) -> bool:
        return self.is_hart and not self.generator.class_conditional

    def validate(self) -> None:
        if self.text_encoder is not None and not self.text_conditioned:
            raise ConfigError("text_encoder: the generator is class-conditional; text conditioning needs a "
                              "text-to-image HART (generator.context_dim > 0, num_classes 0, e.g. tiny-hart-t2i)")
        p = self.recipe.progressive_start
        if p and (self.is_hart or p > len(self.generator.scales) or self.generator.block_unit != "scale"):
            raise ConfigError(f"recipe.progressive_start={p}: progressive training needs next-scale blocks and at "
                              f"most {len(self.generator.scales)} scales")
        if not self.text_conditioned and any(c >= self.generator.num_classes for c in self.recipe.sample_classes):
            raise ConfigError(f"recipe.sample_classes {self.recipe.sample_classes} must be below "
                              f"num_classes={self.generator.num_classes}")

    def check_runnable(self) -> None:
        """What a run needs beyond valid values: a tokenizer and a data source."""
        if not self.tokenizer:
            raise ConfigError("tokenizer: the path of the tokenizer checkpoint whose ids the generator models is "
                              "required (artok convert / artok train tokenizer write one)")
        if self.data.tokens is None and self.data.images is None:
            raise ConfigError("data: give data.tokens (a directory from artok encode) or data.images")
        if self.text_conditioned and self.text_encoder is None and self.data.tokens is None:
            raise ConfigError("text_encoder: a text-conditioned HART trained on images needs the text encoder that "
                              "turns their captions into contexts (--text-encoder NAME_OR_DIR), or train on "
                              "data.tokens encoded with `artok encode --text-encoder`")
