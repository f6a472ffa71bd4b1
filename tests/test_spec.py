"""The spec: loading, validation errors with field paths, overrides, the Module form."""

from __future__ import annotations

import json

import crosstrain as ct
import pytest
from conftest import EXAMPLES, run_python, tiny_spec
from crosstrain.errors import SpecError


def issues_of(source: object) -> list[str]:
    with pytest.raises(SpecError) as info:
        ct.load_spec(source)
    return [str(issue) for issue in info.value.issues]


def test_examples_load():
    for path in EXAMPLES.glob("*.yaml"):
        spec = ct.load_spec(path)
        assert spec.model is not None
        assert spec.data.source.split(":", 1)[0] in ("sklearn", "text"), path  # data on disk


def test_yaml_json_dict_and_spec_give_the_same_spec(tmp_path):
    data = tiny_spec()
    (tmp_path / "s.json").write_text(json.dumps(data))
    from_json = ct.load_spec(tmp_path / "s.json")
    from_dict = ct.load_spec(data)
    from_text = ct.load_spec(json.dumps(data))
    assert from_json == from_dict == from_text == ct.load_spec(from_dict)
    assert ct.load_spec(from_dict.to_dict()) == from_dict


def test_field_path_for_negative_units():
    spec = tiny_spec()
    spec["model"]["layers"].insert(2, {"type": "Dense", "units": -3})
    assert "model.layers[2].units: expected a positive integer, got -3" in issues_of(spec)


def test_unknown_key_suggests_the_closest_name():
    spec = tiny_spec()
    spec["model"]["layers"][0] = {"type": "Dense", "unitz": 16}
    assert "model.layers[0].unitz: unknown key 'unitz'; did you mean 'units'?" in issues_of(spec)
    spec = tiny_spec(trainer={"max_epoch": 3})
    assert "trainer.max_epoch: unknown key 'max_epoch'; did you mean 'max_epochs'?" in issues_of(
        spec
    )


def test_unknown_layer_type_suggests():
    spec = tiny_spec()
    spec["model"]["layers"][0] = {"type": "Dens", "units": 16}
    (issue,) = issues_of(spec)
    assert issue.startswith("model.layers[0]: unknown layer type 'Dens'; did you mean 'Dense'?")


def test_wrong_type_and_all_errors_at_once():
    spec = tiny_spec(optimizer={"name": "adamm"})
    spec["model"]["layers"][0] = {"type": "Dense", "units": "abc"}
    spec["data"]["batch_sise"] = 4
    issues = issues_of(spec)
    assert "model.layers[0].units: expected an integer, got 'abc'" in issues
    assert any(
        i.startswith("optimizer: unknown optimizer 'adamm'; did you mean 'adam'?") for i in issues
    )
    assert any(i.startswith("data.batch_sise: unknown key") for i in issues)
    assert len(issues) == 3


def test_semantic_errors_name_their_place():
    spec = tiny_spec(loss={"name": "huber", "options": {"delt": 1.0}}, metrics=["acuracy"])
    spec["data"]["options"]["sample"] = 3
    spec["model"]["layers"].append({"type": "Conv2D", "filters": 2, "kernel_size": 3})
    issues = issues_of(spec)
    assert any(i.startswith("loss.options.delt: unknown option") for i in issues)
    assert any(
        i.startswith("metrics[0]: unknown metric 'acuracy'; did you mean 'accuracy'?")
        for i in issues
    )
    assert any(
        i.startswith("data.options.sample: unknown key 'sample'; did you mean 'samples'?")
        for i in issues
    )
    assert any(i.startswith("model.layers[3]: Conv2D cannot take input shape (3,)") for i in issues)


def test_nested_layers_have_paths():
    spec = tiny_spec()
    spec["model"]["layers"].insert(
        2, {"type": "Residual", "layers": [{"type": "Dense", "units": 0}]}
    )
    assert "model.layers[2].layers[0].units: expected a positive integer, got 0" in issues_of(spec)


def test_yaml_python_tags_are_refused():
    (issue,) = issues_of("name: x\nseed: !!python/object/apply:os.system ['echo pwned']\n")
    assert "refused YAML tag" in issue


def test_malformed_yaml_names_the_line():
    (issue,) = issues_of("name: x\nmodel: {input_shape: [1, 2\nseed: 3\n")
    assert issue.startswith("malformed YAML: line")


def test_missing_file():
    (issue,) = issues_of("does/not/exist.yaml")
    assert "spec file not found" in issue


def test_override_validates_and_parses_values():
    spec = ct.load_spec(tiny_spec())
    changed = spec.override(
        {"trainer.max_epochs": "5", "model.layers[0].units": 4, "optimizer.lr": "3e-4"}
    )
    assert changed.trainer.max_epochs == 5 and changed.model.layers[0].units == 4
    assert changed.optimizer.lr == pytest.approx(3e-4)
    assert spec.trainer.max_epochs == 2
    with pytest.raises(SpecError, match=r"trainer.max_epoch: unknown key"):
        spec.override({"trainer.max_epoch": "1"})


def test_module_class_validates_into_the_same_spec():
    class Tiny(ct.Module):
        input_shape = (8,)

        def layers(self):
            return [ct.layers.Dense(16), ct.layers.ReLU(), ct.layers.Dense(3)]

        def loss(self, xp, logits, targets):
            return ct.losses.cross_entropy(xp, logits, targets) + 1e-4 * xp.mean(logits**2)

        def optimizer(self):
            return ct.optim.Adam(lr=1e-2)

    spec = Tiny().to_spec()
    assert isinstance(spec, ct.Spec)
    assert [type(layer).__name__ for layer in spec.model.layers] == ["Dense", "ReLU", "Dense"]
    assert spec.loss.fn is not None and spec.loss.name == "Tiny.loss"
    assert spec.model == ct.load_spec(tiny_spec()).model


def test_schedules_factor():
    cosine = ct.optim.Cosine(warmup_steps=10)
    assert cosine.factor(0, 110) == pytest.approx(0.1)
    assert cosine.factor(10, 110) == pytest.approx(1.0)
    assert cosine.factor(60, 110) == pytest.approx(0.5)
    assert cosine.factor(110, 110) == pytest.approx(0.0)
    assert ct.optim.StepDecay(step_size=5, gamma=0.5).factor(12, 100) == pytest.approx(0.25)


def test_no_framework_imported_before_validation():
    code = (
        "import sys, crosstrain as ct\n"
        f"ct.load_spec({str(EXAMPLES / 'digits_cnn.yaml')!r})\n"
        "from crosstrain.plugin.registry import get_registry\n"
        "print(sorted(get_registry().backends.names()))\n"
        "loaded = [m for m in ('torch','jax','flax','optax','keras','tensorflow') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    assert "torch" in done.stdout
