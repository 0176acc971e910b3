from .DHEN import DHEN

__all__ = ["DHEN"]
