from .AutoInt import AutoInt

__all__ = ["AutoInt"]
