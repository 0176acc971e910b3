from .rDCN import rDCN, rDCNNoContextStream

__all__ = ["rDCN", "rDCNNoContextStream"]
