"""Random-set autoencoding (experiment 2): DSPN vs iDSPN.

  python -m experiments.random_sets --config=experiments/configs/random_sets.py:small
  python -m experiments.random_sets --config=experiments/configs/random_sets.py:paper \
      --config.data.set_size=16 --config.data.set_dim=8 --config.model.idspn.steps=20
  # DSPN: --config.model.decoder=dspn
"""

from ml_collections import config_dict

from experiments.configs.common import base_config

VARIANTS = ("small", "paper", "test")


def get_config(variant: str = "small") -> config_dict.ConfigDict:
  """``paper``: the paper's settings; ``small``: minutes on 2 CPU cores; ``test``: seconds."""
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
  config = base_config()

  # Data: sets of set_size points in set_dim dimensions, each coordinate N(0, 1).
  config.data = config_dict.ConfigDict()
  config.data.set_size = 16
  config.data.set_dim = 8
  config.data.train_size = 64_000
  config.data.val_size = 6_400
  config.data.test_size = 6_400
  config.data.seed = 0

  # Model: an FS encoder turns the input set into z; iDSPN decodes z back into a set.
  config.model = config_dict.ConfigDict()
  # The widths of both the input encoder and the decoder's energy encoder.
  config.model.hidden = 512
  config.model.latent = 512
  config.model.input_pool = "fs"
  # "idspn", or "dspn": the same layer with momentum 0 and backward "unroll" applied on top of
  # model.idspn (see experiments/common/models.py; a contradicting value there is an error).
  config.model.decoder = "idspn"
  # Keyword options of idspn_jax.IDSPN, passed as they are; None: the layer's default.
  config.model.idspn = config_dict.ConfigDict()
  config.model.idspn.pool = "fs"
  config.model.idspn.steps = 20
  config.model.idspn.learning_rate = 1.0
  # None: the layer's 0.9 (Nesterov) and "approx" (Jacobian-free); DSPN's 0 and "unroll".
  config.model.idspn.momentum = config_dict.placeholder(float)
  config.model.idspn.backward = config_dict.placeholder(str)
  # Where the implicit modes take their gradient: "previous" (Y_{T-1}, the reference's) or
  # "final" (Y_T, for ablations; see idspn_jax.solve).
  config.model.idspn.implicit_at = "previous"
  # With backward "unroll": backpropagate through the last this many inner steps only (None: all).
  config.model.idspn.backprop_steps = config_dict.placeholder(int)
  # Clip each set's inner gradient at this norm (None or 0: no clipping).
  config.model.idspn.clip_norm = config_dict.placeholder(float)
  config.model.idspn.learn_start = True
  config.model.idspn.energy = "mse_regularized"
  config.model.idspn.cg_ridge = 1e-2
  config.model.idspn.cg_maxiter = 20
  config.model.idspn.fspool_method = "auto"
  # Unrolling of the inner loop (an int, or True for fully unrolled).
  config.model.idspn.loop_unroll = 1

  # Training: 40 epochs of 500 batches of 128 in the paper.
  config.train.steps = 40 * 64_000 // 128
  config.train.eval_every = 64_000 // 128
  config.train.checkpoint_every = 64_000 // 128
  config.eval.inner_steps = 20
  config.eval.batch_size = 128

  if variant == "small":
    # Minutes on 2 CPU cores: sets of 8 points in 4-D, a smaller hidden width, 10 inner steps.
    config.data.set_size = 8
    config.data.set_dim = 4
    config.data.train_size = 6_400
    config.data.val_size = 640
    config.data.test_size = 640
    config.model.hidden = 256
    config.model.latent = 512  # the paper's: the energy averages over the latent width
    config.model.idspn.steps = 10
    config.eval.inner_steps = 10
    # Clip each set's inner gradient (DSPN and iDSPN alike): with lr 1 and Nesterov momentum
    # the inner loop is only stable while the energy's curvature stays below ~1.4 (lr 1).
    config.model.idspn.clip_norm = 10.0
    config.train.batch_size = 64
    config.eval.batch_size = 64
    config.train.steps = 1000
    config.train.eval_every = 250
    config.train.checkpoint_every = 250
    config.train.log_every = 50
    # Report the checkpoint with the best validation loss.
    config.eval.final_checkpoint = "best"
  elif variant == "test":
    config.data.set_size = 4
    config.data.set_dim = 2
    config.data.train_size = 64
    config.data.val_size = 16
    config.data.test_size = 16
    config.model.hidden = 16
    config.model.latent = 16
    config.model.idspn.steps = 4
    config.eval.inner_steps = 4
    config.train.batch_size = 8
    config.eval.batch_size = 8
    config.train.steps = 20
    config.train.eval_every = 10
    config.train.checkpoint_every = 5
    config.train.log_every = 5
    config.train.progress_bar = False
    config.eval.pictures = False
  return config
