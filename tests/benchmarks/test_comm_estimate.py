"""The communication and step-time estimate (`benchmarks.comm_estimate`) on the :test configs.

Only tracing and lowering (no compilation, no data): sizes from ``jax.eval_shape``, FLOPs from
XLA's cost analysis of the lowered training step, and the time formula on made-up numbers.
"""

import jax
import jax.numpy as jnp
import pytest

from benchmarks import comm_estimate as ce

CASES = {case.label: case for case in ce.TEST_CASES}
RANDOM_SETS, NUMBERING_DSPN, CLEVR = (
  CASES["random sets :test"], CASES["numbering :test, DSPN"], CASES["CLEVR :test"])


@pytest.fixture(scope="module", autouse=True)
def float32_default():
  """x64 off, as the script runs. The suite turns it on, and under it the accelerators' simplex
  projection (optax's, which the estimate traces) returns float64 rows for float32 ones, so
  numbering's inner loop carry would change type."""
  with jax.enable_x64(False):
    yield


@pytest.fixture(scope="module")
def setups():
  """The abstract model, state and batch of three :test configs, built once."""
  return {case.label: ce.setup(case) for case in (RANDOM_SETS, NUMBERING_DSPN, CLEVR)}


def test_sizes_come_from_the_abstract_state(setups):
  for label, s in setups.items():
    sizes = ce.sizes(s.state)
    assert sizes.params > 0, label
    assert sizes.grad_bytes == 4 * sizes.params, label  # float32 gradients
    # Parameters plus Adam's two moments (and any BatchNorm statistics) on each device.
    assert sizes.state_bytes >= 3 * sizes.grad_bytes, label
    leaves = jax.tree.leaves(s.state.params)
    assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in leaves), label
  clevr = ce.sizes(setups[CLEVR.label].state)  # its SmallCNN has BatchNorm at :test
  assert clevr.batch_stats > 0 and clevr.batchnorm_layers > 0
  assert ce.sizes(setups[RANDOM_SETS.label].state).batch_stats == 0


def test_the_cost_analysis_counts_a_loop_body_once():
  """Why the estimate unrolls the inner loop: a rolled loop costs one trip, whatever its
  length; an unrolled one costs every trip."""
  x = jax.ShapeDtypeStruct((32, 32), jnp.float32)

  def flops(trips, unroll):
    loop = lambda x: jax.lax.fori_loop(0, trips, lambda i, y: y @ y, x, unroll=unroll)
    return ce.lowered_cost(jax.jit(loop).lower(x)).flops

  assert flops(4, 1) == pytest.approx(flops(2, 1), rel=1e-3)
  assert flops(4, True) == pytest.approx(2 * flops(2, True), rel=1e-3)


@pytest.fixture(scope="module")
def fits(setups):
  """`ce.step_flops` (two lowerings each) of random sets (iDSPN) and numbering (DSPN)."""
  return {label: ce.step_flops(setups[label])
          for label in (RANDOM_SETS.label, NUMBERING_DSPN.label)}


@pytest.mark.parametrize("label", [RANDOM_SETS.label, NUMBERING_DSPN.label])
def test_flops_grow_with_the_inner_steps_and_extrapolate_exactly(setups, fits, label):
  s, fit = setups[label], fits[label]
  assert fit.per_inner > 0 and fit.fixed > 0
  assert fit.flops(40) > fit.flops(20) > fit.flops(5) > 0
  # The linear fit from two unrolled lowerings matches a direct one at another step count.
  direct = ce.step_cost(s, 6)
  assert fit.flops(6) == pytest.approx(direct.flops, rel=1e-9)
  assert fit.bytes_accessed(6) == pytest.approx(direct.bytes_accessed, rel=1e-9)


def test_the_step_is_traced_as_on_an_accelerator():
  before = jax.default_backend()
  with ce.traced_as_accelerator():
    assert jax.default_backend() == "gpu"
  assert jax.default_backend() == before


def test_training_inner_steps_follow_the_schedule():
  clevr = ce.load_config(ce.Case("CLEVR :paper128", "clevr", "paper128"))
  assert ce.training_inner_steps(clevr) == (20, 40)
  assert ce.training_inner_steps(ce.load_config(RANDOM_SETS)) == (4,)


def test_ring_traffic():
  assert ce.ring_allreduce_traffic(100.0, 8) == pytest.approx(175.0)
  assert ce.ring_allreduce_traffic(100.0, 2) == pytest.approx(100.0)
  assert ce.ring_allreduce_traffic(100.0, 1) == 0.0
  with pytest.raises(ValueError):
    ce.ring_allreduce_traffic(100.0, 0)


def test_predicted_time_formula():
  machine = ce.Machine("made up", devices=4, matmul_flops=1e12, link_bytes_per_s=1e9,
                       hbm_bytes_per_s=1e10)
  p = ce.predict(8e12, 4e9, machine, utilisation=0.5, bytes_accessed=4e10)
  assert p.compute_s == pytest.approx(8e12 / (4 * 1e12 * 0.5))  # 4 s
  assert p.allreduce_s == pytest.approx(2 * 3 / 4 * 4e9 / 1e9)  # 6 s
  assert p.total_s == pytest.approx(10.0)
  assert p.comm_share == pytest.approx(0.6)
  assert p.hbm_s == pytest.approx(1.0)
  with pytest.raises(ValueError):
    ce.predict(1.0, 1.0, machine, utilisation=0.0)


def test_report_and_its_section_in_the_doc(setups, fits, tmp_path):
  s = setups[RANDOM_SETS.label]
  estimate = ce.Estimate(RANDOM_SETS, s.config.train.batch_size, ce.sizes(s.state),
                         fits[RANDOM_SETS.label], ce.training_inner_steps(s.config))
  section = ce.report([estimate], 0.4)
  assert section.startswith(ce.HEADING)
  assert "estimate, not a measurement" in section and ce.COMMAND in section
  assert RANDOM_SETS.label in section
  doc = tmp_path / "doc.md"
  doc.write_text(f"# Title\n\nIntro.\n\n{ce.HEADING}\n\nold figures\n\n## Later\n\nKept.\n")
  ce.write_section(doc, section)
  ce.write_section(doc, section)  # idempotent
  text = doc.read_text()
  assert text.startswith("# Title\n\nIntro.\n\n" + ce.HEADING)
  assert "old figures" not in text and text.count(ce.HEADING) == 1
  assert text.endswith("\n## Later\n\nKept.\n")
  fresh = tmp_path / "fresh.md"
  ce.write_section(fresh, section)
  assert fresh.read_text() == section.rstrip("\n") + "\n"
