from .WuKong import WuKong

__all__ = ["WuKong"]
