"""Trains and evaluates one numbering run (see `experiments.numbering.task`).

  python -m experiments.numbering --config=experiments/configs/numbering.py:small \
      --config.model.name=idspn --workdir=workdirs/numbering/idspn
"""

from experiments.common import train
from experiments.numbering import task

if __name__ == "__main__":
  train.main(task.create_task, default_workdir="workdirs/numbering",
             resolve=task.resolve_config)
