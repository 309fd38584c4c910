"""Scaling strategies, one file each; ``STRATEGIES`` finds them by name."""
from clex.strategies.base import STRATEGIES, Strategy, default_inv_freq

__all__ = ["STRATEGIES", "Strategy", "default_inv_freq"]
