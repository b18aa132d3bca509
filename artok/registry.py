"""The names this module held before the restructure of issue 18: the presets are config
(``artok.config.presets``), building models from them is ``artok.pipeline``."""
from artok.config.presets import *  # noqa: F401,F403
from artok.config.presets import (  # noqa: F401  (underscored and module-level names star-imports skip)
    GENERATOR_PRESETS, GENERATORS, HART_PRESETS, HARTS, QUICKSTART_SCALES, TOKENIZER_PRESETS, TOKENIZERS,
    VAR_SCALES_256, VAR_SCALES_512,
)
from artok.pipeline import build_generator, build_hart, build_tokenizer  # noqa: F401
