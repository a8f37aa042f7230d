"""The training and evaluation loop that every experiment shares, and its command line.

An experiment describes itself as a `Task` (model, per-example loss, data, host-side metrics,
a picture) and calls `train_and_evaluate(config, workdir, task)`; its ``__main__`` calls
`main`, which reads ``--config`` and ``--workdir``, checks the config and runs the task. The loop:

* one `jax.jit` training step, the global batch sharded over every device of a 1-D ``data``
  mesh, parameters and optimiser state replicated (multi-host: each process feeds its slice);
* deterministic data order from the seed, so a run restarted from its workdir continues
  exactly as an uninterrupted one (same parameters, same batches);
* a learning-rate drop (at once, linear or cosine) and the inner-step schedule (half the inner
  steps in the first half of training) as config options;
* evaluation every ``eval_every`` steps with its own inner steps, metrics to TensorBoard and
  ``metrics.jsonl``, a picture per evaluation, a summary table at the end;
* orbax checkpoints (the last K and the best), Ctrl-C saves before exiting, a non-finite loss
  stops the run with the last good checkpoint kept;
* the config's values checked before anything is compiled (`experiments.common.validation`),
  so a typo fails at once, naming its key.

What a run writes besides checkpoints (metrics, config record, summary, progress bar) is in
`experiments.common.reporting`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import pathlib
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from experiments.common import (
  batching,
  checkpointing,
  distributed,
  hugepages,
  models,
  reporting,
  validation,
)

Batch = dict[str, np.ndarray]
Config = ml_collections.ConfigDict


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN or infinite loss."""


@dataclasses.dataclass(frozen=True)
class Task:
  """What an experiment plugs into the shared loop.

  Attributes:
    name: Short name for logs.
    model: Flax module called as ``model(batch, train=..., steps=...)``; returns predictions.
    loss: ``loss(pred, batch) -> [B]`` per-example training loss (jax, differentiable).
    train_batches: ``train_batches(start_step) -> iterator`` of global numpy batches; the
      batch at step s must depend only on (seed, s), so that a resumed run sees the same data.
    eval_batches: ``eval_batches(split) -> iterable`` of numpy batches (of a split or an extra
      evaluation set). A batch may mark its real rows in ``batch[batching.VALID]`` (a padded
      last batch, see `experiments.common.batching`); the others are left out of the metrics.
    eval_metrics: ``eval_metrics(preds, batches) -> {name: float}`` on the host, from the lists
      of predictions and batches of one split.
    plot: ``plot(pred, batch, path, split=...)`` draws predictions against targets into a PNG
      (``split``: the split or extra set the batch comes from), or None.
    eval_splits: Splits evaluated during training (first) and in the final summary (all).
    extra_eval_splits: Further evaluation sets, evaluated with the first split at every
      evaluation during training and in the final summary, and reported under their own names
      as splits are (``<name>/<metric>`` in TensorBoard, a row of the summary, pictures
      ``<name>_step*.png``). The best checkpoint is still picked on the first split.
    metrics: The names ``eval_metrics`` returns (besides ``loss``, which the loop adds), for
      checking ``train.best_metric`` before training; None: not known, not checked.
  """

  name: str
  model: nn.Module
  loss: Callable[[Any, Batch], jax.Array]
  train_batches: Callable[[int], Iterator[Batch]]
  eval_batches: Callable[[str], Iterable[Batch]]
  eval_metrics: Callable[[list[Any], list[Batch]], dict[str, float]]
  plot: Callable[..., None] | None = None
  eval_splits: tuple[str, ...] = ("val",)
  extra_eval_splits: tuple[str, ...] = ()
  metrics: tuple[str, ...] | None = None


class TrainState(train_state.TrainState):
  """Parameters, optimiser state, BatchNorm statistics and the run's rng key."""

  batch_stats: Any = None
  rng: jax.Array | None = None


# ---------------------------------------------------------------------------------------------
# Schedules.


