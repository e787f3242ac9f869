"""Run the code of docs/own_models.md, block after block in one namespace, as a reader would:
the page's promises (and its asserts) are checked in CI, so it cannot drift from the library."""

import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "own_models.md"


def code_blocks(text: str) -> list[str]:
    """Return the bodies of the ```python blocks of a Markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def test_the_page_has_the_promised_examples():
    text = PAGE.read_text()
    blocks = code_blocks(text)
    assert len(blocks) >= 8
    assert "## A ResNet" in text and "## A Transformer" in text
    readme = (PAGE.parents[1] / "README.md").read_text()
    assert "docs/own_models.md" in readme


@pytest.mark.slow
def test_every_code_block_runs():
    namespace = {"__name__": "own_models_page"}
    for i, block in enumerate(code_blocks(PAGE.read_text())):
        try:
            exec(compile(block, f"{PAGE.name}, block {i + 1}", "exec"), namespace)
        except Exception as err:  # say which block failed
            raise AssertionError(f"block {i + 1} of {PAGE.name} failed:\n{block}") from err
