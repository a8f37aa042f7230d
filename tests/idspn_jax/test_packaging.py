"""The built wheel works outside the source tree and needs only the core dependencies.

The wheel is built from a copy of the sources (so the checkout gets no build/ or egg-info),
offline, with the test environment's setuptools (no build isolation, no index), and installed
with ``pip install --no-deps --target`` into a temporary folder. A fresh Python process run
from another temporary folder, with only that folder added to its path and numba made
unimportable (as in an install without the ``cpu-matcher`` extra), imports the package from
there and runs the README's decoder example and the matcher's fallback.
"""

import email.parser
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile

import pytest

import idspn_jax

pytestmark = pytest.mark.packaging

ROOT = pathlib.Path(__file__).resolve().parents[2]
CORE = {"jax", "flax", "optax", "jaxopt", "numpy", "scipy"}

EXAMPLE = textwrap.dedent(
  """
  import sys
  sys.modules["numba"] = None  # As when the extra cpu-matcher is not installed.

  import functools
  import warnings

  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import numpy as np

  import idspn_jax

  class SetDecoder(nn.Module):
    @nn.compact
    def __call__(self, z):  # [B, 32] -> [B, 8, 2]
      g = idspn_jax.FSEncoder(64, 32, 8, parent=None)
      g_params = self.param("g", lambda k: g.init(k, jnp.zeros((8, 2)))["params"])
      y0 = self.param("y0", nn.initializers.normal(0.1), (8, 2))
      energy = functools.partial(idspn_jax.mse_energy,
                                 apply_fn=lambda p, y: g.apply({"params": p}, y))
      return idspn_jax.solve(energy, y0, g_params, z, in_axes=(None, None, 0), steps=5,
                             clip_norm=10.0)

  model = SetDecoder()
  z = jax.random.normal(jax.random.key(0), (4, 32))
  params = model.init(jax.random.key(1), z)
  grads = jax.grad(lambda p: jnp.sum(model.apply(p, z) ** 2))(params)
  leaves = jax.tree.leaves(grads)
  assert set(grads["params"]) == {"g", "y0"}
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)
  assert any(bool(jnp.any(x != 0)) for x in leaves)

  # Without numba, "auto" takes the pure-JAX matcher silently; "jv_host" says what to install.
  cost = np.random.default_rng(0).random((2, 16, 16))
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    _, cols = idspn_jax.matching.linear_sum_assignment(cost)
  assert sorted(np.asarray(cols[0]).tolist()) == list(range(16))
  try:
    idspn_jax.matching.linear_sum_assignment(cost, method="jv_host")
  except ImportError as error:
    assert "idspn_jax[cpu-matcher]" in str(error), error
  else:
    raise AssertionError("jv_host ran without numba")
  print("LOADED FROM", idspn_jax.__file__)
  """
)


def _run(args, **kwargs):
  out = subprocess.run(args, capture_output=True, text=True, timeout=300, **kwargs)
  assert out.returncode == 0, f"{args}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
  return out


def test_wheel_installs_and_runs_outside_the_source_tree(tmp_path):
  source = tmp_path / "source"
  source.mkdir()
  for name in ("pyproject.toml", "README.md"):
    shutil.copy2(ROOT / name, source / name)
  shutil.copytree(ROOT / "src", source / "src",
                  ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
  pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
  env = dict(os.environ, PIP_ROOT_USER_ACTION="ignore", PIP_NO_INDEX="1")
  _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(tmp_path / "dist"),
        str(source)], env=env, cwd=tmp_path)
  (wheel,) = (tmp_path / "dist").glob("idspn_jax-*.whl")

  # The package and its metadata, nothing else (no tests, experiments or benchmarks).
  names = zipfile.ZipFile(wheel).namelist()
  info_dir = f"idspn_jax-{idspn_jax.__version__}.dist-info"
  assert {name.split("/")[0] for name in names} == {"idspn_jax", info_dir}
  assert "idspn_jax/__init__.py" in names and "idspn_jax/_jv_host.py" in names

  site = tmp_path / "site"
  _run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], env=env, cwd=tmp_path)
  metadata = email.parser.Parser().parsestr((site / info_dir / "METADATA").read_text())
  assert metadata["License-Expression"] == "Apache-2.0"
  requires = metadata.get_all("Requires-Dist")
  name = lambda req: re.match(r"[A-Za-z0-9_.-]+", req).group().lower()
  assert {name(req) for req in requires if "extra ==" not in req} == CORE
  numba = [req for req in requires if name(req) == "numba"]
  assert numba and all('extra == "cpu-matcher"' in req for req in numba), numba

  run_dir = tmp_path / "run"
  run_dir.mkdir()
  env = dict(os.environ, PYTHONPATH=str(site), JAX_PLATFORMS="cpu")
  out = _run([sys.executable, "-c", EXAMPLE], env=env, cwd=run_dir)
  loaded = pathlib.Path(out.stdout.split("LOADED FROM", 1)[1].strip())
  assert loaded == site / "idspn_jax" / "__init__.py"
