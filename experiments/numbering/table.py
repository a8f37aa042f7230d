"""The poster's numbering table: every model over train sizes and seeds, mean +- std.

  python -m experiments.numbering.table --variant=small --seeds=0 --train_sizes=2000 \
      --root=workdirs/numbering_table

Each run is ``python -m experiments.numbering`` in its own workdir,
``{root}/{variant}_c{C}/{train_size}/{model}/seed{seed}``, with its log in ``train.log`` there;
a run whose ``summary.json`` exists is not run again, so an interrupted table resumes. The
table (test macro and micro accuracy in percent, mean +- std over the seeds, std with ddof 0)
is printed and saved as ``{root}/{variant}_c{C}/table.md`` and ``table.csv``.
"""

from __future__ import annotations

import csv
import json
import pathlib
import subprocess
import sys
import time

import numpy as np
from absl import app, flags, logging

from experiments.numbering import models as numbering_models

# The rows of the table: (row name, model, DA), in the poster's order, with the DA variants of
# the reference's exp1 scripts (Transformer with PE or random PE, BiLSTM; random permutation
# of each training set).
ROWS = (
  ("deepsets", "deepsets", False),
  ("transformer_no_pe", "transformer_no_pe", False),
  ("transformer_random_pe", "transformer_random_pe", False),
  ("transformer_random_pe_da", "transformer_random_pe", True),
  ("transformer_pe", "transformer_pe", False),
  ("transformer_pe_da", "transformer_pe", True),
  ("bilstm", "bilstm", False),
  ("bilstm_da", "bilstm", True),
  ("dspn", "dspn", False),
  ("idspn", "idspn", False),
)
ROW_NAMES = tuple(row for row, _, _ in ROWS)
# The poster's rows (no DA variant): the table's default. The DA rows run when --models names them.
POSTER_ROWS = tuple(row for row, _, permute in ROWS if not permute)
TITLES = {
  "deepsets": "DeepSets",
  "transformer_no_pe": "Transformer without PE",
  "transformer_random_pe": "Transformer with random PE",
  "transformer_random_pe_da": "Transformer with random PE + DA",
  "transformer_pe": "Transformer with PE",
  "transformer_pe_da": "Transformer with PE + DA",
  "bilstm": "BiLSTM",
  "bilstm_da": "BiLSTM + DA",
  "dspn": "DSPN",
  "idspn": "iDSPN (ours)",
}

_FLAGS = flags.FLAGS
flags.DEFINE_string("variant", "small", "Config variant of experiments/configs/numbering.py.")
flags.DEFINE_list(
  "models",
  ["idspn", *POSTER_ROWS[:-1]],
  f"Rows to run, in this order, of {', '.join(ROW_NAMES)}; default: the poster's rows.",
)
flags.DEFINE_list(
  "train_sizes", None, "Train sizes (1x, 10x, 100x or a count); default: the variant's own."
)
flags.DEFINE_list("seeds", ["0"], "Seeds.")
flags.DEFINE_integer("n_classes", 4, "Classes C (4 or 8 in the paper).")
flags.DEFINE_string("root", "workdirs/numbering_table", "Folder of the runs and the table.")
flags.DEFINE_multi_string(
  "override", [], "Extra config overrides for every run, e.g. --override=train.steps=500."
)
flags.DEFINE_bool("dry_run", False, "Print the commands without running them.")
flags.DEFINE_bool("table_only", False, "Only collect the finished runs into the table.")


def run_command(
  *,
  variant: str,
  model: str,
  permute: bool,
  train_size: str,
  seed: int,
  n_classes: int,
  workdir: pathlib.Path,
  overrides: list[str],
) -> list[str]:
  """The ``experiments.numbering`` command line of one run."""
  config = pathlib.Path(__file__).parents[1] / "configs" / "numbering.py"
  command = [
    sys.executable,
    "-m",
    "experiments.numbering",
    f"--config={config}:{variant}",
    f"--config.model.name={model}",
    f"--config.data.permute={permute}",
    f"--config.data.train_size={train_size}",
    f"--config.seed={seed}",
    f"--config.data.n_classes={n_classes}",
    "--config.train.progress_bar=False",
    f"--workdir={workdir}",
  ]
  return command + [f"--config.{o}" for o in overrides]


