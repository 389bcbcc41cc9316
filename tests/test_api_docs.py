"""docs/api.md's examples run: every ```python block, in order, in one namespace, in an empty folder.
One test per block (a block's test first runs the blocks before it, if no test did), so a failing
example names itself and the ones after it still run."""

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```$", DOC.read_text(), flags=re.S | re.M)


def test_the_page_has_examples_of_every_part_of_the_api():
    text = "\n".join(BLOCKS)
    assert len(BLOCKS) >= 6
    for used in (
        "humwatch.fit(",
        "humwatch.load_monitor(",
        ".score(",
        "humwatch.methods()",
        "humwatch.backbones()",
        "humwatch.detectors()",
        "skip_bad=True",
        "(samples, rate)",
        ".windows",
    ):
        assert used in text, used


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    return {"ns": {"__name__": "api_docs"}, "done": 0, "dir": tmp_path_factory.mktemp("api-docs")}


def _run(page, i):
    code = compile(BLOCKS[i], f"{DOC.name}, python block {i + 1}", "exec")
    exec(code, page["ns"])  # noqa: S102 - the documentation's own examples


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_example_runs(page, i, monkeypatch):
    monkeypatch.chdir(page["dir"])
    while page["done"] < i:  # the blocks before this one, when their own tests did not run them
        try:
            _run(page, page["done"])
        except Exception:  # noqa: BLE001 - that block's own test reports it
            pass
        page["done"] += 1
    page["done"] = i + 1
    _run(page, i)
