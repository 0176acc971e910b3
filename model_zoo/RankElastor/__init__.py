from .RankElastor import RankElastor

__all__ = ["RankElastor"]
