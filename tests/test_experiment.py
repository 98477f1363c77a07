"""ExperimentDescription: SPEC's Core API examples, sweep order, save paths and input errors."""

from __future__ import annotations

import copy
import itertools
import json
import os
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pyexp import (
    ConfigError,
    ExperimentDescription,
    ExperimentError,
    FileSystemContext,
    SavePathError,
    loadExperiment,
    paramsHash,
)
from pyexp.config import load_config

TWO_KEYS = {
    "metaParameters": {
        "alpha": [1.0, 0.5, 0.25, 0.125],
        "lambda": [1.0, 0.99, 0.98, 0.96],
    }
}
SPEC_EXAMPLE = {
    "name": "MountainCar-v0",
    "agent": "SARSA",
    "environment": "MountainCar",
    "metaParameters": {
        "alpha": [1.0, 0.5, 0.25, 0.125],
        "lambda": [1.0, 0.99, 0.98, 0.96],
        "optimizer": {"name": "adam", "beta": [0.9, 0.99]},
        "hidden": [[32, 32]],
        "features": {"$choice": [{"kind": "tiles", "tiles": [8, 16]}, {"kind": "raw"}]},
    },
}


@pytest.fixture
def config(tmp_path):
    """Defaults rooted at tmp_path: experiments/ and results/ live there."""
    return load_config(None, cwd=str(tmp_path))


def make(d: dict, config, path: str | None = None) -> ExperimentDescription:
    return ExperimentDescription(copy.deepcopy(d), path=path, config=config)


def write_json(path, data) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def with_config(tmp_path, **settings_) -> object:
    path = write_json(tmp_path / "config.json", settings_)
    return load_config(path)


# ---------------------------------------------------------------- SPEC's Core API table


def test_permutable_lists_swept_keys_with_their_values(config):
    exp = make(TWO_KEYS, config)
    assert exp.permutable() == {
        "alpha": [1.0, 0.5, 0.25, 0.125],
        "lambda": [1.0, 0.99, 0.98, 0.96],
    }


def test_num_permutations_of_two_key_example(config):
    assert make(TWO_KEYS, config).numPermutations() == 16


@pytest.mark.parametrize(
    ("idx", "expected"),
    [
        (0, {"alpha": 1.0, "lambda": 1.0}),
        (1, {"alpha": 1.0, "lambda": 0.99}),
        (15, {"alpha": 0.125, "lambda": 0.96}),
        (16, {"alpha": 1.0, "lambda": 1.0}),
    ],
)
def test_get_permutation_examples(config, idx, expected):
    assert make(TWO_KEYS, config).getPermutation(idx) == expected


@pytest.mark.parametrize(("idx", "run"), [(0, 0), (12, 0), (16, 1), (32, 2)])
def test_get_run_examples(config, idx, run):
    assert make(TWO_KEYS, config).getRun(idx) == run


def test_last_key_varies_fastest(config):
    exp = make({"metaParameters": {"b": [1, 2], "a": [1, 2, 3], "c": ["x", "y"]}}, config)
    got = [exp.getPermutation(i) for i in range(exp.numPermutations())]
    expected = [{"a": a, "b": b, "c": c} for a, b, c in itertools.product([1, 2, 3], [1, 2], "xy")]
    assert got == expected


@pytest.mark.parametrize(
    ("relative", "name"),
    [
        ("experiments/MountainCar-v0/sarsa.json", "MountainCar-v0"),
        ("experiments/a/b/c.json", "a/b"),
        ("experiments/top.json", "top"),
    ],
)
def test_experiment_name_from_path(tmp_path, monkeypatch, config, relative, name):
    write_json(tmp_path / relative, TWO_KEYS)
    monkeypatch.chdir(tmp_path)
    assert loadExperiment(relative, config=config).getExperimentName() == name
    assert loadExperiment(str(tmp_path / relative), config=config).getExperimentName() == name


def test_experiment_name_field_wins_over_path(tmp_path, config):
    path = write_json(tmp_path / "experiments/MountainCar-v0/sarsa.json", SPEC_EXAMPLE)
    assert loadExperiment(path, config=config).getExperimentName() == "MountainCar-v0"
    renamed = {**SPEC_EXAMPLE, "name": "other"}
    path = write_json(tmp_path / "experiments/MountainCar-v0/renamed.json", renamed)
    assert loadExperiment(path, config=config).getExperimentName() == "other"


