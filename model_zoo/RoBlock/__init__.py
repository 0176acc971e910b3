from .RoBlock import RoBlock, depth_hsic_normalization

__all__ = ["RoBlock", "depth_hsic_normalization"]
