"""Prints whether this process got transparent huge pages (see `experiments._hugepages`).

  python -m experiments.hugepages
"""

from experiments import _hugepages

if __name__ == "__main__":
  print(_hugepages.status())
