"""The fast compiled schema check and jsonschema agree on what is valid:
random mutations of real specs must get the same verdict from both."""

import copy

from hypothesis import given, settings, strategies as st
from jsonschema import Draft202012Validator

from reconciler.core import schema
from tests.support.specs import STRATEGIES, release_doc

values = st.one_of(st.none(), st.booleans(), st.integers(-5, 200), st.floats(allow_nan=False, width=32),
                   st.text(max_size=8), st.lists(st.integers(0, 120), max_size=4),
                   st.dictionaries(st.sampled_from(["exact", "prefix", "name", "x", "version"]), st.text(max_size=4), max_size=2))


def paths(doc, prefix=()):
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield prefix + (k,)
            yield from paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield prefix + (i,)
            yield from paths(v, prefix + (i,))


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(sorted(STRATEGIES)), st.data())
def test_fast_and_full_validators_agree(kind, data):
    doc = release_doc(strategy=kind, status={"phase": "Progressing", "weight": 10, "step": 1,
                                             "stable": {"version": "v1", "image": "i"}})
    for _ in range(data.draw(st.integers(1, 3))):
        all_paths = list(paths(doc))
        path = data.draw(st.sampled_from(all_paths))
        target = doc
        for part in path[:-1]:
            target = target[part]
        if data.draw(st.booleans()) and isinstance(target, dict):
            target.pop(path[-1], None)
        else:
            target[path[-1]] = data.draw(values)
        if isinstance(target, dict) and data.draw(st.booleans()):
            target[data.draw(st.sampled_from(["extra", "steps", "match", "min", "canary"]))] = data.draw(values)
    full = not list(Draft202012Validator(schema.schema("release")).iter_errors(copy.deepcopy(doc)))
    assert schema.is_valid("release", doc) == full
