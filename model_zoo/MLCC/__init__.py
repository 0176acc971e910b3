from .MLCC import MLCC

__all__ = ["MLCC"]
