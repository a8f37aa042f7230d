"""Per-step communication and predicted step time of data-parallel training: an estimate.

  python -m benchmarks.comm_estimate                  # the paper configs; updates the doc
  python -m benchmarks.comm_estimate --utilisation=0.25 --no-write
  python -m benchmarks.comm_estimate --quick          # the :test configs, seconds

Data-parallel training (`experiments.common.train`) shards the global batch over a 1-D ``data``
mesh and replicates the parameters and the optimiser state, so each step all-reduces the
gradient of every parameter once. For each paper config this works out, without running a
step or creating an array:

1. the parameters (and BatchNorm statistics) from ``jax.eval_shape`` of the model's init, the
   bytes of the float32 gradient all-reduce, and the traffic a ring all-reduce sends from each
   device, ``2 (n - 1) / n`` times those bytes;
2. the FLOPs of one training step at the config's global batch (forward inner loop, loss,
   backward, Adam), from XLA's cost analysis of the lowered, uncompiled step
   (``jax.jit(train_step).lower(...).cost_analysis()``, which works on the lowered module in
   JAX 0.10.2: it runs XLA's HloCostAnalysis on the unoptimised HLO);
3. a predicted step time on 8 NVIDIA H100 SXM (NVLink) and on a TPU v4-8 (4 chips): compute
   time, FLOPs / (devices x peak x utilisation), plus all-reduce time, ring traffic / link
   bandwidth per device, and the share of the step that the all-reduce takes.

How loops are counted. The cost analysis counts a while loop's body once, whatever its trip
count (checked on this JAX: a ``fori_loop`` of 1, 2, 4 or 8 matmuls counts one matmul, and
fully unrolled ones count 1, 2, 4, 8). The inner loop is a ``fori_loop``, so the step is
lowered with it fully unrolled (``model.idspn.loop_unroll=True``, an option of `idspn_jax.IDSPN`)
at 3 and 4 inner steps (`FIT_STEPS`): the difference is the cost of one inner step, and the
step at T inner steps is cost(3) + (T - 3) x that difference (exact: the unrolled cost is
affine in T, which the tests check against a direct lowering at T). The while loops left in
the module are the Hungarian matching's (``"jv"``: its trips depend on the data) and, in this
CPU lowering, the random-number generator's (threefry, rolled on CPU only); each is counted
once, a small fraction of a step (a matching trip costs O(B N^2); threefry is integer work).

Accelerator code paths. Four places pick an implementation from ``jax.default_backend()``: the
FSPool sort (ranks by comparisons on CPU, a sort elsewhere), the simplex projection (pivoting
on CPU, a sort elsewhere), the matching (a host callback on CPU for N > 12, ``"jv"`` on device
elsewhere) and the CLEVR convolutions (gathered patches on CPU, XLA's convolution elsewhere).
The step is traced with ``jax.default_backend`` answering ``"gpu"`` (`traced_as_accelerator`),
so the FLOPs are those of the program a GPU or TPU runs (the choices test only for "cpu", so
the TPU's program is the same); the lowering itself is still done by the CPU backend here.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import importlib
import math
import pathlib
import textwrap
import time
from collections.abc import Iterator, Mapping
from typing import Any
from unittest import mock

import jax
import jax.numpy as jnp
import ml_collections
import optax

from experiments.common import train

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = REPO_ROOT / "docs" / "multi_machine.md"
HEADING = "## Per-step communication and predicted step time (estimate)"
COMMAND = "python -m benchmarks.comm_estimate"

# ---------------------------------------------------------------------------------------------
# Assumptions. Rates are per device; 1 GB = 1e9 bytes, 1 TFLOP = 1e12 FLOPs.

# NVIDIA H100 SXM5 datasheet (https://www.nvidia.com/en-us/data-center/h100/, "H100 SXM"
# column): FP32 67 TFLOP/s on the CUDA cores; TF32 tensor cores 989 TFLOP/s with sparsity,
# half of it dense; HBM3 3.35 TB/s; NVLink 4 900 GB/s per GPU, both directions together.
H100_FP32_FLOPS = 67e12
H100_TF32_DENSE_FLOPS = 495e12
H100_HBM_BYTES_PER_S = 3.35e12
H100_NVLINK_BYTES_PER_S = 450e9  # One direction: a ring step sends and receives at once.
# XLA's default precision for float32 matrix products and convolutions on a recent GPU is TF32
# (https://docs.jax.dev/en/latest/201/precision.html), so the matmul peak is TF32's.
H100_MATMUL_FLOPS = H100_TF32_DENSE_FLOPS

# Cloud TPU v4 (https://cloud.google.com/tpu/docs/v4): 275 TFLOP/s bf16 per chip, HBM2
# 1,200 GB/s, all-reduce bandwidth 1.1 PB/s per 4,096-chip pod. Float32 matrix products at
# XLA's default precision run as bfloat16 passes on TPU (the JAX page above), at bf16's peak.
TPU_V4_BF16_FLOPS = 275e12
TPU_V4_HBM_BYTES_PER_S = 1.2e12
TPU_V4_POD_ALLREDUCE_BYTES_PER_S = 1.1e15
TPU_V4_POD_CHIPS = 4096
# About 270 GB/s per chip: the pod figure shared evenly, assumed to hold on a 4-chip slice.
TPU_V4_ALLREDUCE_BYTES_PER_S = TPU_V4_POD_ALLREDUCE_BYTES_PER_S / TPU_V4_POD_CHIPS

# Between machines: one 400 Gb/s InfiniBand NDR port per GPU, as in NVIDIA's DGX H100
# (https://www.nvidia.com/en-us/data-center/dgx-h100/); used only in the doc's closing remark.
INTER_MACHINE_BYTES_PER_S = 400e9 / 8

# The fraction of the matmul peak a step sustains: an assumption, not a measurement (the
# inner loop's products are small, [B * N, D] x [D, H], and much of a step is elementwise
# work, sorting and the matching, on the vector units). Change it with --utilisation.
DEFAULT_UTILISATION = 0.4
# The device count of the ring-traffic column of the parameter table.
RING_DEVICES = 8


@dataclasses.dataclass(frozen=True)
class Machine:
  """A data-parallel machine: ``devices`` JAX devices, each with these rates.

  Attributes:
    name: For the table.
    devices: JAX devices (GPUs, or TPU v4 chips: one device per chip).
    matmul_flops: Peak FLOP/s of a float32 matrix product at XLA's default precision.
    link_bytes_per_s: Bytes per second one device can send to the next in a ring (one
      direction).
    hbm_bytes_per_s: Memory bandwidth.
  """

  name: str
  devices: int
  matmul_flops: float
  link_bytes_per_s: float
  hbm_bytes_per_s: float


MACHINES = (
  Machine("8 x H100 SXM", 8, H100_MATMUL_FLOPS, H100_NVLINK_BYTES_PER_S, H100_HBM_BYTES_PER_S),
  Machine("TPU v4-8 (4 chips)", 4, TPU_V4_BF16_FLOPS, TPU_V4_ALLREDUCE_BYTES_PER_S,
          TPU_V4_HBM_BYTES_PER_S),
)


@dataclasses.dataclass(frozen=True)
class Case:
  """A config to estimate: ``experiments/configs/<experiment>.py:<variant>`` plus overrides.

  Attributes:
    label: For the table.
    experiment: ``random_sets``, ``numbering`` or ``clevr``.
    variant: The config variant.
    overrides: Dotted config keys and values, as ``--config.<key>=<value>`` would set them.
  """

  label: str
  experiment: str
  variant: str
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)


CASES = (
  Case("random sets :paper, iDSPN", "random_sets", "paper"),
  Case("random sets :paper, DSPN", "random_sets", "paper", {"model.decoder": "dspn"}),
  Case("numbering :paper, iDSPN", "numbering", "paper", {"model.name": "idspn"}),
  Case("numbering :paper, DSPN", "numbering", "paper", {"model.name": "dspn"}),
  Case("CLEVR :paper128", "clevr", "paper128"),
  Case("CLEVR :paper256", "clevr", "paper256"),
)
TEST_CASES = (
  Case("random sets :test", "random_sets", "test"),
  Case("numbering :test, iDSPN", "numbering", "test", {"model.name": "idspn"}),
  Case("numbering :test, DSPN", "numbering", "test", {"model.name": "dspn"}),
  Case("CLEVR :test", "clevr", "test"),
)

# ---------------------------------------------------------------------------------------------
# Configs, models and abstract batches.


@dataclasses.dataclass(frozen=True)
class Setup:
  """What lowering a config's training step needs, all abstract (shapes and dtypes only).

  Attributes:
    case: The config it comes from.
    config: The config, resolved, with the inner loop fully unrolled.
    task: A `train.Task` holding the model and the loss (its data fields are unused).
    state: The `train.TrainState` as ``jax.ShapeDtypeStruct`` leaves.
    batch: The global training batch as ``jax.ShapeDtypeStruct`` leaves.
  """

  case: Case
  config: ml_collections.ConfigDict
  task: train.Task
  state: train.TrainState
  batch: dict[str, jax.ShapeDtypeStruct]


def load_config(case: Case) -> ml_collections.ConfigDict:
  """The case's config with its overrides and ``model.idspn.loop_unroll=True``, resolved."""
  module = importlib.import_module(f"experiments.configs.{case.experiment}")
  config = ml_collections.ConfigDict(module.get_config(case.variant).to_dict())  # unlocked
  for key, value in case.overrides.items():
    *parents, name = key.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    if name not in node:
      raise KeyError(f"{case.experiment}:{case.variant} has no config key {key!r}")
    node[name] = value
  # Every inner step becomes its own ops, so the cost analysis counts each one (see the module
  # docstring); the layer's value changes how XLA schedules the loop, not what it computes.
  config.model.idspn.loop_unroll = True
  if case.experiment == "numbering":
    from experiments.numbering import task as numbering_task

    config = numbering_task.resolve_config(config)
  return config