def test_experiment_name_follows_configured_experiment_directory(tmp_path):
    config = with_config(tmp_path, experiment_directory="exps")
    path = write_json(tmp_path / "exps/cartpole/dqn/q.json", TWO_KEYS)
    assert loadExperiment(path, config=config).getExperimentName() == "cartpole/dqn"


def test_top_level_fields_are_attributes(config):
    exp = make(SPEC_EXAMPLE, config)
    assert exp.agent == "SARSA"
    with pytest.raises(AttributeError):
        _ = exp.no_such_field


# ---------------------------------------------------------------- nesting, conditionals, literals


def test_nested_dicts_are_dotted_in_permutable_and_nested_in_permutations(config):
    exp = make({"metaParameters": {"optimizer": {"name": "adam", "beta": [0.9, 0.99]}}}, config)
    assert exp.permutable() == {"optimizer.beta": [0.9, 0.99]}
    assert exp.numPermutations() == 2
    assert exp.getPermutation(0) == {"optimizer": {"name": "adam", "beta": 0.9}}
    assert exp.getPermutation(1) == {"optimizer": {"name": "adam", "beta": 0.99}}


def test_list_of_dicts_is_a_fixed_array_whose_inner_sweeps_expand(config):
    layers = [{"units": [64, 128], "act": "relu"}, {"units": 10, "act": "softmax"}]
    exp = make({"metaParameters": {"layers": layers}}, config)
    assert exp.numPermutations() == 2
    assert exp.permutable() == {"layers.[0].units": [64, 128]}
    assert [exp.getPermutation(i) for i in range(2)] == [
        {"layers": [{"units": 64, "act": "relu"}, {"units": 10, "act": "softmax"}]},
        {"layers": [{"units": 128, "act": "relu"}, {"units": 10, "act": "softmax"}]},
    ]


def test_fixed_array_keeps_element_order_past_ten_elements(config):
    exp = make({"metaParameters": {"l": [{"u": [i, -i]} for i in range(1, 13)]}}, config)
    assert exp.numPermutations() == 2**12
    assert [layer["u"] for layer in exp.getPermutation(0)["l"]] == list(range(1, 13))


def test_choice_inside_a_choice_and_inside_a_fixed_array(config):
    inner = {"$choice": [{"k": [1, 2]}, {"j": 0}]}
    exp = make({"metaParameters": {"a": [{"c": inner}], "b": {"$choice": [{"x": inner}]}}}, config)
    assert exp.numPermutations() == 9
    assert exp.getPermutation(0) == {"a": [{"c": {"k": 1}}], "b": {"x": {"k": 1}}}
    assert exp.getPermutation(8) == {"a": [{"c": {"j": 0}}], "b": {"x": {"j": 0}}}


@pytest.mark.parametrize(
    ("meta", "match"),
    [
        ({"f": {"$choice": []}}, r"f: empty '\$choice'"),
        ({"f": {"$choice": [1]}}, r"f\.\$choice\[0\]: an alternative must be an object"),
        ({"f": {"$choice": [{}], "x": 1}}, r"f: '\$choice' must be the only key"),
        ({"f": [{"a": 1}, 2]}, r"f\[1\]: a list that starts with an object"),
    ],
)
def test_malformed_choice_or_array_names_the_key(config, meta, match):
    with pytest.raises(ExperimentError, match=match) as err:
        make({"metaParameters": meta}, config)
    one_line(err)


def test_conditional_sweep_gives_one_permutation_per_alternative(config):
    exp = make({"metaParameters": {"features": SPEC_EXAMPLE["metaParameters"]["features"]}}, config)
    assert exp.numPermutations() == 3
    assert [exp.getPermutation(i) for i in range(3)] == [
        {"features": {"kind": "tiles", "tiles": 8}},
        {"features": {"kind": "tiles", "tiles": 16}},
        {"features": {"kind": "raw"}},
    ]
    assert exp.permutable() == {"features": [{"kind": "tiles", "tiles": [8, 16]}, {"kind": "raw"}]}


