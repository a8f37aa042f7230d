"""The one re-execution with transparent huge pages (experiments/common/hugepages.py)."""

import os
import subprocess
import sys

import pytest

from experiments.common import hugepages

GLIBC, THP = (2, 36), "madvise"


def test_adds_the_tunable_and_marks_the_environment():
  env = hugepages.reexec_environment({"PATH": "/bin"}, glibc=GLIBC, thp=THP)
  assert env["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
  assert env["PATH"] == "/bin"
  # The re-executed process does not go round again.
  assert hugepages.reexec_environment(env, glibc=GLIBC, thp=THP) is None


def test_keeps_the_users_tunables():
  env = hugepages.reexec_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"},
                                      glibc=GLIBC, thp="always")
  assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
  # A hugetlb setting of the user's own wins.
  assert hugepages.reexec_environment({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"},
                                       glibc=GLIBC, thp=THP) is None


@pytest.mark.parametrize("environ, glibc, thp", [
  ({"IDSPN_JAX_HUGE_PAGES": "0"}, GLIBC, THP),  # turned off
  ({}, (2, 34), THP),  # glibc without the tunable
  ({}, None, THP),  # another C library
  ({}, GLIBC, "never"),  # the kernel gives no huge pages
  ({}, GLIBC, None),  # no transparent huge pages at all
])
def test_declines_where_it_cannot_help(environ, glibc, thp):
  assert hugepages.reexec_environment(environ, glibc=glibc, thp=thp) is None


def test_reads_the_kernels_mode(tmp_path):
  path = tmp_path / "enabled"
  path.write_text("always [madvise] never\n")
  assert hugepages.thp_mode(str(path)) == "madvise"
  assert hugepages.thp_mode(str(tmp_path / "absent")) is None


def _status(**env):
  environ = {k: v for k, v in os.environ.items()
             if k not in ("GLIBC_TUNABLES", "IDSPN_JAX_HUGE_PAGES_REEXECUTED")}
  out = subprocess.run([sys.executable, "-m", "experiments.common.hugepages"], env=environ | env,
                       capture_output=True, text=True, check=True, timeout=120)
  assert "RuntimeWarning" not in out.stderr
  return out.stdout.strip()


@pytest.mark.skipif(
  sys.platform != "linux" or (hugepages.glibc_version() or (0, 0)) < (2, 35)
  or hugepages.thp_mode() not in ("always", "madvise"),
  reason="needs glibc 2.35+ and transparent huge pages",
)
def test_python_dash_m_reexecutes_once_with_huge_pages():
  assert _status() == (
    f"transparent huge pages: on (GLIBC_TUNABLES=glibc.malloc.hugetlb=1; kernel mode "
    f"{hugepages.thp_mode()})"
  )
  assert _status(IDSPN_JAX_HUGE_PAGES="0") == "transparent huge pages: off (IDSPN_JAX_HUGE_PAGES=0)"