def _abstract_batch(experiment: str, config: ml_collections.ConfigDict,
                    size: int) -> dict[str, jax.ShapeDtypeStruct]:
  """The keys, shapes and dtypes of a training batch of ``size`` examples (see each
  experiment's data module); only the keys the model and the loss read."""
  f32 = jnp.float32
  if experiment == "random_sets":
    return {"set": jax.ShapeDtypeStruct((size, config.data.set_size, config.data.set_dim), f32)}
  if experiment == "numbering":
    s, c = config.data.set_size, config.data.n_classes
    return {"inputs": jax.ShapeDtypeStruct((size, s, c), f32),
            "targets": jax.ShapeDtypeStruct((size, s, s), f32)}
  if experiment == "clevr":
    from experiments.clevr import scenes

    side = config.data.image_size
    return {"image": jax.ShapeDtypeStruct((size, side, side, 3), f32),
            "set": jax.ShapeDtypeStruct((size, scenes.SET_SIZE, scenes.OBJECT_DIM), f32)}
  raise ValueError(f"unknown experiment {experiment!r}")


def _model_and_loss(experiment: str, config: ml_collections.ConfigDict):
  """The experiment's model (its ``create_model``) and per-example training loss."""
  if experiment == "random_sets":
    from experiments.random_sets import task as module

    return module.create_model(config), module.hungarian_loss
  if experiment == "numbering":
    from experiments.numbering import models as numbering_models
    from experiments.numbering import task as module

    loss_type = numbering_models.numbering_loss_type(config.model.name)
    return (module.create_model(config),
            functools.partial(module.numbering_loss, loss_type=loss_type))
  if experiment == "clevr":
    from experiments.clevr import task as module

    return module.create_model(config), module.hungarian_loss
  raise ValueError(f"unknown experiment {experiment!r}")


def optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """The outer optimiser as `train.create_train_state` builds it (Adam or AdamW, optionally
  after global-norm clipping); its state is what each device holds besides the parameters."""
  if config.train.weight_decay:
    tx = optax.adamw(train.create_learning_rate(config), weight_decay=config.train.weight_decay)
  else:
    tx = optax.adam(train.create_learning_rate(config))
  if config.train.grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(config.train.grad_clip_norm), tx)
  return tx


def _unused(*args, **kwargs):
  raise NotImplementedError("the estimate reads no data")


def setup(case: Case) -> Setup:
  """Builds the case's model and abstract training state and batch (no arrays are made)."""
  config = load_config(case)
  model, loss = _model_and_loss(case.experiment, config)
  batch = _abstract_batch(case.experiment, config, config.train.batch_size)
  task = train.Task(name=case.label, model=model, loss=loss, train_batches=_unused,
                    eval_batches=_unused, eval_metrics=_unused)

  def create_state(batch):
    """`train.create_train_state` without the data and the mesh: init, then the state."""
    init_rng, state_rng = jax.random.split(jax.random.PRNGKey(config.seed))
    rngs = {"params": init_rng, "start": init_rng, "noise": init_rng, "dropout": init_rng}
    variables = model.init(rngs, batch, train=False, steps=1)
    return train.TrainState.create(
      apply_fn=model.apply, params=variables["params"], tx=optimizer(config),
      batch_stats=variables.get("batch_stats", {}), rng=state_rng,
    )

  with traced_as_accelerator():
    state = jax.eval_shape(create_state, batch)
  return Setup(case, config, task, state, batch)


