"""Settings every experiment shares: the loop, evaluation, checkpoints."""

from ml_collections import config_dict


def base_config() -> config_dict.ConfigDict:
  """The shared part of every experiment's config; experiments add ``model`` and ``data``."""
  config = config_dict.ConfigDict()
  config.seed = 0
  # Evaluate the newest checkpoint in the workdir and exit.
  config.eval_only = False
  # Call jax.distributed.initialize() (multi-host runs).
  config.distributed = False

  # Outer optimisation (Adam).
  config.train = config_dict.ConfigDict()
  config.train.steps = 1000
  config.train.batch_size = 128
  config.train.learning_rate = 1e-3
  # From this step on (0: never), multiply the learning rate by lr_drop_factor at once
  # (lr_decay "step"), or bring it down to that factor at the last step: "linear", "cosine".
  config.train.lr_drop_step = 0
  config.train.lr_drop_factor = 0.1
  config.train.lr_decay = "step"
  # Decoupled weight decay (AdamW) of the outer optimiser (0: plain Adam, the paper's).
  config.train.weight_decay = 0.0
  # Clip the outer gradient's global norm (0: off).
  config.train.grad_clip_norm = 0.0
  # Half the inner steps during the first half of training.
  config.train.inner_steps_schedule = False

  # Logging, evaluation and checkpoints.
  config.train.log_every = 50
  config.train.eval_every = 500
  config.train.checkpoint_every = 500
  config.train.keep_checkpoints = 3
  config.train.best_metric = "loss"
  config.train.best_mode = "min"
  config.train.progress_bar = True

  config.eval = config_dict.ConfigDict()
  config.eval.batch_size = 128
  config.eval.inner_steps = 20
  config.eval.pictures = True
  # Which state the final summary evaluates: "last", or "best" (by train.best_metric).
  config.eval.final_checkpoint = "last"
  return config
