"""Is the inner loop stable? Curvature of the energy at the solution, per checkpoint.

  python -m experiments.random_sets.diagnostics --config=experiments/configs/random_sets.py:small \
      --workdir=workdirs/rs_idspn

For each checkpoint of a random-sets run: the validation Hungarian loss after 1, 5, 10, 20 and
40 inner steps, and the largest eigenvalue of the energy's Hessian at the predicted set (power
iteration on Hessian-vector products, median over a few sets). Gradient descent with learning
rate lr and Nesterov momentum b is stable on a quadratic only while lr * lambda_max stays under
2 (1 + b) / (1 + 2 b) (2 without momentum): above it the inner loop oscillates, and the
Jacobian-free gradient, which assumes a converged inner loop, stops being informative.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

import idspn_jax
from experiments.common import checkpointing, models, train
from experiments.random_sets import task as random_sets

config_flags.DEFINE_config_file("config", None, "The run's config (name:variant).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "The run's workdir (its checkpoints are read).")
flags.DEFINE_integer("sets", 8, "Validation sets the eigenvalue is measured on.")

INNER_STEPS = (1, 5, 10, 20, 40)


def stability_bound(momentum: float) -> float:
  """Largest lr * lambda for which (Nesterov) gradient descent converges on a quadratic."""
  return 2 * (1 + momentum) / (1 + 2 * momentum)


def top_eigenvalue(energy, y, args, *, iterations: int = 50) -> float:
  """Largest-magnitude eigenvalue of d^2 energy / dy^2 at ``y`` [N, D], by power iteration."""
  hvp = lambda v: jax.jvp(lambda yy: jax.grad(energy)(yy, *args), (y,), (v,))[1]
  v = jax.random.normal(jax.random.key(0), y.shape, y.dtype)

  def body(_, carry):
    v, _ = carry
    w = hvp(v)
    return w / jnp.linalg.norm(w), jnp.vdot(v, w) / jnp.vdot(v, v)

  _, value = jax.lax.fori_loop(0, iterations, body, (v / jnp.linalg.norm(v), jnp.zeros(())))
  return value


def diagnose(config, workdir: str, *, sets: int = 8) -> list[dict]:
  """One row per checkpoint: losses by inner steps and the top Hessian eigenvalue."""
  task = random_sets.create_task(config)
  options = random_sets.idspn_options(config)
  state = train.create_train_state(config, task, train.create_mesh())
  ckpt = checkpointing.Checkpoints(workdir)
  batch = task.eval_batches("val").batch(0)
  model = task.model
  width = dict(hidden=config.model.hidden, latent=config.model.latent,
               set_size=config.data.set_size)
  input_encoder = idspn_jax.SetEncoder(pool=config.model.input_pool, **width)
  energy_encoder = idspn_jax.SetEncoder(pool=models.setting(options, "pool"),
                                        fspool_method=models.setting(options, "fspool_method"),
                                        **width)
  energy = functools.partial(
    idspn_jax.mse_regularized_energy,
    apply_fn=lambda p, y: energy_encoder.apply({"params": p}, y),
  )

  @functools.partial(jax.jit, static_argnames="steps")
  def loss_at(params, steps):
    pred = model.apply({"params": params}, batch, steps=steps)
    return jnp.mean(random_sets.hungarian_loss(pred, batch))

  @jax.jit
  def eigenvalues(params):
    z = input_encoder.apply({"params": params["input_encoder"]}, batch["set"][:sets])
    pred = model.apply({"params": params}, {"set": batch["set"][:sets]},
                       steps=models.setting(options, "steps"))
    dec = params["decoder"]
    return jax.vmap(lambda y, z_i: top_eigenvalue(energy, y, (dec["g"], z_i, dec["y0"])))(
      pred, z)

  rows = []
  for step in ckpt.all_steps():
    params = ckpt.restore(step, state).params
    rows.append({
      "step": step,
      "loss_by_inner_steps": {t: float(loss_at(params, t)) for t in INNER_STEPS},
      "top_eigenvalue": float(np.median(np.abs(np.asarray(eigenvalues(params))))),
    })
  ckpt.close()
  return rows


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = flags.FLAGS.config
  options = random_sets.idspn_options(config)
  if not models.setting(options, "learn_start") or (
      models.setting(options, "energy") != "mse_regularized"):
    raise app.UsageError("this diagnostic reads the regularised energy of a learned start set")
  momentum = models.setting(options, "momentum")
  learning_rate = models.setting(options, "learning_rate")
  bound = stability_bound(momentum)
  rows = diagnose(config, flags.FLAGS.workdir, sets=flags.FLAGS.sets)
  head = " | ".join(f"loss @{t}" for t in INNER_STEPS)
  print(f"| step | {head} | top Hessian eigenvalue (median) |")
  print("|---|" + "---|" * (len(INNER_STEPS) + 1))
  for row in rows:
    losses = " | ".join(f"{row['loss_by_inner_steps'][t]:.4g}" for t in INNER_STEPS)
    print(f"| {row['step']} | {losses} | {row['top_eigenvalue']:.4g} |")
  print(f"\nStable while lr * lambda_max < {bound:.3g} (lr {learning_rate}, "
        f"momentum {momentum}).")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