# ---------------------------------------------------------------------------------------------
# Parameters and all-reduce bytes.


def count(tree) -> int:
  """Number of values in a pytree of arrays or ``ShapeDtypeStruct``s."""
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def nbytes(tree) -> int:
  """Bytes of a pytree of arrays or ``ShapeDtypeStruct``s."""
  return sum(math.prod(leaf.shape) * jnp.dtype(leaf.dtype).itemsize
             for leaf in jax.tree.leaves(tree))


def ring_allreduce_traffic(total_bytes: float, devices: int) -> float:
  """Bytes each device sends (and receives) in a ring all-reduce of ``total_bytes``.

  A ring all-reduce is a reduce-scatter then an all-gather, each ``n - 1`` steps of
  ``total_bytes / n``: ``2 (n - 1) / n x total_bytes`` per device; 0 on one device.
  """
  if devices < 1:
    raise ValueError(f"devices must be >= 1, got {devices}")
  return 2 * (devices - 1) / devices * total_bytes


@dataclasses.dataclass(frozen=True)
class Sizes:
  """What each device holds and what each step all-reduces.

  Attributes:
    params: Trainable parameters.
    batch_stats: BatchNorm running statistics (not all-reduced with the gradients).
    batchnorm_layers: BatchNorm layers (each keeps a mean and a variance).
    grad_bytes: Bytes of the gradient all-reduce of one step.
    state_bytes: Bytes of the parameters, optimiser state and statistics on each device.
  """

  params: int
  batch_stats: int
  batchnorm_layers: int
  grad_bytes: int
  state_bytes: int


def sizes(state: train.TrainState) -> Sizes:
  """Parameter counts and bytes of an (abstract) training state."""
  kept = (state.params, state.opt_state, state.batch_stats)
  stats = state.batch_stats or {}
  return Sizes(params=count(state.params), batch_stats=count(stats),
               batchnorm_layers=len(jax.tree.leaves(stats)) // 2,
               grad_bytes=nbytes(state.params), state_bytes=nbytes(kept))


# ---------------------------------------------------------------------------------------------
# FLOPs.


@contextlib.contextmanager
def traced_as_accelerator(platform: str = "gpu") -> Iterator[None]:
  """Within the block, ``jax.default_backend()`` answers ``platform``.

  The library and the experiments choose some implementations by the backend (see the module
  docstring); tracing inside this block gives the program an accelerator would run, while JAX
  itself (which asks its own backend module, not this attribute) still lowers for the CPU.
  """
  with mock.patch.object(jax, "default_backend", lambda: platform):
    yield


@dataclasses.dataclass(frozen=True)
class Cost:
  """XLA's cost analysis of a lowered, unoptimised module.

  Attributes:
    flops: Floating-point operations (a multiply-add counts 2).
    bytes_accessed: Bytes every op reads and writes, before fusion: an upper bound on the
      memory traffic of the compiled program.
    while_loops: While loops left in the module, each body counted once.
  """

  flops: float
  bytes_accessed: float
  while_loops: int


def lowered_cost(lowered) -> Cost:
  """The `Cost` of a ``jax.jit(...).lower(...)`` result."""
  analysis = lowered.cost_analysis()
  if isinstance(analysis, list | tuple):
    analysis = analysis[0]
  if not analysis or "flops" not in analysis:
    raise RuntimeError(f"XLA's cost analysis gave no FLOPs: {analysis!r}")
  return Cost(flops=float(analysis["flops"]),
              bytes_accessed=float(analysis.get("bytes accessed", 0.0)),
              while_loops=lowered.as_text().count("stablehlo.while"))


