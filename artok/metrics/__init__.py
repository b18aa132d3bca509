"""Reconstruction metrics: PSNR, SSIM, LPIPS, rFID, codebook usage and perplexity per scale."""
from artok.metrics.codebook import CodebookCounter
from artok.metrics.evaluate import METRICS, evaluate_tokenizer, format_table, reconstruct
from artok.metrics.fid import InceptionFeatures, InceptionWeightsError, frechet_distance
from artok.metrics.image import psnr, ssim

__all__ = ["CodebookCounter", "InceptionFeatures", "InceptionWeightsError", "METRICS", "evaluate_tokenizer",
           "format_table", "frechet_distance", "psnr", "reconstruct", "ssim"]
