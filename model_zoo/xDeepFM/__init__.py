from .xDeepFM import xDeepFM

__all__ = ["xDeepFM"]