def test_spec_example_order_and_count(config):
    exp = make(SPEC_EXAMPLE, config)
    # alpha 4 x features 3 x hidden 1 x lambda 4 x optimizer.beta 2
    assert exp.numPermutations() == 96

    def perm(alpha, features, lam, beta):
        return {
            "alpha": alpha,
            "features": features,
            "hidden": [32, 32],
            "lambda": lam,
            "optimizer": {"name": "adam", "beta": beta},
        }

    tiles8, tiles16, raw = (
        {"kind": "tiles", "tiles": 8},
        {"kind": "tiles", "tiles": 16},
        {"kind": "raw"},
    )
    assert exp.getPermutation(0) == perm(1.0, tiles8, 1.0, 0.9)
    assert exp.getPermutation(1) == perm(1.0, tiles8, 1.0, 0.99)
    assert exp.getPermutation(2) == perm(1.0, tiles8, 0.99, 0.9)
    assert exp.getPermutation(8) == perm(1.0, tiles16, 1.0, 0.9)
    assert exp.getPermutation(16) == perm(1.0, raw, 1.0, 0.9)
    assert exp.getPermutation(24) == perm(0.5, tiles8, 1.0, 0.9)
    assert exp.getPermutation(95) == perm(0.125, raw, 0.96, 0.99)
    assert exp.getPermutation(96) == exp.getPermutation(0)
    assert exp.getRun(95) == 0 and exp.getRun(96) == 1


def test_list_inside_sweep_list_is_one_literal_value(config):
    exp = make({"metaParameters": {"hidden": [[32, 32]]}}, config)
    assert exp.numPermutations() == 1
    assert exp.getPermutation(0) == {"hidden": [32, 32]}
    exp = make({"metaParameters": {"hidden": [[32, 32], [64], []]}}, config)
    assert exp.numPermutations() == 3
    assert [exp.getPermutation(i)["hidden"] for i in range(3)] == [[32, 32], [64], []]


def test_scalars_and_empty_objects_are_constants(config):
    exp = make({"metaParameters": {"a": 1, "b": None, "c": {}, "d": [True, False]}}, config)
    assert exp.numPermutations() == 2
    assert exp.getPermutation(1) == {"a": 1, "b": None, "c": {}, "d": False}
    assert exp.permutable() == {"d": [True, False]}


def test_an_empty_object_loads_with_one_warning_naming_the_key_and_file(tmp_path, caplog):
    path = tmp_path / "experiments" / "e.json"
    path.parent.mkdir()
    meta = {"alpha": [0.1, 0.2], "optimizer": {}, "net": {"layers": {}, "width": 3}}
    path.write_text(json.dumps({"metaParameters": meta}))
    with caplog.at_level("WARNING", logger="pyexp.experiment"):
        exp = loadExperiment(str(path))
    assert exp.numPermutations() == 2  # PyExpUtils loads it too: a warning, not an error
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2 and all("\n" not in line for line in said)
    assert said[0].startswith(f"{path}: metaParameters.optimizer: an empty object")
    assert said[1].startswith(f"{path}: metaParameters.net.layers: an empty object")
    assert "remove it or give it keys" in said[0]


def test_no_swept_keys_is_one_permutation(config):
    exp = make({"metaParameters": {"a": 1}}, config)
    assert exp.numPermutations() == 1
    assert [exp.getPermutation(i) for i in range(3)] == [{"a": 1}] * 3
    assert exp.getRun(2) == 2


@pytest.mark.parametrize("k", [1, 2, 7, 10**15])
def test_wrapping(config, k):
    exp = make(SPEC_EXAMPLE, config)
    n = exp.numPermutations()
    for i in (0, 1, 17, n - 1):
        assert exp.getPermutation(i + k * n) == exp.getPermutation(i)
        assert exp.getRun(i + k * n) == k


def test_returned_permutation_can_be_mutated_without_corrupting_later_calls(config):
    exp = make(SPEC_EXAMPLE, config)
    first = exp.getPermutation(16)
    expected = copy.deepcopy(first)
    first["hidden"].append(99)
    first["optimizer"]["name"] = "sgd"
    first["features"]["kind"] = "changed"
    assert exp.getPermutation(16) == expected
    meta = {"f": {"$choice": [{"layers": [[1, 2]]}]}, "g": [[3, 4]], "h": [{"u": [[5]]}]}
    sub = make({"metaParameters": meta}, config)
    a = sub.getPermutation(0)
    a["f"]["layers"].append(0)
    a["g"].append(0)
    a["h"][0]["u"].append(0)
    assert sub.getPermutation(0) == {"f": {"layers": [1, 2]}, "g": [3, 4], "h": [{"u": [5]}]}


