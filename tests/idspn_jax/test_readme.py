"""The README's code runs as written."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def test_readme_python_blocks_run():
  blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
  assert blocks, "the README lost its examples"
  namespace: dict = {}
  for block in blocks:
    exec(compile(block, str(README), "exec"), namespace)  # noqa: S102
  grads = namespace["grads"]["params"]
  assert set(grads) == {"g", "y0"}
  assert namespace["layer"].backward == "approx"
