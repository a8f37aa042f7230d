"""The CLEVR step benchmark's config overrides (the timing itself is `make bench`'s)."""

import pytest

from benchmarks import bench_clevr_step
from experiments.configs import clevr as clevr_config


def test_overrides_set_dotted_keys_to_literals():
  config = clevr_config.get_config("small")
  settings = dict(bench_clevr_step.parse_override(a) for a in (
    "model.encoder_options.widths=(32,64,128)", "model.encoder_options.strides=(2,2,2)",
    "model.idspn.energy=mse", "train.batch_size=16"))
  assert settings["model.encoder_options.widths"] == (32, 64, 128)
  assert settings["model.idspn.energy"] == "mse"  # Not a literal: kept as the string.
  bench_clevr_step.apply_overrides(config, settings)
  assert config.model.encoder_options.widths == (32, 64, 128)
  assert config.model.encoder_options.strides == (2, 2, 2)
  assert config.train.batch_size == 16
  for key in ("model.encoder_options.stride", "modle.hidden", "train.batch_size.x"):
    with pytest.raises(KeyError, match=f"no key '{key}'"):
      bench_clevr_step.apply_overrides(config, {key: 1})