def test_mutating_permutable_does_not_corrupt_permutations(config):
    exp = make(SPEC_EXAMPLE, config)
    before = [exp.getPermutation(i) for i in range(exp.numPermutations())]
    swept = exp.permutable()
    swept["hidden"][0].append(1)
    swept["features"][0]["tiles"].append(32)
    swept["alpha"].append(2.0)
    assert [exp.getPermutation(i) for i in range(exp.numPermutations())] == before
    assert exp.permutable()["hidden"] == [[32, 32]]


def test_huge_sweep_is_computed_not_enumerated(config):
    keys = [f"k{j:02d}" for j in range(12)]
    exp = make({"metaParameters": {k: list(range(10)) for k in keys}}, config)
    start = time.perf_counter()
    assert exp.numPermutations() == 10**12
    for idx in (0, 7, 123_456_789_012, 10**12 - 1, 10**12 + 5, 3 * 10**12 + 42):
        digits = [int(c) for c in f"{idx % 10**12:012d}"]  # k00 slowest ... k11 fastest
        assert exp.getPermutation(idx) == dict(zip(keys, digits, strict=True))
    assert exp.getRun(3 * 10**12 + 42) == 3
    assert time.perf_counter() - start < 2.0  # loose: enumeration would take days


# ---------------------------------------------------------------- property tests

KEYS = st.sampled_from(["a", "b", "c", "lr", "x_y", "Z"])
SCALARS = st.one_of(
    st.integers(-3, 3),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.booleans(),
    st.none(),
    st.text(alphabet="pqr", max_size=2),
)
LITERAL_LISTS = st.lists(st.one_of(SCALARS, st.dictionaries(KEYS, SCALARS, max_size=1)), max_size=2)


def sweep_dicts(depth: int) -> st.SearchStrategy:
    """metaParameters-like: constants, nested dicts, sweeps, fixed arrays and $choice."""
    element = st.one_of(SCALARS, LITERAL_LISTS)
    value = st.one_of(SCALARS, st.lists(element, min_size=1, max_size=3))
    if depth > 0:
        sub = sweep_dicts(depth - 1)
        subs = st.lists(sub, min_size=1, max_size=3)
        value = st.one_of(
            value,
            subs,  # a fixed array of structures
            subs.map(lambda alternatives: {"$choice": alternatives}),
            st.dictionaries(
                KEYS,
                st.one_of(SCALARS, st.lists(SCALARS, min_size=1, max_size=3)),
                min_size=1,
                max_size=2,
            ),
        )
    return st.dictionaries(KEYS, value, max_size=4)


