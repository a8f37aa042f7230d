"""`make bench`: the benchmarks (see run.py)."""

import sys

if sys.argv[:1] == ["-m"]:  # `python -m benchmarks.<name>`: the same re-execution as experiments'.
  from experiments.common import hugepages

  hugepages.reexec_with_huge_pages()
