"""Distillation losses. Each returns ``(loss_sum, denominator, stats)``."""
from .layerwise import LayerwiseKDLoss, match_frame_rate, masked_layer_loss, parse_layer_map

__all__ = ["LayerwiseKDLoss", "match_frame_rate", "masked_layer_loss", "parse_layer_map"]