def ref_leaves(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for key, value in d.items():
        if isinstance(value, dict) and value and "$choice" not in value:
            out.extend(ref_leaves(value, f"{prefix}{key}."))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for i, element in enumerate(value):
                out.extend(ref_leaves({f"[{i}]": element}, f"{prefix}{key}."))
        else:
            out.append((prefix + key, value))
    return out


def ref_nest(flat: list[tuple[str, object]]) -> dict:
    tree: dict = {}
    for dotted, value in flat:
        node = tree
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = ("leaf", value)

    def build(node):
        if isinstance(node, tuple):
            return node[1]
        if node and all(k.startswith("[") for k in node):
            return [build(node[f"[{i}]"]) for i in range(len(node))]
        return {k: build(v) for k, v in node.items()}

    return build(tree)


def ref_options(value) -> list:
    if isinstance(value, dict) and "$choice" in value:
        return [p for alternative in value["$choice"] for p in ref_enumerate(alternative)]
    return list(value) if isinstance(value, list) else [value]


def ref_count(d: dict) -> int:
    total = 1
    for _, value in ref_leaves(d):
        if isinstance(value, dict) and "$choice" in value:
            total *= sum(ref_count(v) for v in value["$choice"])
        elif isinstance(value, list):
            total *= len(value)
    return total


def ref_enumerate(d: dict) -> list[dict]:
    """The documented order, independently: product over sorted dotted keys, last fastest."""
    leaves = sorted(ref_leaves(d))
    options = [ref_options(value) for _, value in leaves]
    return [
        ref_nest([(key, copy.deepcopy(v)) for (key, _), v in zip(leaves, combo, strict=True)])
        for combo in itertools.product(*options)
    ]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(meta=sweep_dicts(2), k=st.integers(0, 10**9), data=st.data())
def test_indices_map_one_to_one_onto_reference_enumeration(meta, k, data):
    assume(ref_count(meta) <= 400)
    exp = ExperimentDescription({"name": "prop", "metaParameters": copy.deepcopy(meta)})
    expected = ref_enumerate(meta)
    n = exp.numPermutations()
    assert n == len(expected)
    assert [exp.getPermutation(i) for i in range(n)] == expected
    i = data.draw(st.integers(0, n - 1))
    assert exp.getPermutation(i + k * n) == exp.getPermutation(i)
    assert exp.getRun(i + k * n) == k
    swept = {
        key: value["$choice"] if isinstance(value, dict) else value
        for key, value in sorted(ref_leaves(meta))
        if isinstance(value, list) or (isinstance(value, dict) and "$choice" in value)
    }
    assert exp.permutable() == swept


# ---------------------------------------------------------------- save paths


def test_default_save_path_uses_name_params_and_run(tmp_path, config):
    exp = make(TWO_KEYS | {"name": "mc"}, config)
    assert exp.interpolateSavePath(0) == str(tmp_path / "results/mc/alpha-1.0_lambda-1.0/0")
    assert exp.interpolateSavePath(17) == str(tmp_path / "results/mc/alpha-1.0_lambda-0.99/1")


def test_params_are_sorted_dotted_and_include_constants(tmp_path):
    config = with_config(tmp_path, save_path="out/{params}")
    exp = make(SPEC_EXAMPLE, config)
    assert exp.interpolateSavePath(16) == str(
        tmp_path / "out/alpha-1.0_features.kind-raw_hidden.[0]-32_hidden.[1]-32_lambda-1.0_"
        "optimizer.beta-0.9_optimizer.name-adam"
    )


def test_top_level_fields_and_params_hash_in_save_path(tmp_path):
    config = with_config(tmp_path, save_path="r/{agent}/{environment}/{name}/{params_hash}/{run}")
    exp = make(SPEC_EXAMPLE, config)
    n = exp.numPermutations()
    path = exp.interpolateSavePath(n + 5)
    h = paramsHash(exp.getPermutation(5))
    assert path == str(tmp_path / f"r/SARSA/MountainCar/MountainCar-v0/{h}/1")
    assert len(h) == 20 and int(h, 16) >= 0
    assert len({paramsHash(exp.getPermutation(i)) for i in range(n)}) == n


def test_params_hash_is_stable_across_processes(config):
    params = make(SPEC_EXAMPLE, config).getPermutation(3)
    code = (
        "import sys, json; from pyexp import paramsHash; print(paramsHash(json.loads(sys.argv[1])))"
    )
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code, json.dumps(params)],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert out == paramsHash(params)
    assert paramsHash({"b": 1, "a": {"y": 2, "x": 3}}) == paramsHash(
        {"a": {"x": 3, "y": 2}, "b": 1}
    )


def test_interpolate_with_explicit_key(tmp_path, config):
    exp = make(SPEC_EXAMPLE, config)
    assert exp.interpolateSavePath(1, key="{name}/{run}-{agent}") == "MountainCar-v0/0-SARSA"


def test_build_save_context(tmp_path, config):
    exp = make(TWO_KEYS | {"name": "mc"}, config)
    ctx = exp.buildSaveContext(3)
    assert isinstance(ctx, FileSystemContext)
    assert ctx.resolve("returns.npy") == os.path.join(exp.interpolateSavePath(3), "returns.npy")
    moved = exp.buildSaveContext(3, base=str(tmp_path / "scratch"))
    assert moved.resolve() == str(tmp_path / "scratch/results/mc/alpha-1.0_lambda-0.96/0")


def test_unknown_placeholder_lists_the_known_ones(tmp_path):
    exp = make(SPEC_EXAMPLE, with_config(tmp_path, save_path="results/{nope}/{run}"))
    with pytest.raises(SavePathError, match=r"unknown placeholder \{nope\}") as err:
        exp.interpolateSavePath(0)
    message = str(err.value)
    assert "\n" not in message
    for known in ("{agent}", "{environment}", "{name}", "{params}", "{params_hash}", "{run}"):
        assert known in message.split("known:")[1]


