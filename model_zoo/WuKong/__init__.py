from .WuKong import WuKong, WuKongFuxiCTR

__all__ = ["WuKong", "WuKongFuxiCTR"]
