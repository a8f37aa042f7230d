"""The paper's three experiments (random_sets, numbering, clevr), their configs and the shared
runner (common)."""

import sys

if sys.argv[:1] == ["-m"]:  # `python -m experiments.<name>`, while Python locates the module:
  from experiments.common import hugepages  # re-execute once with huge pages (see that module).

  hugepages.reexec_with_huge_pages()
  # Forgotten again: `python -m experiments.common.hugepages` then runs a fresh copy as
  # __main__ (runpy warns about a module that was imported before it runs it).
  del sys.modules[hugepages.__name__], sys.modules["experiments.common"].hugepages, hugepages
