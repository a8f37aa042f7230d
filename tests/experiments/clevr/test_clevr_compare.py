"""The renderer comparison: the same scene files drawn again by the NumPy renderer."""

import numpy as np

from experiments.clevr import compare
from experiments.clevr import render as cr


def test_a_folder_drawn_again_by_the_same_renderer_has_no_gap(tmp_path):
  """Scenes of the NumPy renderer without randomisation, drawn again from their scene file (its
  camera and lamp fields), are the same pixels; with randomisation they differ a little."""
  plain, varied = str(tmp_path / "plain"), str(tmp_path / "varied")
  cr.render_dataset(plain, splits={"val": 3}, image_size=32, seed=5, num_workers=0,
                    options=cr.RenderOptions(randomize=0.0))
  cr.render_dataset(varied, splits={"val": 3}, image_size=32, seed=5, num_workers=0)
  stats, picture = compare.compare(plain, image_size=32, pictures=2)
  assert stats["scenes"] == 3 and stats["mean_abs_diff"] == 0.0
  assert stats["rubber_blender"] == stats["rubber_numpy"] or stats["metal_blender"] == stats[
    "metal_numpy"]
  assert picture.shape == (2 * 32, 2 * 32, 3) and picture.dtype == np.uint8
  np.testing.assert_array_equal(picture[:, :32], picture[:, 32:])
  stats, _ = compare.compare(varied, image_size=32)
  assert 0.5 < stats["mean_abs_diff"] < 30
