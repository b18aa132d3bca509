"""The names this module held before the restructure of issue 18, where code written against them finds them:
saving and loading one model is ``artok.checkpoint``, pipelines and ``from_pretrained`` are ``artok.pipeline``.
"""
from artok.checkpoint import (  # noqa: F401
    CONFIG_NAME, FORMAT_VERSION, MODEL_TYPES, WEIGHTS_NAME, CheckpointError, PretrainedMixin, load_strict,
    read_config, register_model_type,
)
from artok.pipeline import Pipeline, from_pretrained  # noqa: F401
