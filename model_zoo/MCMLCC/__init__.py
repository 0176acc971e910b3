from .MCMLCC import MCMLCC

__all__ = ["MCMLCC"]
