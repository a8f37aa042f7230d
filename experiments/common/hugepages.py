"""Transparent huge pages for XLA's CPU buffers: one re-execution of the command line.

XLA:CPU allocates each step's temporary buffer (about 100 MB for the CLEVR CPU config) with
malloc, which serves anything that large with a fresh ``mmap`` and returns it with ``munmap``.
Every step then faults its buffer in again, 4 KiB at a time: 24,000 page faults and a quarter
of the process's CPU time in the kernel. glibc 2.35+ can ask the kernel for 2 MiB pages for such
mappings (``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``; the kernel's transparent huge pages must
be ``always`` or ``madvise``), but only from the environment a process starts with.

So ``python -m experiments.<name>`` and ``python -m benchmarks.<name>`` re-execute themselves
once with that tunable added (the package's ``__init__`` calls `reexec_with_huge_pages` while
Python locates the module, before anything heavy is imported). The numbers do not change, only
the time: ``IDSPN_JAX_HUGE_PAGES=0`` turns it off, and a ``glibc.malloc.hugetlb`` already in
``GLIBC_TUNABLES`` is left as it is. Each run logs `status`; this module prints it:

  python -m experiments.common.hugepages
"""

from __future__ import annotations

import os
import sys

TUNABLE = "glibc.malloc.hugetlb=1"
SWITCH = "IDSPN_JAX_HUGE_PAGES"
_REEXECUTED = "IDSPN_JAX_HUGE_PAGES_REEXECUTED"
_THP = "/sys/kernel/mm/transparent_hugepage/enabled"


def glibc_version() -> tuple[int, int] | None:
  """(major, minor) of the C library when it is glibc, else None."""
  try:
    name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
    major, minor = version.split(".")[:2]
    return (int(major), int(minor)) if name == "glibc" else None
  except (AttributeError, ValueError, OSError):
    return None


def thp_mode(path: str = _THP) -> str | None:
  """The kernel's transparent-huge-page mode (``always``, ``madvise``, ``never``), or None."""
  try:
    with open(path) as f:
      text = f.read()
  except OSError:
    return None
  start, end = text.find("["), text.find("]")
  return text[start + 1:end] if 0 <= start < end else None


def _usable(glibc: tuple[int, int] | None, thp: str | None) -> bool:
  """Whether this C library and kernel can give malloc's mappings huge pages."""
  return glibc is not None and glibc >= (2, 35) and thp in ("always", "madvise")


def reexec_environment(environ, *, glibc: tuple[int, int] | None,
                       thp: str | None) -> dict[str, str] | None:
  """The environment to re-execute with, or None where that would not help or was declined."""
  if environ.get(SWITCH, "1") == "0" or environ.get(_REEXECUTED):
    return None
  if not _usable(glibc, thp):
    return None
  tunables = environ.get("GLIBC_TUNABLES", "")
  if "glibc.malloc.hugetlb=" in tunables:
    return None
  env = dict(environ)
  env["GLIBC_TUNABLES"] = f"{tunables}:{TUNABLE}" if tunables else TUNABLE
  env[_REEXECUTED] = "1"
  return env


def reexec_with_huge_pages() -> None:
  """Replaces this process by the same command line with `TUNABLE` in ``GLIBC_TUNABLES``.

  Returns (doing nothing) where the C library or kernel cannot use it, where it is already set,
  or where ``IDSPN_JAX_HUGE_PAGES=0``."""
  if sys.platform != "linux":
    return
  env = reexec_environment(os.environ, glibc=glibc_version(), thp=thp_mode())
  if env is None:
    return
  argv = [sys.executable, *sys.orig_argv[1:]]
  sys.stdout.flush()
  sys.stderr.flush()
  try:
    os.execve(sys.executable, argv, env)
  except OSError as err:  # Carry on without, saying why.
    print(f"idspn_jax: could not re-execute with {TUNABLE} ({err}); continuing without it",
          file=sys.stderr)


def status(environ=os.environ) -> str:
  """One line: whether this process's malloc asks for transparent huge pages, and why not."""
  tunables = environ.get("GLIBC_TUNABLES", "")
  glibc, thp = glibc_version(), thp_mode()
  if TUNABLE in tunables.split(":") and _usable(glibc, thp):
    return f"transparent huge pages: on (GLIBC_TUNABLES={tunables}; kernel mode {thp})"
  why = (f"{SWITCH}=0" if environ.get(SWITCH) == "0"
         else "not glibc 2.35+" if glibc is None or glibc < (2, 35)
         else f"the kernel's mode is {thp}" if thp not in ("always", "madvise")
         else f"GLIBC_TUNABLES={tunables!r}")
  return f"transparent huge pages: off ({why})"


if __name__ == "__main__":
  print(status())
