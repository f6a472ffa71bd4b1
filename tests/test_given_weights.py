"""Given weights (`model.weights`, `model.weights_map`, `model.init_from`): a torch state_dict
saved with safetensors gives torch's logits on every backend; mismatches are listed in one
error; pickles are refused; npz and checkpoints round trip."""

from __future__ import annotations

import crosstrain as ct
import numpy as np
import pytest
from crosstrain.errors import SpecError
from crosstrain.nn.model import init_params

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")
nn = torch.nn
F = torch.nn.functional


class Net(nn.Module):
    """pytorch/examples' MNIST Net, small: conv-conv-pool-dropout-flatten-dense-dense."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, 1)
        self.conv2 = nn.Conv2d(4, 8, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(128, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = torch.flatten(self.dropout1(x), 1)
        x = self.dropout2(F.relu(self.fc1(x)))
        return self.fc2(x)


LAYERS = [
    {"type": "Conv2D", "name": "conv1", "filters": 4, "kernel_size": 3, "activation": "relu"},
    {"type": "Conv2D", "name": "conv2", "filters": 8, "kernel_size": 3, "activation": "relu"},
    {"type": "MaxPool2D", "pool_size": 2},
    {"type": "Dropout", "rate": 0.25},
    {"type": "Flatten"},
    {"type": "Dense", "name": "fc1", "units": 16, "activation": "relu"},
    {"type": "Dropout", "rate": 0.5},
    {"type": "Dense", "name": "fc2", "units": 10},
]


def _spec(model_extra: dict, layers: list | None = None) -> ct.Spec:
    return ct.load_spec(
        {
            "model": {"input_shape": [12, 12, 1], "layers": layers or LAYERS, **model_extra},
            "trainer": {"progress": False},
        }
    )


@pytest.fixture(scope="module")
def torch_net(tmp_path_factory):
    torch.manual_seed(0)
    net = Net().eval()
    x = np.random.default_rng(0).normal(size=(5, 12, 12, 1)).astype(np.float32)
    with torch.no_grad():
        logits = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    path = tmp_path_factory.mktemp("net") / "net.safetensors"
    safetensors_torch.save_file(net.state_dict(), str(path))
    return path, x, logits


@pytest.mark.parametrize("backend", ["torch", "jax", "keras"])
def test_a_torch_state_dict_gives_torchs_logits(torch_net, backend) -> None:
    path, x, logits = torch_net
    program = ct.build(_spec({"weights": str(path)}), backend=backend)
    out = np.asarray(program.predict_step((x, None)))
    np.testing.assert_allclose(out, logits, atol=1e-5, rtol=0)


def test_torch_positions_and_weights_map_name_the_layers(torch_net) -> None:
    path, x, logits = torch_net
    # default names (conv2d_0 ...) reached through weights_map regexes with groups
    layers = [{k: v for k, v in layer.items() if k != "name"} for layer in LAYERS]
    mapping = {r"conv(\d)\.(.*)": r"\1.\2", r"fc1\.(.*)": r"dense_5.\1", r"fc2\.(.*)": r"7.\1"}
    renamed = {r"conv1\.(.*)": r"0.\1", r"conv2\.(.*)": r"1.\1", **mapping}
    del renamed[r"conv(\d)\.(.*)"]
    spec = _spec({"weights": str(path), "weights_map": renamed}, layers)
    out = ct.build(spec, backend="torch").predict_step((x, None))
    np.testing.assert_allclose(np.asarray(out), logits, atol=1e-5, rtol=0)


def test_a_file_that_does_not_fit_lists_every_mismatch(torch_net, tmp_path) -> None:
    path, _, _ = torch_net
    layers = [dict(layer) for layer in LAYERS]
    layers[5] = {**layers[5], "units": 32}  # fc1 wider: fc1 and fc2 shapes differ
    layers[7] = {**layers[7], "name": "head"}  # fc2 renamed: head missing, fc2 unexpected
    with pytest.raises(SpecError) as info:
        ct.build(_spec({"weights": str(path)}, layers), backend="torch")
    text = str(info.value)
    assert len(info.value.issues) == 1 and info.value.issues[0].path == "model.weights"
    assert "missing (2): head/kernel, head/bias" in text
    assert "unexpected (2): fc2.bias, fc2.weight" in text
    assert "wrong shape (2): fc1/kernel (file (128, 16), model (128, 32)), fc1/bias" in text


def test_pickles_are_refused_with_the_conversion_line(tmp_path) -> None:
    path = tmp_path / "net.pt"
    torch.save(Net().state_dict(), path)
    legacy = tmp_path / "legacy.bin"
    torch.save(Net().state_dict(), legacy, _use_new_zipfile_serialization=False)
    renamed = tmp_path / "renamed.safetensors"  # a torch.save zip under another name
    torch.save(Net().state_dict(), renamed)
    for target in (path, legacy, renamed):
        with pytest.raises(SpecError, match=r"pickle.*never unpickles.*save_file") as info:
            ct.build(_spec({"weights": str(target)}), backend="torch")
        assert info.value.issues[0].path == "model.weights"


def test_npz_round_trip_and_init_from_a_checkpoint(tmp_path) -> None:
    spec = _spec({})
    values = {k: v + 1.0 for k, v in init_params(spec.model, 7).items()}
    np.savez(tmp_path / "w.npz", **values)
    state = ct.build(_spec({"weights": str(tmp_path / "w.npz")}), backend="jax").get_state()
    for name, value in values.items():
        np.testing.assert_array_equal(state.params[name], value)
    # train one run, start a different spec (new head) from its checkpoint
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 12, 12, 1)).astype(np.float32), rng.integers(0, 10, 16)
    first = ct.fit(
        {
            **spec.to_dict(),
            "data": {"batch_size": 8},
            "trainer": {"max_epochs": 1, "progress": False, "loggers": []},
        },
        backend="torch",
        data=(x, y),
        run_dir=tmp_path / "runs",
    )
    # a checkpoint of a run that started from given weights is read without the file
    given = {
        **first.spec.to_dict(),
        "model": {**spec.to_dict()["model"], "weights": str(tmp_path / "w.npz")},
    }
    from_file = ct.fit(given, backend="torch", data=(x, y), run_dir=tmp_path / "given")
    (tmp_path / "w.npz").unlink()
    out = ct.predict(given, from_file.run_dir, x[:2], backend="torch")
    assert np.asarray(out).shape == (2, 10)
    layers = [dict(layer) for layer in LAYERS]
    layers[7] = {**layers[7], "units": 3}
    second = _spec({"init_from": str(first.run_dir)}, layers)
    started = ct.build(second, backend="torch").get_state().params
    fresh = init_params(second.model, second.seed)
    for name, value in first.state.params.items():
        if name.startswith("fc2/"):
            np.testing.assert_array_equal(started[name], fresh[name])
        else:
            np.testing.assert_array_equal(started[name], value)


def test_bad_weights_options_are_spec_errors() -> None:
    with pytest.raises(SpecError, match="not both"):
        _spec({"weights": "a.safetensors", "init_from": "b"})
    with pytest.raises(SpecError, match="not a regular expression"):
        _spec({"weights": "a.safetensors", "weights_map": {"(": "x"}})
    with pytest.raises(SpecError, match=r"model.weights: .*no such file"):
        ct.build(_spec({"weights": "/nonexistent/w.safetensors"}), backend="torch")


def test_a_keras_file_loads_by_layer_name(tmp_path) -> None:
    keras = pytest.importorskip("keras")
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(3, 3, name="conv", activation="relu"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(4, name="head"),
        ]
    )
    bn = model.get_layer("bn")
    rng = np.random.default_rng(1)
    bn.moving_mean.assign(rng.normal(size=3).astype(np.float32))
    bn.moving_variance.assign(rng.uniform(0.5, 2.0, size=3).astype(np.float32))
    path = tmp_path / "m.keras"
    model.save(path)
    x = rng.normal(size=(4, 6, 6, 2)).astype(np.float32)
    expected = np.asarray(model.predict(x, verbose=0))
    spec = ct.load_spec(
        {
            "model": {
                "input_shape": [6, 6, 2],
                "weights": str(path),
                "layers": [
                    {
                        "type": "Conv2D",
                        "name": "conv",
                        "filters": 3,
                        "kernel_size": 3,
                        "activation": "relu",
                    },
                    {"type": "BatchNorm", "name": "bn"},
                    {"type": "Flatten"},
                    {"type": "Dense", "name": "head", "units": 4},
                ],
            },
            "trainer": {"progress": False},
        }
    )
    out = np.asarray(ct.build(spec, backend="torch").predict_step((x, None)))
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=0)


def test_bfloat16_and_half_tensors_are_read_as_float32(tmp_path) -> None:
    spec = _spec({}, [{"type": "Flatten"}, {"type": "Dense", "units": 3}])
    values = init_params(spec.model, 0)
    tensors = {
        "dense_1/kernel": torch.from_numpy(values["dense_1/kernel"]).bfloat16(),
        "dense_1/bias": torch.from_numpy(values["dense_1/bias"] + 0.5).half(),
    }
    safetensors_torch.save_file(tensors, str(tmp_path / "w.safetensors"))
    given = _spec({"weights": str(tmp_path / "w.safetensors")}, spec.to_dict()["model"]["layers"])
    params = ct.build(given, backend="torch").get_state().params
    np.testing.assert_array_equal(
        params["dense_1/kernel"], tensors["dense_1/kernel"].float().numpy()
    )
    np.testing.assert_array_equal(params["dense_1/bias"], tensors["dense_1/bias"].float().numpy())