def step_cost(s: Setup, inner_steps: int) -> Cost:
  """The cost of one training step (`train.train_step`) at ``inner_steps`` inner steps, with
  the inner loop unrolled as the config says (`load_config`: fully)."""
  step = functools.partial(train.train_step, task=s.task, inner_steps=inner_steps)
  with traced_as_accelerator():
    lowered = jax.jit(step).lower(s.state, s.batch)
  return lowered_cost(lowered)


@dataclasses.dataclass(frozen=True)
class StepFlops:
  """The FLOPs of a training step as a function of the inner steps: fixed + T x per_inner.

  Attributes:
    fixed: FLOPs that do not grow with the inner steps (encoders, loss, backward, Adam).
    per_inner: FLOPs of one inner step (one gradient of the energy and the update).
    bytes_fixed, bytes_per_inner: The same for XLA's (unfused) bytes accessed.
    while_loops: While loops the cost analysis counted once (the matching's and, in a CPU
      lowering, the random-number generator's).
  """

  fixed: float
  per_inner: float
  bytes_fixed: float
  bytes_per_inner: float
  while_loops: int

  def flops(self, inner_steps: int) -> float:
    return self.fixed + inner_steps * self.per_inner

  def bytes_accessed(self, inner_steps: int) -> float:
    return self.bytes_fixed + inner_steps * self.bytes_per_inner


#: The inner-step counts whose unrolled lowerings give the fixed and per-inner-step cost. Not 1
#: and 2: the layer runs T - 1 steps in its loop and the last one after it (the implicit
#: gradient is taken at the iterate before the last step), and JAX lowers a loop of 0 or 1
#: trips differently (a 1-trip loop stays a while loop), a few hundred FLOPs off the line.
FIT_STEPS = (3, 4)


def step_flops(s: Setup) -> StepFlops:
  """The per-inner-step and fixed cost, from unrolled lowerings at `FIT_STEPS` inner steps."""
  low, high = FIT_STEPS
  a, b = step_cost(s, low), step_cost(s, high)
  per_inner = (b.flops - a.flops) / (high - low)
  per_bytes = (b.bytes_accessed - a.bytes_accessed) / (high - low)
  if per_inner <= 0:
    raise RuntimeError(f"{s.case.label}: an inner step added {per_inner} FLOPs; is the inner "
                       "loop still rolled?")
  return StepFlops(fixed=a.flops - low * per_inner, per_inner=per_inner,
                   bytes_fixed=a.bytes_accessed - low * per_bytes, bytes_per_inner=per_bytes,
                   while_loops=b.while_loops)