def inner_steps_at(step: int, config: ml_collections.ConfigDict) -> int:
  """Inner steps for outer step ``step``: half of them in the first half, with the schedule."""
  steps = models.inner_steps(config)
  if config.train.inner_steps_schedule and step < config.train.steps // 2:
    return max(1, steps // 2)
  return steps


def create_learning_rate(config: ml_collections.ConfigDict) -> optax.Schedule:
  """The outer learning rate: constant, then from step ``lr_drop_step`` on multiplied by
  ``lr_drop_factor`` at once (``lr_decay="step"``) or brought down to that factor at the last
  step linearly or along a half cosine (``"linear"``, ``"cosine"``); ``lr_drop_step`` 0: constant.
  """
  lr = config.train.learning_rate
  start, factor = int(config.train.lr_drop_step), config.train.lr_drop_factor
  kind = config.train.lr_decay
  if kind not in ("step", "linear", "cosine"):
    raise ValueError(f"train.lr_decay={kind!r}: expected 'step', 'linear' or 'cosine'")
  if not start:
    return optax.constant_schedule(lr)
  if kind == "step":
    return optax.piecewise_constant_schedule(lr, {start: factor})
  if start >= config.train.steps:
    raise ValueError(
      f"train.lr_drop_step={start} must come before train.steps={config.train.steps} for "
      f"lr_decay={kind!r} (the decay ends at the last step)"
    )
  length = config.train.steps - start
  if kind == "linear":
    decay = optax.linear_schedule(lr, lr * factor, length)
  else:
    decay = optax.cosine_decay_schedule(lr, length, alpha=factor)
  return optax.join_schedules([optax.constant_schedule(lr), decay], [start])


# ---------------------------------------------------------------------------------------------
# Steps.


#: The collection where a model sows extra training-loss terms (scalars, already weighted) with
#: ``self.sow(AUX_LOSSES, name, value)``; the training step adds them to the task's loss.
#: Evaluation does not make it mutable, so sowing there is a no-op.
AUX_LOSSES = "aux_losses"


def _variables(state: TrainState, params) -> dict:
  variables = {"params": params}
  if state.batch_stats:
    variables["batch_stats"] = state.batch_stats
  return variables


def _rngs(key: jax.Array) -> dict[str, jax.Array]:
  start, noise, dropout = jax.random.split(key, 3)
  return {"start": start, "noise": noise, "dropout": dropout}


def train_step(state: TrainState, batch: Batch, *, task: Task, inner_steps: int):
  """One optimiser step on a (sharded) batch; returns the new state and scalar metrics."""
  key = jax.random.fold_in(state.rng, state.step)

  def loss_fn(params):
    pred, updates = state.apply_fn(
      _variables(state, params), batch, train=True, steps=inner_steps, rngs=_rngs(key),
      mutable=["batch_stats", AUX_LOSSES],
    )
    loss = jnp.mean(task.loss(pred, batch))
    # Scalars the model sowed into AUX_LOSSES (already weighted) join the objective.
    aux = sum(jax.tree.leaves(updates.get(AUX_LOSSES, {})), jnp.zeros((), loss.dtype))
    return loss + aux, (updates, loss, aux)

  (_, (updates, loss, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads, batch_stats=updates.get("batch_stats"))
  return state, {"loss": loss, "aux_loss": aux, "grad_norm": optax.tree.norm(grads)}


def eval_step(state: TrainState, batch: Batch, *, task: Task, inner_steps: int, key: jax.Array):
  """Predictions and per-example losses on a batch, with fixed randomness."""
  pred = state.apply_fn(
    _variables(state, state.params), batch, train=False, steps=inner_steps, rngs=_rngs(key)
  )
  return pred, task.loss(pred, batch)


@jax.jit
def _all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


# ---------------------------------------------------------------------------------------------
# Devices and data placement.


def create_mesh() -> Mesh:
  """A 1-D mesh named ``data`` over every device of every process."""
  return Mesh(np.asarray(jax.devices()), ("data",))


def shard_batch(batch: Batch, mesh: Mesh) -> dict[str, jax.Array]:
  """Places this process's share of a batch on the mesh, split along the first axis.

  In a single process the share is the whole batch. With several, each passes the rows it
  loaded (`batching.Batches` loads process p's share) and the global batch is their
  concatenation in process order.
  """
  sharding = NamedSharding(mesh, P("data"))
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}


def replicate(tree, mesh: Mesh):
  """Places a tree that every process holds alike on every device of the mesh.

  With several processes JAX checks that they pass equal values (a collective), so they meet
  first (`distributed.barrier`).
  """
  distributed.barrier("replicate")
  return jax.device_put(tree, NamedSharding(mesh, P()))


def _to_host(tree):
  """A tree of global (or process-local host) arrays as whole NumPy arrays on every process."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)
  return jax.tree.map(np.asarray, tree)


# ---------------------------------------------------------------------------------------------
# The run.


def _check_workdir(workdir: pathlib.Path) -> None:
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    # One probe per process: the processes of a multi-process run share the workdir.
    probe = workdir / f".write_probe.{socket.gethostname()}.{os.getpid()}"
    probe.write_text("ok")
    probe.unlink()
  except OSError as err:
    raise OSError(f"the workdir {workdir} is not writable: {err}") from err


def create_train_state(config: ml_collections.ConfigDict, task: Task, mesh: Mesh) -> TrainState:
  """Initialises the model on one example batch and replicates the state over the mesh."""
  rng = jax.random.PRNGKey(config.seed)
  init_rng, state_rng = jax.random.split(rng)
  example = next(iter(task.train_batches(0)))
  example = {k: v[: mesh.size] for k, v in example.items()}

  @jax.jit
  def init(example):
    return task.model.init(_rngs(init_rng) | {"params": init_rng}, example, train=False,
                           steps=1)

  variables = init(example)
  if config.train.weight_decay:
    tx = optax.adamw(create_learning_rate(config), weight_decay=config.train.weight_decay)
  else:
    tx = optax.adam(create_learning_rate(config))
  if config.train.grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(config.train.grad_clip_norm), tx)
  state = TrainState.create(
    apply_fn=task.model.apply, params=variables["params"], tx=tx,
    batch_stats=variables.get("batch_stats", {}), rng=state_rng,
  )
  return replicate(state, mesh)


def evaluate(state: TrainState, task: Task, config, mesh: Mesh, split: str,
             eval_fn) -> tuple[dict[str, float], Any, Batch]:
  """Metrics on a whole split; also returns the first batch's predictions for a picture.

  The rows that a batch marks as padding (``batching.VALID``) are dropped from the predictions,
  losses and batches before the metrics and the picture see them.
  """
  key = jax.random.PRNGKey(config.seed + 1_000_003)  # the same randomness at every evaluation
  preds, batches, losses = [], [], []
  for i, batch in enumerate(task.eval_batches(split)):
    # The row mask stays on the host: the compiled step sees the arrays of an unpadded batch.
    inputs = {k: v for k, v in batch.items() if k != batching.VALID}
    size = len(next(iter(inputs.values()))) * jax.process_count()
    distributed.check_batch_split(size, f"{split} batch size")
    pred, loss = eval_fn(state, shard_batch(inputs, mesh), key=jax.random.fold_in(key, i))
    pred, loss = _to_host(pred), _to_host(loss)
    # The metrics need the whole batch: gather the processes' shares (a no-op in one process).
    batch = _to_host(batch)
    if batching.VALID in batch:
      keep = np.asarray(batch[batching.VALID]) > 0  # [B]
      pred = jax.tree.map(lambda x: x[keep], pred)
      loss = loss[keep]
      batch = {k: v[keep] for k, v in batch.items() if k != batching.VALID}
    preds.append(pred)
    losses.append(loss)
    batches.append(batch)
  if not batches:
    raise ValueError(f"the {split} split yielded no batch")
  metrics = {"loss": float(np.mean(np.concatenate(losses)))}
  metrics.update(task.eval_metrics(preds, batches))
  return metrics, preds[0], batches[0]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike,
                       task: Task) -> TrainState:
  """Trains ``task`` as ``config`` says, in ``workdir``; returns the final state.

  Restarting with the same workdir resumes from the newest readable checkpoint. With
  ``config.eval_only`` the newest checkpoint is evaluated and nothing is trained.
  """
  validation.check_run(config)
  if task.metrics is not None:
    validation.check_best_metric(config, task.metrics)
  names = ("train", *task.eval_splits, *task.extra_eval_splits)
  if len(set(names)) != len(names):
    # Each is a metrics record, a TensorBoard prefix and a summary row of its own.
    raise ValueError(f"the extra evaluation sets {task.extra_eval_splits} need names of their "
                     f"own, apart from 'train' and the splits {task.eval_splits}")
  workdir = pathlib.Path(workdir)
  reporting.quiet_orbax_logs()
  _check_workdir(workdir)
  distributed.initialize(cluster=config.get("distributed", False))
  is_main = jax.process_index() == 0
  mesh = create_mesh()
  distributed.check_batch_split(config.train.batch_size, "train.batch_size")
  distributed.check_batch_split(config.eval.batch_size, "eval.batch_size")
  logging.info("task %s on %d device(s) (%s) in %d process(es), workdir %s", task.name,
               mesh.size, jax.default_backend(), jax.process_count(), workdir)
  if jax.default_backend() == "cpu":
    logging.info(hugepages.status())

  state = create_train_state(config, task, mesh)
  ckpt = checkpointing.Checkpoints(
    workdir, keep=config.train.keep_checkpoints, best_metric=config.train.best_metric or None,
    best_mode=config.train.best_mode,
  )
  restored = ckpt.restore_latest(state)
  start_step = 0
  if restored is not None:
    start_step, state = restored
    state = replicate(state, mesh)
    logging.info("resumed from the checkpoint of step %d", start_step)
  else:
    # Starting over here would replace the run's config.json and, as new checkpoints rotate
    # in, its checkpoints (a best checkpoint of another model would also stay the "best"):
    # refuse, and leave the workdir as it is.
    steps, best_misfits = ckpt.all_steps(), ckpt.misfits(state, best=True)
    if steps or best_misfits:
      misfit = (ckpt.misfits(state).get(max(steps)) if steps else
                next(iter(best_misfits.values())))
      why = (f"their parameters differ from this config's model ({misfit}): the run that "
             "wrote them had another model config" if misfit else
             "none could be read (see the warnings above)")
      held = (f"checkpoints of steps {steps}" if steps else
              f"a best checkpoint (step {min(best_misfits)})")
      raise checkpointing.CheckpointError(
        f"{workdir} holds {held}, and none of them restores into this config's model: {why}. "
        f"Nothing was changed: use another --workdir, or delete {workdir / 'checkpoints'} and "
        f"{workdir / 'best'} to start over there."
      )
  if is_main:
    reporting.record_config(config, workdir, start_step if restored is not None else None)

  train_fn = jax.jit(functools.partial(train_step, task=task),
                     static_argnames=("inner_steps",), donate_argnums=(0,))
  eval_fn = jax.jit(functools.partial(eval_step, task=task,
                                      inner_steps=config.eval.inner_steps))
  writers = reporting.Writers(workdir, enabled=is_main)
  pictures = workdir / "pictures"
  current = {"state": state}  # what run_eval evaluates by default

  def final_state(state, step):
    """The state the summary evaluates: the last one, or the best by the tracked metric."""
    if config.eval.final_checkpoint == "last":  # else "best", as validation.check_run saw
      return state, step
    best = ckpt.restore_latest(state, best=True)
    if best is None:
      logging.warning("no best checkpoint yet: the summary evaluates the last state")
      return state, step
    logging.info("the summary evaluates the best checkpoint (step %d by %s)", best[0],
                 config.train.best_metric)
    return replicate(best[1], mesh), best[0]

  # The training loop's evaluations of its own state, by (step, split): the summary reuses
  # them for the state it evaluates (the last, or the best checkpoint, saved from that state)
  # instead of scoring it again and writing its rows twice.
  scored: dict[tuple[int, str], dict[str, float]] = {}

  def run_eval(step: int, split: str, state=None) -> dict[str, float]:
    """Scores ``state`` (None: the training state) on ``split`` and writes its row."""
    own = state is None
    if not own and (step, split) in scored:
      return scored[(step, split)]
    state = current["state"] if own else state
    distributed.barrier(f"evaluation at step {step}")
    metrics, pred, batch = evaluate(state, task, config, mesh, split, eval_fn)
    writers.write(step, split, metrics)
    logging.info("step %d %s: %s", step, split,
                 ", ".join(f"{k}={v:.5g}" for k, v in metrics.items()))
    if is_main and task.plot is not None and config.eval.pictures:
      pictures.mkdir(exist_ok=True)
      task.plot(pred, batch, pictures / f"{split}_step{step:07d}.png", split=split)
    if own:
      scored[(step, split)] = metrics
    return metrics

  try:
    if config.eval_only:
      if restored is None:
        raise FileNotFoundError(f"eval_only: no checkpoint found under {workdir / 'checkpoints'}")
      return reporting.summarize(*final_state(state, start_step), task, workdir, run_eval, is_main)

    last_good = start_step if restored is not None else None
    data = task.train_batches(start_step)
    total = config.train.steps
    progress = reporting.Progress(start_step, total, enabled=is_main and config.train.progress_bar)
    tick, tick_step = time.perf_counter(), start_step
    step = start_step
    try:
      for step in range(start_step, total):
        batch = shard_batch(next(data), mesh)
        if step == start_step and jax.process_count() > 1:
          # Compile before meeting, so the processes start their first collective together.
          train_fn.lower(state, batch, inner_steps=inner_steps_at(step, config)).compile()
          distributed.barrier("first training step")
        state, metrics = train_fn(state, batch, inner_steps=inner_steps_at(step, config))
        current["state"] = state
        done = step + 1
        if done % config.train.log_every == 0 or done == total:
          metrics = jax.device_get(metrics)
          if not math.isfinite(float(metrics["loss"]) + float(metrics.get("aux_loss", 0.0))):
            raise NonFiniteLossError(
              f"the training loss is {metrics['loss']} at step {done}; stopping. The last good "
              f"checkpoint is step {last_good} under {workdir / 'checkpoints'} (try a lower "
              "learning rate, inner clip_norm, or grad_clip_norm)"
            )
          elapsed = time.perf_counter() - tick
          metrics["steps_per_second"] = (done - tick_step) / max(elapsed, 1e-9)
          tick, tick_step = time.perf_counter(), done
          writers.write(done, "train", metrics)
          progress.update(done, metrics)
        if done % config.train.checkpoint_every == 0 or done == total:
          last_good = _save(ckpt, done, state, workdir, last_good)
        if config.train.eval_every and (done % config.train.eval_every == 0 or done == total):
          metrics = run_eval(done, task.eval_splits[0])
          if config.train.best_metric:  # every process: orbax saves together
            ckpt.save_best(done, state, metrics)
          for name in task.extra_eval_splits:
            run_eval(done, name)
    except KeyboardInterrupt:
      done = int(jax.device_get(state.step))
      logging.warning("interrupted: saving the checkpoint of step %d before exiting", done)
      _save(ckpt, done, state, workdir, last_good)
      raise
    finally:
      progress.close()
    return reporting.summarize(*final_state(state, total), task, workdir, run_eval, is_main)
  finally:
    writers.close()
    ckpt.close()


def _save(ckpt, step, state, workdir, last_good):
  if not bool(_all_finite(state.params)):
    raise NonFiniteLossError(
      f"the parameters hold NaN/inf at step {step}; not saving them. The last good checkpoint "
      f"is step {last_good} under {workdir / 'checkpoints'}"
    )
  ckpt.save(step, state)
  return step


def main_for(create_task: Callable[[Config], Task], *,
             resolve: Callable[[Config], Config] | None = None):
  """An absl ``main`` that reads ``--config`` and ``--workdir`` and runs ``create_task``'s task.

  Args:
    create_task: Checks the config (every experiment's does, before opening any data) and
      describes the task.
    resolve: Fills a config's derived fields first (numbering's widths and steps), or None.
  """

  def main(argv):
    from absl import flags

    if len(argv) > 1:
      raise ValueError(f"unexpected arguments: {argv[1:]}")
    config = flags.FLAGS.config
    # Join a multi-process run (experiments.launch, or a cluster with config.distributed)
    # before anything touches JAX, and refuse a batch the processes cannot share.
    distributed.initialize(cluster=config.get("distributed", False))
    distributed.check_batch_split(config.train.batch_size, "train.batch_size")
    distributed.check_batch_split(config.eval.batch_size, "eval.batch_size")
    if resolve is not None:
      config = resolve(config)
    workdir = pathlib.Path(flags.FLAGS.workdir)
    train_and_evaluate(config, workdir, create_task(config))
    pictures = workdir / "pictures"
    if jax.process_index() == 0:
      newest = sorted(pictures.glob("*.png")) if pictures.is_dir() else []
      if newest:
        print(f"Pictures: {pictures} (newest: {newest[-1].name})")
      print(f"Summary: {workdir / 'summary.md'}", flush=True)

  return main


def main(create_task: Callable[[Config], Task], *, default_workdir: str,
         resolve: Callable[[Config], Config] | None = None) -> None:
  """The command line of an experiment (its ``__main__``): ``--config``, ``--workdir``, run.

  Args:
    create_task: As in `main_for`.
    default_workdir: ``--workdir`` when the command line has none.
    resolve: As in `main_for`.
  """
  from absl import app

  define_flags(default_workdir)
  app.run(main_for(create_task, resolve=resolve))


def define_flags(default_workdir: str) -> None:
  """Registers ``--config`` (an ml_collections file, locked) and ``--workdir``."""
  from absl import flags
  from ml_collections import config_flags

  config_flags.DEFINE_config_file(
    "config", None, "Experiment configuration file (name:variant).", lock_config=True
  )
  flags.DEFINE_string("workdir", default_workdir, "Folder for checkpoints, logs and pictures.")
  flags.mark_flags_as_required(["config"])
