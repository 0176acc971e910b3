from .RankMixer import RankMixer

__all__ = ["RankMixer"]