def collect(base: pathlib.Path, rows, train_sizes, seeds) -> dict:
  """{(row, train_size): {"macro": [...], "micro": [...]}} of the finished runs' test metrics."""
  results = {}
  for row in rows:
    for size in train_sizes:
      cell = {"macro": [], "micro": []}
      for seed in seeds:
        path = base / size / row / f"seed{seed}" / "summary.json"
        if path.is_file():
          test = json.loads(path.read_text())["test"]
          cell["macro"].append(100 * test["macro_accuracy"])
          cell["micro"].append(100 * test["micro_accuracy"])
      results[row, size] = cell
  return results


def _cell(values: list[float]) -> str:
  if not values:
    return "-"
  return f"{np.mean(values):.1f}±{np.std(values):.1f}"


def format_tables(results: dict, rows, train_sizes) -> str:
  """Markdown tables of test macro and micro accuracy (percent, mean ± std over seeds)."""
  out = []
  for metric in ("macro", "micro"):
    out.append(f"Test {metric} accuracy (%), mean ± std over seeds\n")
    out.append("| Model | " + " | ".join(train_sizes) + " |")
    out.append("|---|" + "---|" * len(train_sizes))
    for row in rows:
      cells = " | ".join(_cell(results[row, size][metric]) for size in train_sizes)
      out.append(f"| {TITLES[row]} | {cells} |")
    out.append("")
  return "\n".join(out)


def write_csv(path: pathlib.Path, results: dict, rows, train_sizes) -> None:
  with path.open("w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["model", "train_size", "metric", "mean", "std", "n_seeds", "values"])
    for row in rows:
      for size in train_sizes:
        for metric in ("macro", "micro"):
          values = results[row, size][metric]
          mean = f"{np.mean(values):.4f}" if values else ""
          std = f"{np.std(values):.4f}" if values else ""
          writer.writerow(
            [
              row,
              size,
              f"{metric}_accuracy",
              mean,
              std,
              len(values),
              " ".join(f"{v:.4f}" for v in values),
            ]
          )


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from experiments.configs import numbering as numbering_config

  unknown = sorted(set(_FLAGS.models) - set(ROW_NAMES))
  if unknown:
    raise app.UsageError(f"unknown models {unknown}; valid: {', '.join(ROW_NAMES)}")
  # Runs go in the order of --models; the table keeps the poster's order.
  run_rows = list(dict.fromkeys(_FLAGS.models))
  rows = [row for row in ROW_NAMES if row in run_rows]
  models = {row: (model, permute) for row, model, permute in ROWS}
  for row in rows:
    if models[row][0] not in numbering_models.NUMBERING_MODELS:
      raise app.UsageError(f"model {models[row][0]!r} of row {row!r} is not registered")
  config = numbering_config.get_config(_FLAGS.variant)
  train_sizes = _FLAGS.train_sizes or [str(config.data.train_size)]
  seeds = [int(s) for s in _FLAGS.seeds]
  base = pathlib.Path(_FLAGS.root) / f"{_FLAGS.variant}_c{_FLAGS.n_classes}"

  start = time.perf_counter()
  failed = []
  if not _FLAGS.table_only:
    for size in train_sizes:
      for seed in seeds:
        for row in run_rows:
          workdir = base / size / row / f"seed{seed}"
          if (workdir / "summary.json").is_file():
            logging.info("done already: %s", workdir)
            continue
          model, permute = models[row]
          command = run_command(
            variant=_FLAGS.variant,
            model=model,
            permute=permute,
            train_size=size,
            seed=seed,
            n_classes=_FLAGS.n_classes,
            workdir=workdir,
            overrides=_FLAGS.override,
          )
          print(" ".join(command), flush=True)
          if _FLAGS.dry_run:
            continue
          workdir.mkdir(parents=True, exist_ok=True)
          tick = time.perf_counter()
          with (workdir / "train.log").open("a") as log:
            code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT)
          print(f"  -> exit {code} after {time.perf_counter() - tick:.0f} s", flush=True)
          if code:
            failed.append(str(workdir))

  results = collect(base, rows, train_sizes, seeds)
  table = format_tables(results, rows, train_sizes)
  header = (
    f"Class-specific numbering, variant {_FLAGS.variant}, C={_FLAGS.n_classes}, "
    f"seeds {', '.join(map(str, seeds))}\n\n"
  )
  base.mkdir(parents=True, exist_ok=True)
  (base / "table.md").write_text(header + table)
  write_csv(base / "table.csv", results, rows, train_sizes)
  print("\n" + header + table, flush=True)
  print(
    f"table written to {base / 'table.md'} and table.csv; wall time "
    f"{time.perf_counter() - start:.0f} s",
    flush=True,
  )
  if failed:
    print("FAILED runs (see train.log in each):\n  " + "\n  ".join(failed), flush=True)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
