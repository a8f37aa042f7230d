"""Long training checks (`make test-slow`): the paper's findings at CPU-sized settings."""

import json

import pytest

from experiments import random_sets, train
from experiments.configs import random_sets as random_sets_config


def _val_loss(workdir, step):
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [r["loss"] for r in records if r["split"] == "val" and r["step"] == step][0]


@pytest.mark.slow
def test_idspn_learns_faster_than_dspn_on_random_sets(tmp_path):
  """At the `:small` setting, 500 steps: iDSPN's validation loss is below DSPN's."""
  losses = {}
  for name, overrides in {"idspn": {}, "dspn": {"backward": "unroll", "momentum": 0.0}}.items():
    config = random_sets_config.get_config("small")
    config.train.steps = 500
    config.eval.pictures = False
    config.train.progress_bar = False
    for key, value in overrides.items():
      config.model[key] = value
    train.train_and_evaluate(config, tmp_path / name, random_sets.create_task(config))
    losses[name] = _val_loss(tmp_path / name, 500)
  assert losses["idspn"] < 0.75 * losses["dspn"], losses
