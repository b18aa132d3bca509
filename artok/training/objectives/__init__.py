"""What the one training loop (``artok.training.run``) trains: one ``Objective`` per kind of model."""
from artok.training.objectives.generator import GeneratorObjective
from artok.training.objectives.hart import HartObjective, hart_losses
from artok.training.objectives.tokenizer import TokenizerObjective
from artok.training.objectives.var import VarObjective

__all__ = ["GeneratorObjective", "HartObjective", "TokenizerObjective", "VarObjective", "hart_losses"]
