"""Every YAML example in docs/ that is a Release, a sluice.yaml (kind
Settings) or a controller policy (kind Policy) is valid: people copy them."""

import pathlib
import re

import pytest

from reconciler.core import policy as policies
from reconciler.core.loader import load_files
from reconciler.core.parse import parse

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "SECURITY.md"]
BLOCK = re.compile(r"^```ya?ml\n(.*?)^```", re.S | re.M)


def examples():
    for path in DOCS:
        text = path.read_text()
        for match in BLOCK.finditer(text):
            line = text[:match.start()].count("\n") + 2
            if text[:match.start()].rstrip().endswith("<!-- field reference: not a document -->"):
                continue   # a list of every field at once, marked as such
            try:
                doc = parse(match.group(1).encode())
            except Exception:   # noqa: BLE001 - fragments (lists, snippets) are not documents
                continue
            if isinstance(doc, dict) and doc.get("kind") in ("Release", "Settings", "Policy"):
                yield pytest.param(doc, match.group(1), id=f"{path.name}:{line}")


EXAMPLES = list(examples())


def test_the_docs_have_each_kind_of_example():
    kinds = {p.values[0]["kind"] for p in EXAMPLES}
    assert kinds == {"Release", "Settings", "Policy"}


@pytest.mark.parametrize("doc,text", EXAMPLES)
def test_doc_example_is_valid(doc, text):
    if doc["kind"] == "Policy":
        _, problems = policies.load(text.encode(), "policy.yaml")
    elif doc["kind"] == "Settings":
        problems = load_files({"sluice.yaml": text.encode()}).problems
    else:
        meta = doc["metadata"]
        path = f"releases/{meta['namespace']}/{meta['name']}.yaml"
        problems = load_files({path: text.encode()}).problems
    assert not problems, "\n".join(map(str, problems))
