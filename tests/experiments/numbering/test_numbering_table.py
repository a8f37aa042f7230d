"""Tests of the numbering table command: its rows, runs, and the table it writes."""

import csv
import json
import subprocess
import sys

import pytest

from experiments.numbering import table as numbering_table


def _write_summary(path, macro, micro):
  path.mkdir(parents=True)
  summary = {"test": {"macro_accuracy": macro, "micro_accuracy": micro, "loss": 0.1}}
  (path / "summary.json").write_text(json.dumps(summary))


def test_table_mean_std_and_csv(tmp_path):
  base = tmp_path / "small_c4"
  _write_summary(base / "1x" / "idspn" / "seed0", 0.9, 0.99)
  _write_summary(base / "1x" / "idspn" / "seed1", 0.8, 0.97)
  _write_summary(base / "1x" / "deepsets" / "seed0", 0.0, 0.45)
  rows = ["deepsets", "bilstm", "idspn"]
  results = numbering_table.collect(base, rows, ["1x"], [0, 1])
  table = numbering_table.format_tables(results, rows, ["1x"])
  # Mean and population std over the seeds found; a row without runs shows "-".
  assert "| iDSPN (ours) | 85.0±5.0 |" in table
  assert "| DeepSets | 0.0±0.0 |" in table
  assert "| BiLSTM | - |" in table
  assert "| iDSPN (ours) | 98.0±1.0 |" in table  # micro
  numbering_table.write_csv(tmp_path / "t.csv", results, rows, ["1x"])
  with (tmp_path / "t.csv").open() as f:
    lines = list(csv.DictReader(f))
  idspn_macro = next(r for r in lines if r["model"] == "idspn" and r["metric"] == "macro_accuracy")
  assert idspn_macro["n_seeds"] == "2"
  assert float(idspn_macro["mean"]) == pytest.approx(85.0)
  assert idspn_macro["values"] == "90.0000 80.0000"


def _dry_run(tmp_path, *flags):
  command = [sys.executable, "-m", "experiments.numbering.table", "--dry_run"]
  command += [f"--root={tmp_path}", *flags]
  return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_default_rows_are_the_posters_and_da_rows_run_when_named(tmp_path):
  assert numbering_table.POSTER_ROWS == (
    "deepsets",
    "transformer_no_pe",
    "transformer_random_pe",
    "transformer_pe",
    "bilstm",
    "dspn",
    "idspn",
  )
  out = _dry_run(tmp_path, "--seeds=0,1")
  assert out.returncode == 0, out.stderr
  commands = [line for line in out.stdout.splitlines() if "experiments.numbering " in line]
  assert len(commands) == 2 * len(numbering_table.POSTER_ROWS)
  assert all("--config.data.permute=False" in c for c in commands)
  assert all("--config.data.train_size=1x" in c for c in commands)  # :small's train size
  out = _dry_run(tmp_path, "--models=bilstm_da", "--train_sizes=10x")
  assert out.returncode == 0, out.stderr
  (command,) = [line for line in out.stdout.splitlines() if "experiments.numbering " in line]
  assert "--config.model.name=bilstm" in command and "--config.data.permute=True" in command
  assert "--config.data.train_size=10x" in command


def test_unknown_model_is_a_clear_error(tmp_path):
  out = _dry_run(tmp_path, "--models=idspn,lstm")
  assert out.returncode != 0
  assert "unknown models ['lstm']" in out.stderr
