"""Trains and evaluates one random-sets run (see `experiments.random_sets.task`).

  python -m experiments.random_sets --config=experiments/configs/random_sets.py:small \
      --workdir=workdirs/rs_idspn
"""

from experiments.common import train
from experiments.random_sets import task

if __name__ == "__main__":
  train.main(task.create_task, default_workdir="workdirs/random_sets")
