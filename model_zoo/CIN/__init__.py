from .CIN import CIN

__all__ = ["CIN"]
