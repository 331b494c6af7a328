"""Property: whatever a recipe file or an override holds, loading it returns a valid Recipe or raises RecipeError.

Random TOML documents mix the real schema keys with random ones, so most examples get past the parser and
hit the type, range and cross-key checks; raw strings and bytes hit the parser and decoder. A Recipe that
does load must also survive to_toml() and load back to the same settings, and pass the JSON Schema editors check
recipes with (an editor must never flag a recipe bertctl accepts).
"""

from __future__ import annotations

import pytest

import tempfile
import tomllib
from pathlib import Path

import jsonschema
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bertctl.errors import RecipeError
from bertctl.recipe import describe_schema, json_schema, load_recipe

REPO = Path(__file__).resolve().parents[1]
SCHEMA_KEYS = [row[0] for row in describe_schema()]
EDITOR_SCHEMA = jsonschema.Draft202012Validator(json_schema())
SECTIONS = sorted({key.split(".")[0] for key in SCHEMA_KEYS} | {"data.limit", "eval.thresholds"})
FIELDS = sorted({key.rsplit(".", 1)[1] for key in SCHEMA_KEYS} | {"accuracy", "mcc", "log_loss"})
# values that make the data checks pass sometimes, so valid recipes (and their round trip) are exercised too
REAL_VALUES = [
    str(REPO / "recipes" / "data" / "agnews" / "train.csv"),
    str(REPO / "recipes" / "data" / "agnews" / "dev.csv"),
    "data/agnews/train.csv",
    "~nosuchuser-bertctl/x.csv",
    "fancyzhx/ag_news",
    "text",
    "label",
    "accuracy",
    "f1_macro",
    "tensorboard",
    "cosine",
    "bf16",
    "test",
    "",
    " ",
]

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
keys = st.one_of(st.sampled_from(FIELDS), st.sampled_from(SECTIONS), text)
scalars = st.one_of(
    st.sampled_from(REAL_VALUES),
    text,
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)

def typed_value(type_name: str):
    """Mostly values of the key's own type (so range and cross-key checks run), sometimes anything."""
    own = {
        "string": st.one_of(st.sampled_from(REAL_VALUES), st.sampled_from(REAL_VALUES), text),
        "integer": st.one_of(st.integers(-3, 300), st.integers(min_value=-(2**63), max_value=2**63 - 1)),
        "number": st.one_of(st.floats(-2, 2), st.floats()),
        "true/false": st.booleans(),
        "list of string": st.lists(st.one_of(st.sampled_from(REAL_VALUES), text), max_size=5),
        "list of number": st.lists(st.one_of(st.floats(-1, 5), st.integers(-1, 3)), max_size=5),
        "table of values": st.dictionaries(  # [sweep.space]: recipe key = range table or list
            st.sampled_from(["train.learning_rate", "train.epochs", "train.scheduler", "train.lr", "output.dir"]),
            st.one_of(st.dictionaries(st.sampled_from(["low", "high", "log", "step"]), scalars, max_size=3), st.lists(scalars, max_size=3), scalars),
            max_size=3,
        ),
        "table of number": st.dictionaries(st.one_of(st.sampled_from(["accuracy", "mcc", "log_loss", "ece", "acuracy"]), text), st.one_of(st.floats(), st.integers(-2, 2), text), max_size=4),
    }
    kinds = type_name.replace("strings", "string").replace("numbers", "number").split(" or ")
    typed = st.one_of(*(own[kind] for kind in kinds))
    return st.one_of(typed, typed, typed, values)


SCHEMA_TYPES = {row[0]: row[1] for row in describe_schema()}


def section_strategy(name: str):
    own = {k.split(".")[-1]: typed_value(t) for k, t in SCHEMA_TYPES.items() if k.rsplit(".", 1)[0] == name}
    if name == "data":
        own["limit"] = st.one_of(section_strategy("data.limit"), values)
    if name == "eval":
        own["thresholds"] = st.one_of(typed_value("table of number"), values)
    fixed = st.fixed_dictionaries({}, optional={**own, **{k: values for k in ["tokens", "epoch", "lables"]}})
    return st.one_of(fixed, fixed, fixed, st.dictionaries(keys, values, max_size=4), values)


