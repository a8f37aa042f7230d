"""The random-sets task: its batches (the order runs have always read) and its decoders."""

import numpy as np

from experiments.configs import random_sets as random_sets_config
from experiments.random_sets import task as random_sets


def test_training_batches_keep_the_order_runs_were_made_with():
  """Step s of epoch e, batch k: the rows ``sort(perm[k * B:(k + 1) * B])`` of the training
  sets, ``perm`` drawn from ``(seed, e)``; evaluation reads a split in order."""
  config = random_sets_config.get_config("test")
  config.seed = 5
  task = random_sets.create_task(config)
  sets = random_sets.make_split(config, "train")["set"]  # [64, 4, 2]
  b, per_epoch = config.train.batch_size, len(sets) // config.train.batch_size
  data = task.train_batches(per_epoch - 1)  # The last batch of epoch 0, then epoch 1.
  for step in range(per_epoch - 1, per_epoch + 2):
    epoch, k = divmod(step, per_epoch)
    perm = np.random.default_rng([5, epoch]).permutation(len(sets))
    np.testing.assert_array_equal(next(data)["set"], sets[np.sort(perm[k * b:(k + 1) * b])])
  val = random_sets.make_split(config, "val")["set"]
  np.testing.assert_array_equal(np.concatenate([x["set"] for x in task.eval_batches("val")]),
                                val)


def test_the_decoder_selects_idspn_or_dspn():
  config = random_sets_config.get_config("small")
  options = random_sets.idspn_options(config)
  assert options["clip_norm"] == 10.0 and options["steps"] == 10
  assert "momentum" not in options and "backward" not in options  # The layer's 0.9, "approx".
  config.model.decoder = "dspn"
  dspn = random_sets.create_model(config).idspn
  assert (dspn["momentum"], dspn["backward"]) == (0.0, "unroll")
  assert {k: v for k, v in dspn.items() if k not in ("momentum", "backward")} == options
