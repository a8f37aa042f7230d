"""Config checks before training: a bad value fails at once, with an error naming its key."""

import dataclasses
import pathlib
import subprocess
import sys

import pytest

from experiments.common import models, train, validation
from experiments.configs import random_sets as random_sets_config
from experiments.random_sets import task as random_sets

ROOT = pathlib.Path(__file__).resolve().parents[3]


def _config(**values):
  """The random-sets `test` config with ``section__key=value`` overrides."""
  config = random_sets_config.get_config("test")
  for dotted, value in values.items():
    *sections, key = dotted.split("__")
    node = config
    for section in sections:
      node = node[section]
    node[key] = value
  return config


@pytest.mark.parametrize("values, message", [
  (dict(eval__final_checkpoint="bset"), r"config.eval.final_checkpoint='bset' is not one of"),
  (dict(eval__final_checkpoint="best", train__best_metric=""),
   r"final_checkpoint='best' needs config.train.best_metric"),
  (dict(train__lr_decay="cosin"), r"config.train.lr_decay='cosin' is not one of"),
  (dict(train__lr_decay="linear", train__lr_drop_step=20),
   r"config.train.lr_drop_step=20 must come before config.train.steps=20"),
  (dict(train__batch_size=0), r"config.train.batch_size must be a positive integer, got 0"),
  (dict(train__keep_checkpoints=0), r"config.train.keep_checkpoints must be a positive integer"),
  (dict(eval__inner_steps=-1), r"config.eval.inner_steps must be a positive integer"),
  (dict(train__best_mode="maximum"), r"config.train.best_mode='maximum' is not one of"),
  (dict(train__learning_rate=0.0), r"config.train.learning_rate must be a number > 0"),
  (dict(train__eval_every=-5), r"config.train.eval_every must be an integer >= 0"),
])
def test_the_loops_keys_are_checked(values, message):
  with pytest.raises(validation.ConfigError, match=message):
    validation.check_run(_config(**values))


@pytest.mark.parametrize("values, message", [
  (dict(model__idspn__backward="implicit"),
   r"config.model.idspn.backward='implicit' is not one of \('approx', 'cg', 'unroll'\)"),
  (dict(model__idspn__implicit_at="last"), r"config.model.idspn.implicit_at='last' is not one of"),
  (dict(model__idspn__energy="l2"), r"config.model.idspn.energy='l2' is not one of"),
  (dict(model__idspn__steps=0), r"config.model.idspn.steps must be a positive integer, got 0"),
  (dict(model__idspn__momentum=1.0), r"config.model.idspn.momentum must be a number >= 0 and < 1"),
  (dict(model__idspn__clip_norm=-1.0), r"config.model.idspn.clip_norm must be a number >= 0"),
  (dict(model__idspn__backward="unroll", model__idspn__implicit_at="final"),
   r"config.model.idspn.implicit_at places the implicit gradient, which backward 'unroll'"),
  (dict(model__idspn__backprop_steps=2),
   r"config.model.idspn.backprop_steps=2 truncates backward 'unroll' only, but backward is "
   r"'approx'"),
  (dict(model__idspn__backward="unroll", model__idspn__backprop_steps=9),
   r"config.model.idspn.backprop_steps=9 exceeds the 4 inner steps"),
  (dict(model__decoder="dspn", model__idspn__backward="approx"),
   r"DSPN runs its inner loop with momentum=0.0, backward='unroll', but "
   r"config.model.idspn.backward='approx': leave it unset or set it to 'unroll'"),
  (dict(model__decoder="dspn", model__idspn__momentum=0.9),
   r"but config.model.idspn.momentum=0.9: leave it unset or set it to 0.0"),
  (dict(model__decoder="dpsn"), r"config.model.decoder='dpsn' is not one of \('idspn', 'dspn'\)"),
  (dict(model__input_pool="max"), r"config.model.input_pool='max' is not one of"),
  (dict(data__set_size=0), r"config.data.set_size must be a positive integer"),
  (dict(data__val_size=4), r"config.data.val_size=4 examples do not fill one batch of "
                           r"config.eval.batch_size=8"),
])
def test_random_sets_checks_its_model_and_data_keys_before_opening_anything(values, message):
  with pytest.raises(validation.ConfigError, match=message):
    random_sets.create_task(_config(**values))


def test_idspn_keys_are_the_layers_attributes():
  config = _config()
  with config.unlocked():
    config.model.idspn.stepz = 3
  with pytest.raises(validation.ConfigError, match=r"config.model.idspn.stepz is not an option "
                                                   r"of idspn_jax.IDSPN; options: .*steps"):
    random_sets.create_task(config)
  with pytest.raises(validation.ConfigError, match=r"config.model.idspn.latent is set by the "
                                                   r"experiment's model"):
    models.idspn_options({"latent": 8})
  with pytest.raises(validation.ConfigError, match=r"config.model.idspn.energy is set by"):
    models.idspn_options({"energy": "mse"}, fixed={"energy"})


def test_idspn_options_pass_set_values_and_apply_dspn_on_top():
  options = {"steps": 7, "momentum": None, "backward": None, "clip_norm": 0.0, "pool": "sum"}
  # None: not passed (the layer's default applies); clip_norm 0: no clipping.
  assert models.idspn_options(options) == {"steps": 7, "clip_norm": None, "pool": "sum"}
  assert models.setting(models.idspn_options(options), "momentum") == 0.9
  assert models.idspn_options(options, decoder="dspn") == {
    "steps": 7, "clip_norm": None, "pool": "sum", "momentum": 0.0, "backward": "unroll"}
  # A value equal to DSPN's is no conflict; the experiment's own defaults lie under the values.
  assert models.idspn_options({"momentum": 0.0, "steps": 3}, decoder="dspn",
                              defaults={"steps": 20, "clip_norm": 40.0}) == {
    "steps": 3, "clip_norm": 40.0, "momentum": 0.0, "backward": "unroll"}
  with pytest.raises(validation.ConfigError, match="unknown decoder 'mlp'"):
    models.idspn_options({}, decoder="mlp")


def test_best_metric_must_be_a_metric_of_the_task(tmp_path):
  """A typo in train.best_metric fails before anything is compiled or written."""
  config = _config(train__best_metric="los")
  task = random_sets.create_task(config)
  with pytest.raises(validation.ConfigError, match=r"config.train.best_metric='los' is not a "
                                                   r"metric of this task: loss"):
    train.train_and_evaluate(config, tmp_path, task)
  assert not list(tmp_path.iterdir())
  # Tasks that do not name their metrics are not checked.
  config = _config(train__best_metric="anything", eval__final_checkpoint="bset")
  with pytest.raises(validation.ConfigError, match="final_checkpoint"):
    train.train_and_evaluate(config, tmp_path, dataclasses.replace(task, metrics=None))
  assert not list(tmp_path.iterdir())


def test_a_bad_value_on_the_command_line_fails_before_training(tmp_path):
  out = subprocess.run(
    [sys.executable, "-m", "experiments.random_sets",
     "--config=experiments/configs/random_sets.py:test", "--config.eval.final_checkpoint=bset",
     f"--workdir={tmp_path}"],
    cwd=ROOT, capture_output=True, text=True, timeout=300,
  )
  assert out.returncode != 0
  assert "config.eval.final_checkpoint='bset' is not one of ('last', 'best')" in out.stderr
  assert not list(tmp_path.iterdir())
