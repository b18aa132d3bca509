"""Official VAR and HART checkpoints → artok modules (strict, hyper-parameters inferred from the tensors)."""
from artok.convert.common import load_state_dict
from artok.convert.var import var_quantizer, var_vqvae
from artok.convert.var_transformer import var_transformer

__all__ = ["load_state_dict", "var_quantizer", "var_vqvae"]
__all__ += ["var_transformer"]
from artok.convert.hart import hart_diffusion_head, hart_pipeline, hart_tokenizer, hart_transformer  # noqa: E402

__all__ += ["hart_diffusion_head", "hart_pipeline", "hart_tokenizer", "hart_transformer"]
