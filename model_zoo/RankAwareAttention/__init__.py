from .RankAwareAttention import RankAwareAttention

__all__ = ["RankAwareAttention"]
