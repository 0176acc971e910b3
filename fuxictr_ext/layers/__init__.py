"""Layers that several models share.

* :mod:`.common` - FM pair vector, AutoInt's self-attention, absent branches.
* :mod:`.multi_embedding` - single/multi-embedding layouts (Guo et al. 2024).
* :mod:`.hsic` - the HSIC decoupling loss (RoBlock).
* :mod:`.rank1_norm` - rank-1 update normalization (RoBlock).
* :mod:`.mlcc` - MLCC's compress and cross layers.
* :mod:`.token_mixing` - tokenizer, token mixings, per-token FFNs and heads (RankMixer, RankElastor).
* :mod:`.rank_aware` - the context/target field partition and the layers of models built
  rank-aware (split dense layer, rDCN's cross streams, two-stream attention).
"""
