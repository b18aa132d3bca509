"""Training with Accelerate: one loop (``run``) for every model kind, with one objective per kind
(``objectives``: tokenizer, VAR, HART), EMA, optimizers and schedules, checkpoints and resumption, reports,
and the entry points ``tokenizer_trainer.train_tokenizer`` and ``generator_trainer.train_generator``. Only the
layers that run jobs import ``accelerate``."""
