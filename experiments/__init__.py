"""The paper's three experiments, their configs, data and the shared training loop."""

import sys

if sys.argv[:1] == ["-m"]:  # `python -m experiments.<name>`, while Python locates the module:
  from experiments import _hugepages  # re-execute once with huge pages (see that module).

  _hugepages.reexec_with_huge_pages()