def training_inner_steps(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """The inner-step counts training runs with: one, or two with ``train.inner_steps_schedule``
  (half of them in the first half of training, `train.inner_steps_at`)."""
  first = train.inner_steps_at(0, config)
  last = train.inner_steps_at(config.train.steps - 1, config)
  return tuple(sorted({first, last}))


# ---------------------------------------------------------------------------------------------
# Predicted step time.


@dataclasses.dataclass(frozen=True)
class Prediction:
  """A predicted step: compute, then the gradient all-reduce (no overlap assumed).

  Attributes:
    compute_s: FLOPs / (devices x matmul peak x utilisation).
    allreduce_s: Ring traffic per device / link bandwidth per device.
    hbm_s: Unfused bytes accessed / (devices x HBM bandwidth): an upper bound on the time the
      step's memory traffic needs, since fusion removes most of those bytes.
  """

  compute_s: float
  allreduce_s: float
  hbm_s: float

  @property
  def total_s(self) -> float:
    return self.compute_s + self.allreduce_s

  @property
  def comm_share(self) -> float:
    """The all-reduce's share of the step."""
    return self.allreduce_s / self.total_s if self.total_s else 0.0


def predict(flops: float, grad_bytes: float, machine: Machine, utilisation: float,
            bytes_accessed: float = 0.0) -> Prediction:
  """The step time of ``flops`` (the global batch's) and a ``grad_bytes`` all-reduce on
  ``machine``, each device computing its 1/devices of the batch."""
  if not 0 < utilisation <= 1:
    raise ValueError(f"utilisation must be in (0, 1], got {utilisation}")
  n = machine.devices
  return Prediction(
    compute_s=flops / (n * machine.matmul_flops * utilisation),
    allreduce_s=ring_allreduce_traffic(grad_bytes, n) / machine.link_bytes_per_s,
    hbm_s=bytes_accessed / (n * machine.hbm_bytes_per_s),
  )


# ---------------------------------------------------------------------------------------------
# The report.


@dataclasses.dataclass(frozen=True)
class Estimate:
  """One case's figures.

  Attributes:
    case: The config.
    batch_size: Its global training batch.
    sizes: Parameters, statistics and bytes (`sizes`).
    flops: FLOPs of a step against the inner steps (`step_flops`).
    inner_steps: The inner-step counts training runs with (`training_inner_steps`).
  """

  case: Case
  batch_size: int
  sizes: Sizes
  flops: StepFlops
  inner_steps: tuple[int, ...]


def estimate(case: Case) -> Estimate:
  """Sizes and FLOPs of one case (two lowerings of its training step)."""
  s = setup(case)
  return Estimate(case=case, batch_size=s.config.train.batch_size, sizes=sizes(s.state),
                  flops=step_flops(s), inner_steps=training_inner_steps(s.config))


def _mb(size: float) -> str:
  """Bytes as decimal megabytes for the tables."""
  return f"{size / 1e6:,.2f}"


def _ms(seconds: float) -> str:
  """Seconds as milliseconds, three significant digits."""
  return f"{seconds * 1e3:.3g}"


def _wrap(text: str, indent: str = "") -> str:
  """A paragraph (or a list item, continued at ``indent``) wrapped at 100 columns, without
  breaking words, URLs or code spans at hyphens."""
  return textwrap.fill(text, width=100, subsequent_indent=indent, break_long_words=False,
                       break_on_hyphens=False)


def size_table(estimates: list[Estimate], ring_devices: int = RING_DEVICES) -> str:
  """Markdown: parameters, per-device state, all-reduce bytes and ring traffic."""
  rows = [
    "| config | parameters | BatchNorm layers (statistics) | parameters + Adam state per device "
    f"(MB) | gradient all-reduce per step (MB, float32) | ring traffic per device, n = "
    f"{ring_devices} (MB) |",
    "|---|---:|---:|---:|---:|---:|",
  ]
  for e in estimates:
    z = e.sizes
    bn = f"{z.batchnorm_layers} ({z.batch_stats:,})" if z.batch_stats else "none"
    rows.append(
      f"| {e.case.label} | {z.params:,} | {bn} | {_mb(z.state_bytes)} | {_mb(z.grad_bytes)} "
      f"| {_mb(ring_allreduce_traffic(z.grad_bytes, ring_devices))} |")
  return "\n".join(rows)


def time_table(estimates: list[Estimate], utilisation: float,
               machines: tuple[Machine, ...] = MACHINES) -> str:
  """Markdown: FLOPs per step and the predicted step time on each machine."""
  head = "| config | batch | inner steps | GFLOP per step | GFLOP per inner step |"
  rule = "|---|---:|---:|---:|---:|"
  for m in machines:
    head += f" {m.name}: compute (ms) | all-reduce (ms) | all-reduce share | HBM bound (ms) |"
    rule += "---:|---:|---:|---:|"
  rows = [head, rule]
  for e in estimates:
    for steps in e.inner_steps:
      flops = e.flops.flops(steps)
      row = (f"| {e.case.label} | {e.batch_size} | {steps} | {flops / 1e9:,.1f} "
             f"| {e.flops.per_inner / 1e9:,.2f} |")
      for m in machines:
        p = predict(flops, e.sizes.grad_bytes, m, utilisation, e.flops.bytes_accessed(steps))
        row += (f" {_ms(p.compute_s)} | {_ms(p.allreduce_s)} | {100 * p.comm_share:.0f}% "
                f"| {_ms(p.hbm_s)} |")
      rows.append(row)
  return "\n".join(rows)


def assumptions(utilisation: float) -> str:
  """Markdown list of the constants behind the prediction, with their sources."""
  h100, tpu = MACHINES
  return "\n".join(_wrap(item, "  ") for item in [
    f"- **{h100.name}**, NVLink 4: matmul peak {h100.matmul_flops / 1e12:.0f} TFLOP/s per GPU "
    "(TF32 tensor cores, dense: XLA's default precision for float32 products on the GPU is "
    f"TF32; FP32 on the CUDA cores is {H100_FP32_FLOPS / 1e12:.0f}), link "
    f"{h100.link_bytes_per_s / 1e9:.0f} GB/s per GPU each way (NVLink 4's "
    f"{2 * H100_NVLINK_BYTES_PER_S / 1e9:.0f} GB/s counts both directions), HBM3 "
    f"{h100.hbm_bytes_per_s / 1e12:.2f} TB/s. Source: NVIDIA's H100 datasheet, SXM column "
    "(https://www.nvidia.com/en-us/data-center/h100/).",
    f"- **{tpu.name}**: {tpu.matmul_flops / 1e12:.0f} TFLOP/s bf16 per chip (float32 products "
    "at XLA's default precision run as bf16 passes), all-reduce bandwidth "
    f"{TPU_V4_POD_ALLREDUCE_BYTES_PER_S / 1e15:.1f} PB/s per {TPU_V4_POD_CHIPS:,}-chip pod, "
    f"i.e. about {tpu.link_bytes_per_s / 1e9:.0f} GB/s per chip (assumed to hold on 4 chips), "
    f"HBM2 {tpu.hbm_bytes_per_s / 1e12:.1f} TB/s; one JAX device per chip. Source: Google's "
    "Cloud TPU v4 documentation (https://cloud.google.com/tpu/docs/v4). Default precisions: "
    "https://docs.jax.dev/en/latest/201/precision.html.",
    f"- **Utilisation {100 * utilisation:.0f}%** of the matmul peak over the whole step: an "
    "assumption, not a measurement (`--utilisation`).",
    "- **Compute** = FLOPs of the global batch / (devices × peak × utilisation): each device "
    "computes its 1/n of the batch. **All-reduce** = 2 (n - 1) / n × gradient bytes (a ring) "
    "/ link bandwidth per device, not overlapped with the backward pass (XLA may overlap it), "
    "with no latency term. **Share** = all-reduce / (compute + all-reduce).",
    "- **HBM bound** = XLA's bytes accessed by the unfused module / (devices × HBM "
    "bandwidth): what the step's memory traffic would take if no op were fused, an upper "
    "bound on it (fusion keeps most intermediates on chip).",
  ])


def report(estimates: list[Estimate], utilisation: float) -> str:
  """The doc section: heading, what this is, how to regenerate it, the tables, the
  assumptions and how to read them."""
  command = COMMAND + ("" if utilisation == DEFAULT_UTILISATION
                       else f" --utilisation={utilisation:g}")
  scheduled = [e for e in estimates if len(e.inner_steps) > 1]
  schedule = (
    f" {scheduled[0].case.label.split()[0]} trains with "
    f"{' then '.join(str(t) for t in scheduled[0].inner_steps)} inner steps (the first half "
    "of training with half of them, `train.inner_steps_schedule`), so it has a row for each."
    if scheduled else "")
  loops = sorted({e.flops.while_loops for e in estimates})
  bn = [e for e in estimates if e.sizes.batchnorm_layers]
  batchnorm = (
    f" The {bn[0].case.label.split()[0]} encoder's {bn[0].sizes.batchnorm_layers} BatchNorm "
    "layers normalise over the global batch, so each also all-reduces its channel sums in the "
    "forward and the backward pass: a few dozen small all-reduces per step, each costing a "
    "collective's latency (microseconds) more than its bytes, which the table leaves out."
    if bn else "")
  first = MACHINES[0]
  per_device = min(e.batch_size for e in estimates) // first.devices
  rows = [(e, t) for e in estimates for t in e.inner_steps]
  above = sum(
    predict(e.flops.flops(t), e.sizes.grad_bytes, first, utilisation,
            e.flops.bytes_accessed(t)).hbm_s
    > predict(e.flops.flops(t), e.sizes.grad_bytes, first, utilisation).compute_s
    for e, t in rows)
  memory = ("in every row" if above == len(rows) else f"in {above} of {len(rows)} rows")
  intro = (
    "**An estimate, not a measurement**: worked out from XLA's FLOP count of each training "
    "step and the machines' published peak rates and link bandwidths; nothing was run on "
    "those machines. It only traces and lowers the steps (nothing is compiled or run), in "
    "seconds on a CPU; regenerate this section with:")
  sizes_text = (
    "Parameters and BatchNorm statistics come from `jax.eval_shape` of each model's init. "
    "Each step all-reduces one float32 gradient per parameter; the BatchNorm statistics are "
    "not part of it (CLEVR's ResNet head depends on the image size, hence two parameter "
    "counts). MB are 10^6 bytes.")
  flops_text = (
    "FLOPs are XLA's cost analysis of the lowered, uncompiled training step at the config's "
    "global batch (forward inner loop, loss, backward, Adam). That analysis counts a while "
    "loop's body once, whatever its trip count, so the step was lowered with the inner loop "
    f"fully unrolled (`model.idspn.loop_unroll=True`) at {FIT_STEPS[0]} and {FIT_STEPS[1]} "
    "inner steps: the difference is one inner step (the energy's gradient and the update; "
    "DSPN also backpropagates through each step, iDSPN's Jacobian-free backward does not), "
    "and the table extrapolates linearly to the config's inner steps (the unrolled cost is "
    f"affine in them). The while loops left ({' or '.join(str(n) for n in loops)} per step) "
    "are the Hungarian matching's, whose trips depend on the data, and the random-number "
    "generator's, which the CPU lowering keeps rolled; each is counted once, a small part of "
    "the step. The step was traced with the accelerators' code paths (FSPool and the simplex "
    "projection by sorting, the matching on the device, XLA's convolutions)." + schedule)
  slower = first.link_bytes_per_s / INTER_MACHINE_BYTES_PER_S
  reading = (
    "Reading the table: the gradient all-reduce is small (at most "
    f"{max(e.sizes.grad_bytes for e in estimates) / 1e6:.0f} MB), and so is the predicted "
    f"compute per device at these batch sizes ({per_device} examples per device on the "
    f"{first.name}). At a millisecond or less, a real step is more likely set by kernel "
    "launches, the inner loop's sequential steps and memory traffic (on the "
    f"{first.name} the HBM bound is above the compute time {memory}) than by FLOPs, so the "
    "compute will likely take longer than shown; the all-reduce can also fall short of the "
    "link's bandwidth (messages of a few MB rarely reach it), so read the shares as rough "
    "proportions, not predictions." + batchnorm + " Across machines the slowest link sets "
    "the pace of a ring: with one 400 Gb/s InfiniBand port per GPU between machines "
    f"({INTER_MACHINE_BYTES_PER_S / 1e9:.0f} GB/s), the {first.name} all-reduce times would "
    f"grow about {slower:.0f}-fold.")
  return "\n".join([
    HEADING, "", _wrap(intro), "", "```", command, "```", "", _wrap(sizes_text), "",
    size_table(estimates), "", _wrap(flops_text), "", time_table(estimates, utilisation), "",
    "Assumptions:", "", assumptions(utilisation), "", _wrap(reading), "",
  ])


def write_section(path: pathlib.Path, section: str) -> None:
  """Replaces the section under `HEADING` in ``path`` (up to the next ``## `` heading, or the
  end) with ``section``, or appends it if absent; the rest of the file is left as it is."""
  lines = path.read_text().splitlines() if path.exists() else []
  body = section.rstrip("\n").splitlines()
  if HEADING in lines:
    start = lines.index(HEADING)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
               len(lines))
    lines[start:end] = body + ([""] if end < len(lines) else [])
  else:
    lines += ([""] if lines and lines[-1] else []) + body
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--utilisation", type=float, default=DEFAULT_UTILISATION,
                      help="fraction of the matmul peak a step sustains (default %(default)s)")
  parser.add_argument("--quick", action="store_true",
                      help="the :test configs (a smoke test); never writes the doc")
  parser.add_argument("--no-write", dest="write", action="store_false",
                      help=f"print only; do not update {DOC.relative_to(REPO_ROOT)}")
  parser.add_argument("--doc", type=pathlib.Path, default=DOC, help="the doc to update")
  args = parser.parse_args(argv)

  start = time.perf_counter()
  estimates = []
  for case in TEST_CASES if args.quick else CASES:
    tick = time.perf_counter()
    estimates.append(estimate(case))
    print(f"{case.label}: {time.perf_counter() - tick:.1f} s", flush=True)
  section = report(estimates, args.utilisation)
  print()
  print(section)
  if args.write and not args.quick:
    write_section(args.doc, section)
    print(f"Wrote the section to {args.doc}")
  print(f"Wall time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
  main()