@pytest.mark.parametrize("value", ["a/b", "..", "../../etc", "/abs", "x\0y"])
def test_parameter_values_cannot_add_or_climb_path_components(config, value):
    exp = make({"name": "n", "metaParameters": {"alpha": [1.0, value]}}, config)
    exp.interpolateSavePath(0)
    with pytest.raises(SavePathError, match="alpha"):
        exp.interpolateSavePath(1)


def test_parameter_names_cannot_add_path_components(config):
    exp = make({"name": "n", "metaParameters": {"a/b": [1]}}, config)
    with pytest.raises(SavePathError, match="a/b"):
        exp.interpolateSavePath(0)


@pytest.mark.parametrize("field", [{"agent": "../up"}, {"agent": "a/b"}, {"name": "../x"}])
def test_fields_cannot_climb_out(tmp_path, field):
    exp = make(SPEC_EXAMPLE | field, with_config(tmp_path, save_path="r/{name}/{agent}/{run}"))
    with pytest.raises(SavePathError, match="agent|name"):
        exp.interpolateSavePath(0)


def test_name_may_hold_subfolders(tmp_path):
    exp = make(SPEC_EXAMPLE | {"name": "mc/v0"}, with_config(tmp_path, save_path="r/{name}/{run}"))
    assert exp.interpolateSavePath(0) == str(tmp_path / "r/mc/v0/0")


def test_over_long_component_suggests_params_hash(tmp_path, config):
    long = "x" * 300
    exp = make({"name": "n", "metaParameters": {"alpha": [1.0], "tag": long}}, config)
    with pytest.raises(SavePathError, match=r"255.*\{params_hash\}") as err:
        exp.interpolateSavePath(0)
    assert "\n" not in str(err.value)
    hashed = make(
        {"name": "n", "metaParameters": {"alpha": [1.0], "tag": long}},
        with_config(tmp_path, save_path="r/{name}/{params_hash}/{run}"),
    )
    assert len(os.path.basename(os.path.dirname(hashed.interpolateSavePath(0)))) == 20


def test_component_limit_counts_bytes_not_characters(config):
    ok = make({"name": "n", "metaParameters": {"t": "é" * 60}}, config)
    ok.interpolateSavePath(0)  # "t-" + 120 bytes
    too_long = make({"name": "n", "metaParameters": {"t": "é" * 127}}, config)  # 2 + 254 bytes
    with pytest.raises(SavePathError, match="256 bytes"):
        too_long.interpolateSavePath(0)


# ---------------------------------------------------------------- errors: one clear line each


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_malformed_json_names_file_line_and_column(tmp_path):
    path = write_json(
        tmp_path / "bad.json", '{\n  "metaParameters": {\n    "alpha": [1.0,, 2]\n  }\n}'
    )
    with pytest.raises(ExperimentError, match=r"bad\.json:3:19: invalid JSON") as err:
        loadExperiment(path)
    one_line(err)


def test_unreadable_experiment_file(tmp_path):
    with pytest.raises(ExperimentError, match=r"missing\.json: cannot read") as err:
        loadExperiment(str(tmp_path / "missing.json"))
    one_line(err)


def test_missing_meta_parameters(tmp_path, config):
    path = write_json(tmp_path / "e.json", {"agent": "x"})
    with pytest.raises(ExperimentError, match=r"e\.json: no 'metaParameters'") as err:
        loadExperiment(path, config=config)
    one_line(err)


@pytest.mark.parametrize(
    ("meta", "key"),
    [
        ({"alpha": []}, "alpha"),
        ({"optimizer": {"beta": []}}, r"optimizer\.beta"),
        ({"features": [{"tiles": []}]}, r"features\.\[0\]\.tiles"),
        ({"f": {"$choice": [{"tiles": []}]}}, r"f\.\$choice\[0\]\.tiles"),
    ],
)
def test_empty_list_names_the_key(config, meta, key):
    with pytest.raises(ExperimentError, match=rf"{key}: empty list") as err:
        make({"metaParameters": meta}, config)
    one_line(err)


