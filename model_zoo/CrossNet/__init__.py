from .CrossNet import CrossNet

__all__ = ["CrossNet"]
