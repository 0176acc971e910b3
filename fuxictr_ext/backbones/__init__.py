"""Whole models that several zoo models specialise.

* :mod:`.token_mixing` - :class:`TokenMixingModel` (RankMixer, RankElastor).
* :mod:`.two_stream` - :class:`TwoStreamModel`, models built rank-aware (rDCN, RankAwareAttention).
"""
