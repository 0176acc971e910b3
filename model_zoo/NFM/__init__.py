from .NFM import NFM

__all__ = ["NFM"]
