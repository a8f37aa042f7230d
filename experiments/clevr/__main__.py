"""Trains and evaluates one CLEVR run (see `experiments.clevr.task`).

  python -m experiments.clevr --config=experiments/configs/clevr.py --workdir=workdirs/clevr_demo
"""

from experiments.clevr import task
from experiments.common import train

if __name__ == "__main__":
  train.main(task.create_task, default_workdir="workdirs/clevr")
