"""The paper's random-sets grid: set size x dimension x inner steps x model x seed.

  python -m experiments.random_sets.sweep --config=experiments/configs/random_sets.py:paper \
      --sizes=2,4,8,16,32 --dims=2,4,8,16,32 --inner_steps=10,20,40 --models=dspn,idspn \
      --seeds=0,1,2 --workdir=workdirs/random_sets_sweep

Each run trains in its own sub-folder (a finished run, one with summary.json, is not rerun; an
unfinished one resumes), then the test Hungarian loss, mean +- std over seeds, is written as
``results.md`` and ``results.csv`` in the sweep's workdir.
"""

from __future__ import annotations

import csv
import itertools
import json
import pathlib

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from experiments.common import models, train
from experiments.random_sets import task

config_flags.DEFINE_config_file("config", None, "Base config (name:variant).", lock_config=True)
flags.DEFINE_string("workdir", "workdirs/random_sets_sweep", "Folder of the sweep.")
flags.DEFINE_list("sizes", ["2", "4", "8", "16", "32"], "Set sizes n.")
flags.DEFINE_list("dims", ["2", "4", "8", "16", "32"], "Element dimensions d.")
flags.DEFINE_list("inner_steps", ["10", "20", "40"], "Inner steps.")
flags.DEFINE_list("models", ["dspn", "idspn"], "Decoders (config.model.decoder): dspn "
                  "(unrolled, momentum 0), idspn (the config's model.idspn).")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")


def run_name(model: str, n: int, d: int, steps: int, seed: int) -> str:
  return f"{model}_n{n}_d{d}_steps{steps}_seed{seed}"


def run_one(base, workdir: pathlib.Path, model: str, n: int, d: int, steps: int,
            seed: int) -> float:
  """Trains one grid point (unless finished) and returns its test Hungarian loss.

  ``model`` is the decoder (`experiments.common.models.DECODERS`); DSPN's settings apply on top
  of the base config's ``model.idspn``, which must leave momentum and backward unset (or at
  DSPN's values) for it.
  """
  if model not in models.DECODERS:
    raise ValueError(f"unknown model {model!r}; expected one of {models.DECODERS}")
  summary = workdir / "summary.json"
  if not summary.exists():
    config = base.copy_and_resolve_references()
    config.seed = seed
    config.data.seed = seed
    config.data.set_size = n
    config.data.set_dim = d
    config.model.idspn.steps = steps
    config.eval.inner_steps = steps
    config.model.decoder = model
    train.train_and_evaluate(config, workdir, task.create_task(config))
  return float(json.loads(summary.read_text())["test"]["loss"])


def write_table(rows: list[dict], workdir: pathlib.Path) -> str:
  """Mean +- std of the test loss per (n, d, steps, model), as markdown and CSV."""
  groups: dict[tuple, list[float]] = {}
  for row in rows:
    groups.setdefault((row["n"], row["d"], row["steps"], row["model"]), []).append(row["loss"])
  with (workdir / "results.csv").open("w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["n", "d", "inner_steps", "model", "mean_test_loss", "std_test_loss",
                     "seeds"])
    for (n, d, steps, model), losses in sorted(groups.items()):
      writer.writerow([n, d, steps, model, f"{np.mean(losses):.6g}", f"{np.std(losses):.6g}",
                       len(losses)])
  lines = ["| n | d | inner steps | model | test Hungarian loss (mean +- std) | seeds |",
           "|---|---|---|---|---|---|"]
  for (n, d, steps, model), losses in sorted(groups.items()):
    lines.append(f"| {n} | {d} | {steps} | {model} | {np.mean(losses):.4g} +- "
                 f"{np.std(losses):.2g} | {len(losses)} |")
  table = "\n".join(lines)
  (workdir / "results.md").write_text(table + "\n")
  return table


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  FLAGS = flags.FLAGS  # noqa: N806
  root = pathlib.Path(FLAGS.workdir)
  grid = itertools.product(
    map(int, FLAGS.sizes), map(int, FLAGS.dims), map(int, FLAGS.inner_steps), FLAGS.models,
    map(int, FLAGS.seeds),
  )
  rows = []
  for n, d, steps, model, seed in grid:
    name = run_name(model, n, d, steps, seed)
    logging.info("sweep: %s", name)
    loss = run_one(FLAGS.config, root / name, model, n, d, steps, seed)
    rows.append(dict(n=n, d=d, steps=steps, model=model, seed=seed, loss=loss))
    write_table(rows, root)  # keep the table current as runs finish
  print(write_table(rows, root))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
