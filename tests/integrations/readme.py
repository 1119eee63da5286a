"""The python snippets of README.md's subsection on TRL and verl, so that the tests run them as written."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "### The kernels inside TRL and verl"


def snippet(first_line: str) -> str:
    """The ```python block of the section whose first line is `first_line`."""
    text = README.read_text(encoding="utf-8")
    start = text.index(SECTION) + len(SECTION)
    after = re.search(r"\n#{2,3} ", text[start:])  # the next heading ("# " starts comments in code blocks)
    section = text[start:start + after.start()] if after else text[start:]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    found = [b for b in blocks if b.splitlines()[0].strip() == first_line]
    assert len(found) == 1, f"README's {SECTION!r} has {len(found)} python blocks starting {first_line!r}"
    return found[0]