random_documents = st.fixed_dictionaries(
    {}, optional={**{name: section_strategy(name) for name in ["model", "data", "train", "eval", "output"]}, "trian": values, "x": values}
)
VALID_BASE = {
    "data": {"train": REAL_VALUES[0], "validation": REAL_VALUES[1], "labels": ["World", "Sports", "Business", "Sci/Tech"]},
    "train": {"epochs": 1},
}


@st.composite
def mutated_documents(draw):
    """A valid recipe with a few keys set to random (mostly well-typed) values: near the edge of validity."""
    import copy

    document = copy.deepcopy(VALID_BASE)
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.one_of(st.sampled_from(SCHEMA_KEYS), st.builds(lambda a, b: f"{a}.{b}", st.sampled_from(SECTIONS), keys)))
        value = draw(typed_value(SCHEMA_TYPES[key]) if key in SCHEMA_TYPES else values)
        *parents, last = key.split(".")
        table = document
        for part in parents:
            if not isinstance(table.get(part), dict):
                table[part] = {}
            table = table[part]
        if draw(st.booleans()) and last in table:
            del table[last]
        else:
            table[last] = value
    return document




def override_strings():
    dotted = st.one_of(st.sampled_from(SCHEMA_KEYS), st.sampled_from(SECTIONS), text)
    value_text = st.one_of(
        st.sampled_from(REAL_VALUES),
        text,
        scalars.map(lambda v: tomli_w.dumps({"v": v})[4:].strip()),
        st.sampled_from(["[a,b]", '["a", "b"]', "{epochs=1}", "[[[[", "1e400", "nan", "1\nx=2", "2e-5", "true"]),
    )
    return st.one_of(st.builds(lambda k, v: f"{k}={v}", dotted, value_text), text)


def load_checked(content: bytes, overrides: list[str]):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.toml"
        path.write_bytes(content)
        try:
            recipe = load_recipe(path, overrides)
        except RecipeError:
            return None
        # anything else, including other BertctlErrors, escapes and fails the test
        if not overrides:
            assert EDITOR_SCHEMA.is_valid(tomllib.loads(content.decode("utf-8-sig"))), "the JSON Schema refuses a recipe bertctl accepts"
        assert EDITOR_SCHEMA.is_valid(recipe.to_dict())
        copy = Path(tmp) / "elsewhere" / "copy.toml"
        copy.parent.mkdir()
        copy.write_text(recipe.to_toml(), encoding="utf-8")
        again = load_recipe(copy)
        assert again.to_dict() == recipe.to_dict()
        return recipe


@SETTINGS
@given(random_documents, st.lists(override_strings(), max_size=3))
@pytest.mark.slow
def test_recipe_fuzz_documents_load_or_raise_recipe_error(document, overrides):
    load_checked(tomli_w.dumps(document).encode("utf-8"), overrides)


@SETTINGS
@given(mutated_documents())
@pytest.mark.slow
def test_recipe_fuzz_near_valid_documents_load_or_raise_recipe_error(document):
    load_checked(tomli_w.dumps(document).encode("utf-8"), [])


@SETTINGS
@given(st.one_of(text.map(lambda s: s.encode("utf-8")), st.text().map(lambda s: s.encode("utf-8", "surrogatepass")), st.binary(max_size=200)))
def test_recipe_fuzz_raw_text_loads_or_raises_recipe_error(content):
    load_checked(content, [])


@SETTINGS
@given(st.lists(override_strings(), min_size=1, max_size=4))
def test_recipe_fuzz_overrides_on_a_valid_recipe(overrides):
    load_checked((REPO / "recipes" / "agnews.toml").read_bytes().replace(b'"data/agnews/', f'"{REPO}/recipes/data/agnews/'.encode()), overrides)

