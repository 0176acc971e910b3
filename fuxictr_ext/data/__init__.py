"""Data: FuxiCTR datasets built atomically, loaded fast, and synthetic data with a planted model.

* :mod:`.build` - :func:`build_dataset`, the drop-in for ``fuxictr.preprocess.build_dataset``
  (FuxiCTR's own FeatureProcessor, in-process, atomic; reads CSV under polars 2).
* :mod:`.feature_map` - :func:`load_feature_map`, the FeatureMap of a built dataset.
* :mod:`.loader` - :class:`TensorDataLoader`, the in-memory loader for ``RankDataLoader``, and
  :class:`MappedDataLoader`, the same batches from memory-mapped column files shared by the
  processes on one machine.
* :mod:`.synthetic` - seeded synthetic data with real benchmarks' schemas.
"""

from .build import SPLITS, DataError, ZooFeatureProcessor, build_dataset, is_built, processed_paths, validate_raw_split
from .feature_map import load_feature_map
from .loader import MappedDataLoader, TensorDataLoader

__all__ = ["SPLITS", "DataError", "ZooFeatureProcessor", "build_dataset", "is_built", "processed_paths",
           "validate_raw_split", "load_feature_map", "MappedDataLoader", "TensorDataLoader"]