@pytest.mark.parametrize(
    ("meta", "key"),
    [
        ({"alpha": {1, 2}}, "alpha"),
        ({"alpha": [1.0, float("nan")]}, r"alpha\[1\]"),
        ({"alpha": float("inf")}, "alpha"),
        ({"opt": {"thing": object()}}, r"opt\.thing"),
        ({"hidden": [[1, (2, 3)]]}, r"hidden\[0\]"),
        ({"lit": [[{1: 2}]]}, r"lit\[0\]"),
    ],
)
def test_non_json_values_name_the_key(config, meta, key):
    with pytest.raises(ExperimentError, match=rf"{key}: .*(not JSON data|not a string)") as err:
        make({"metaParameters": meta}, config)
    one_line(err)


def test_nan_in_json_file_is_rejected(tmp_path, config):
    path = write_json(tmp_path / "nan.json", '{"metaParameters": {"alpha": [NaN]}}')
    with pytest.raises(ExperimentError, match=r"nan\.json: metaParameters\.alpha\[0\]: nan"):
        loadExperiment(path, config=config)


@pytest.mark.parametrize("meta", [{"a.b": [1]}, {"opt": {"x.y": 1}}, {"": [1]}])
def test_keys_with_dots_are_rejected(config, meta):
    with pytest.raises(ExperimentError, match="without '.'") as err:
        make({"metaParameters": meta}, config)
    one_line(err)


@pytest.mark.parametrize("d", [[1, 2], "text", {"metaParameters": [1, 2]}, {"metaParameters": 3}])
def test_wrong_types_in_experiment(config, d):
    with pytest.raises(ExperimentError, match="expected") as err:
        ExperimentDescription(d, config=config)
    one_line(err)


def test_malformed_config_names_file_line_and_column(tmp_path):
    path = write_json(tmp_path / "config.json", '{\n  "save_path": "r/{run}",\n}')
    with pytest.raises(ConfigError, match=r"config\.json:3:1: invalid JSON") as err:
        load_config(path)
    one_line(err)


def test_unknown_config_key(tmp_path):
    path = write_json(tmp_path / "config.json", {"save_pth": "x"})
    with pytest.raises(
        ConfigError, match=r"unknown key\(s\) \['save_pth'\]; known: .*save_path"
    ) as err:
        load_config(path)
    one_line(err)


@pytest.mark.parametrize(
    "settings_",
    [{"save_path": 3}, {"log_path": None}, {"experiment_directory": ["a"]}, {"command": 1}],
)
def test_wrong_config_types(tmp_path, settings_):
    path = write_json(tmp_path / "config.json", settings_)
    key = next(iter(settings_))
    with pytest.raises(ConfigError, match=f"'{key}' must be a string") as err:
        load_config(path)
    one_line(err)


def test_errors_are_value_errors_and_pyexp_errors(config):
    from pyexp import PyExpError

    with pytest.raises(PyExpError):
        make({"metaParameters": {"a": []}}, config)
    with pytest.raises(ValueError):
        make({"metaParameters": {"a": []}}, config)


def test_fields_the_template_does_not_use_may_hold_anything(tmp_path, config):
    exp = make(SPEC_EXAMPLE | {"description": "SARSA w/ tiles, see ../notes"}, config)
    assert exp.interpolateSavePath(0).startswith(str(tmp_path / "results/MountainCar-v0/"))
    with pytest.raises(SavePathError, match="description"):
        exp.interpolateSavePath(0, key="{description}/{run}")


def test_experiment_pickles_with_its_index_math(tmp_path, config):
    import pickle

    exp = make(SPEC_EXAMPLE, config)
    copied = pickle.loads(pickle.dumps(exp))
    n = exp.numPermutations()
    assert copied.numPermutations() == n
    assert [copied.getPermutation(i) for i in range(n)] == [exp.getPermutation(i) for i in range(n)]
    assert copied.interpolateSavePath(5) == exp.interpolateSavePath(5)
    assert copy.deepcopy(exp).getPermutation(7) == exp.getPermutation(7)


# ---------------------------------------------------------------- what PyExpUtils users rely on


class MyModel(ExperimentDescription):
    """A user's subclass, as PyExpUtils projects write them."""

    def __init__(self, d: dict, path: str | None = None, config=None) -> None:
        super().__init__(d, path=path, config=config)
        self.env = d["environment"]

    @property
    def tag(self) -> str:
        return f"{self.agent}-v2"


