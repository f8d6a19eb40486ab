"""Input pipeline: image sources, host-side transforms, grain iterators.

  from jaxcolor import data
  train_iter = data.create_train_iterator('sample', image_size=128,
                                          global_batch_size=16, seed=0)
  batch = next(train_iter)  # {'image': uint8 [16, 128, 128, 3]}
  data.training_counts(train_iter)  # {'files_read': 16, 'corrupt': 0, ...}

Dataset strings are described in `jaxcolor.data.sources`.
"""

from jaxcolor.data.pipeline import CountReport
from jaxcolor.data.pipeline import create_eval_batches
from jaxcolor.data.pipeline import create_train_iterator
from jaxcolor.data.pipeline import eval_batches_of
from jaxcolor.data.pipeline import training_counts
from jaxcolor.data.sources import DatasetNotPreparedError
from jaxcolor.data.sources import NoUsableImagesError
from jaxcolor.data.sources import check_datasets
from jaxcolor.data.sources import describe
from jaxcolor.data.sources import eval_dataset_of

__all__ = ["create_train_iterator", "create_eval_batches", "eval_batches_of",
           "eval_dataset_of", "describe",
           "training_counts", "CountReport", "DatasetNotPreparedError",
           "NoUsableImagesError", "check_datasets"]
