from .DLRM import DLRM

__all__ = ["DLRM"]
