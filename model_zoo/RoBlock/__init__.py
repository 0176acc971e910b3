from .RoBlock import RoBlock

__all__ = ["RoBlock"]