def test_load_experiment_builds_the_given_model(tmp_path, config):
    path = write_json(tmp_path / "experiments/mc/sarsa.json", SPEC_EXAMPLE)
    exp = loadExperiment(path, MyModel, config=config)
    assert type(exp) is MyModel and exp.env == "MountainCar"
    assert type(loadExperiment(path, config)) is ExperimentDescription  # older positional use
    with pytest.raises(TypeError, match="Model must be ExperimentDescription") as err:
        loadExperiment(path, dict)
    one_line(err)


def test_attributes_of_a_subclass_are_placeholders(tmp_path, monkeypatch, config):
    monkeypatch.chdir(tmp_path)
    path = write_json(tmp_path / "experiments/mc/sarsa.json", SPEC_EXAMPLE)
    exp = loadExperiment(path, MyModel, config=config)
    got = exp.interpolateSavePath(0, key="r/{env}/{tag}/{run}")
    assert got == "r/MountainCar/SARSA-v2/0"
    relative = loadExperiment(os.path.relpath(path), MyModel, config=config)
    assert relative.interpolateSavePath(0, key="{path}") == os.path.relpath(path)
    with pytest.raises(SavePathError, match=r"unknown placeholder \{nope\}") as err:
        exp.interpolateSavePath(0, key="{nope}")
    one_line(err)


def test_nameless_dict_experiment_interpolates_keys_without_name(config):
    exp = ExperimentDescription(copy.deepcopy(TWO_KEYS), config=config)
    assert exp.interpolateSavePath(17, key="{params}/{run}") == "alpha-1.0_lambda-0.99/1"
    with pytest.raises(SavePathError, match=r"\{name\} needs a 'name' field") as err:
        exp.interpolateSavePath(0, key="{name}/{params}")
    one_line(err)


def test_files_outside_experiment_directory_never_share_a_name(tmp_path, config):
    a = write_json(tmp_path / "study_a/Dyna/exp.json", TWO_KEYS)
    b = write_json(tmp_path / "study_b/Dyna/exp.json", TWO_KEYS)
    far = write_json(tmp_path.parent / f"{tmp_path.name}-far/Dyna/exp.json", TWO_KEYS)
    exps = [loadExperiment(p, config=config) for p in (a, b, far)]
    names = [e.getExperimentName() for e in exps]
    assert names[:2] == ["study_a/Dyna", "study_b/Dyna"]
    assert names[2] == os.path.dirname(far).lstrip("/")
    assert len({e.interpolateSavePath(0) for e in exps}) == 3


@pytest.mark.parametrize(
    "data",
    ['{"metaParameters": {"a": "caf\xe9"}}'.encode("latin-1"), b"\xff\xfe{}"],
)
def test_non_utf8_experiment_file_is_one_line(tmp_path, config, data):
    path = tmp_path / "e.json"
    path.write_bytes(data)
    with pytest.raises(ExperimentError, match=r"e\.json: not UTF-8 text") as err:
        loadExperiment(str(path), config=config)
    one_line(err)


def test_non_utf8_config_is_one_line(tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes('{"save_path": "r\xe9s"}'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"config\.json: not UTF-8 text") as err:
        load_config(str(path))
    one_line(err)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"hidden": [32, 32]}, "hidden.[0]-32_hidden.[1]-32"),
        ({"h": [[1, 2], [3]]}, "h.[0]-[1, 2]_h.[1]-[3]"),
        (
            {"l": [{"u": 1, "a": "relu"}, {"u": [2, 3]}]},
            "l.[0].a-relu_l.[0].u-1_l.[1].u.[0]-2_l.[1].u.[1]-3",
        ),
        ({"b": True, "n": None, "s": "x", "f": 1e-05, "g": 0.1}, "b-True_f-1e-05_g-0.1_n-None_s-x"),
        ({"e": {}, "x": 1}, "x-1"),
        (
            {"h": list(range(12))},
            "_".join(f"h.[{i}]-{i}" for i in sorted(range(12), key=lambda i: f"h.[{i}]")),
        ),
    ],
)
def test_params_string_is_pyexputils_for_every_value_type(params, expected):
    from pyexp.experiment import paramsString

    assert paramsString(params) == expected
