"""Hugging Face checkpoints (crosstrain.checkpoint.pretrained): a random GPT-2 and a random Llama built
with transformers' own classes and `save_pretrained` into a temporary directory (nothing is
downloaded) become crosstrain specs whose logits are transformers' on every backend, and
whose AdamW steps give the losses of a plain torch loop on the transformers model.

In this process: torch, jax and `keras` (the engine Keras was imported with, tensorflow by
default); keras:jax and keras:torch each in a fresh interpreter (Keras fixes its engine at
first import), both models per process.
"""

from __future__ import annotations

import json
import subprocess
import sys

import crosstrain as ct
import numpy as np
import pytest
from conftest import ROOT, run_python
from crosstrain.errors import SpecError
from crosstrain.train.callbacks import Callback

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB, SEQ = 64, 8
NO_DROPOUT = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}


def gpt2(tied: bool = True):
    config = transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=4, vocab_size=VOCAB, n_positions=32,
        tie_word_embeddings=tied, bos_token_id=0, eos_token_id=0, **NO_DROPOUT,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config)


def llama():
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
        rope_theta=500.0, rms_norm_eps=1e-5, bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config)


MODELS = {"gpt2": gpt2, "llama": llama}


def saved(tmp_path_factory, kind: str, **options):
    torch.manual_seed(0)
    model = MODELS[kind](**options).eval()
    directory = tmp_path_factory.mktemp(kind)
    model.save_pretrained(directory)
    return model, directory


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """`{kind: (transformers model, directory, spec)}` for the two tiny models."""
    out = {}
    for kind in MODELS:
        model, directory = saved(tmp_path_factory, kind)
        out[kind] = (model, directory, ct.from_pretrained(directory, sequence_length=SEQ))
    return out


def tokens(n: int = 3) -> np.ndarray:
    return np.random.default_rng(0).integers(0, VOCAB, (n, SEQ))


def deviation(out: np.ndarray, ref: np.ndarray) -> float:
    """max |out - ref| / max |ref|: the relative deviation of the logits."""
    return float(np.abs(out - ref).max() / np.abs(ref).max())


def reference_logits(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).logits.numpy()


def test_the_spec_is_made_of_crosstrain_layers(models, tmp_path_factory) -> None:
    gpt, llm = models["gpt2"][2].model, models["llama"][2].model
    # GPT-2 ties its head to wte: a graph of the chain's names, the head's kernel wte's table
    layers = [node.layer for node in gpt.nodes]
    assert [layer.type for layer in layers][:3] == ["Embedding", "Residual", "Residual"]
    assert (gpt.nodes[-1].name, gpt.nodes[-1].tie) == ("lm_head", "wte")
    attention = layers[2].layers[1]
    assert (attention.causal, attention.use_bias, attention.rope_theta) == (True, True, None)
    assert layers[3].layers[2].approximate  # gelu_new
    assert layers[2].layers[0].epsilon == 1e-5  # layer_norm_epsilon
    attention = llm.layers[1].layers[1]
    assert (attention.num_heads, attention.kv_heads, attention.rope_theta) == (4, 2, 500.0)
    assert not attention.use_bias and llm.layers[2].layers[1].type == "GatedMLP"
    assert llm.layers[1].layers[0].epsilon == 1e-5  # rms_norm_eps
    assert llm.layers[-1].name == "lm_head"  # untied: a chain, the head with its own kernel
    assert gpt.weights_layout == "crosstrain" and gpt.weights.endswith("crosstrain.safetensors")
    assert gpt.input_shape == (SEQ,) and gpt.resolved_input_dtype == "int64"
    _, directory = saved(tmp_path_factory, "gpt2", tied=False)
    untied = ct.from_pretrained(directory).model
    assert untied.nodes is None and untied.layers[-1].name == "lm_head"
    assert untied.input_shape == (32,)  # n_positions


@pytest.mark.parametrize("backend", ["torch", "jax", "keras"])
@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_logits_are_transformers_logits(models, kind: str, backend: str) -> None:
    model, _, spec = models[kind]
    x = tokens()
    out = ct.predict(spec, None, x, backend=backend)
    ref = reference_logits(model, x)
    assert out.shape == (3, SEQ, VOCAB)
    assert deviation(out, ref) < 1e-4, deviation(out, ref)


ENGINES = r"""
import json, sys
import numpy as np
import crosstrain as ct
sys.path.insert(0, "tests")
import test_pretrained as t

backend, cases = sys.argv[1], json.loads(sys.argv[2])
out = {}
for kind, (directory, reference) in cases.items():
    spec = ct.from_pretrained(directory, sequence_length=t.SEQ)
    with np.load(reference) as saved:
        logits = ct.predict(spec, None, saved["x"], backend=backend)
        out[kind] = t.deviation(logits, saved["logits"])
        if "losses" in saved:
            ours = t.crosstrain_losses(spec, saved["fx"], saved["fy"], backend)
            out[kind + "_loss"] = float(np.abs(np.array(ours) - saved["losses"]).max())
            print("LOSSES", kind, ours, saved["losses"].tolist())
print("RESULT", json.dumps(out))
"""


@pytest.mark.parametrize("engine", ["jax", "torch"])
def test_keras_engines_in_a_fresh_interpreter(models, tmp_path_factory, engine: str) -> None:
    """keras:jax and keras:torch, each in its own interpreter: both models' logits and five
    AdamW steps (transformers' logits and the torch loop's losses are computed here and
    passed in a file)."""
    tmp_path, cases = tmp_path_factory.mktemp("engines"), {}
    for kind, (model, directory, _) in models.items():
        x = tokens()
        arrays = {"x": x, "logits": reference_logits(model, x)}
        fresh, _ = saved(tmp_path_factory, kind)  # the same weights, trained here
        arrays["fx"], arrays["fy"] = finetune_batches()
        arrays["losses"] = np.array(torch_losses(fresh, arrays["fx"], arrays["fy"]))
        np.savez(tmp_path / f"{kind}.npz", **arrays)
        cases[kind] = (str(directory), str(tmp_path / f"{kind}.npz"))
    env = {
        "OMP_NUM_THREADS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "KERAS_BACKEND": engine,
        "CROSSTRAIN_KERAS_ENGINE": engine,
    }
    argv = ["x", f"keras:{engine}", json.dumps(cases)]
    code = f"import sys; sys.argv = {argv!r}\n" + ENGINES
    done = run_python(code, cwd=ROOT, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(row for row in done.stdout.splitlines() if row.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    assert set(result) == {"gpt2", "llama", "gpt2_loss", "llama_loss"}
    assert result["gpt2"] < 1e-4 and result["llama"] < 1e-4, result
    assert result["gpt2_loss"] < 1e-3 and result["llama_loss"] < 1e-3, result


class StepLosses(Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_batch_end(self, trainer, stage, logs) -> None:
        if stage == "train" and logs and "train_loss" in logs:
            self.losses.append(logs["train_loss"])


ADAMW = {"lr": 1e-3, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.1}
STEPS, BATCH = 5, 2


def finetune_batches() -> tuple[np.ndarray, np.ndarray]:
    """Inputs and next-token labels: one batch five times, so the loss falls step by step."""
    batch = np.random.default_rng(1).integers(0, VOCAB, (BATCH, SEQ + 1))
    stream = np.tile(batch, (STEPS, 1))
    return stream[:, :-1], stream[:, 1:]


def torch_losses(model, x: np.ndarray, y: np.ndarray) -> list[float]:
    """Five AdamW steps of a plain torch loop on the transformers model."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), **ADAMW)
    losses = []
    for step in range(STEPS):
        xb = torch.from_numpy(x[step * BATCH : (step + 1) * BATCH])
        yb = torch.from_numpy(y[step * BATCH : (step + 1) * BATCH])
        logits = model(xb).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), yb.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def crosstrain_losses(spec, x: np.ndarray, y: np.ndarray, backend: str) -> list[float]:
    spec = spec.override({
        "optimizer": {"name": "adamw", "lr": ADAMW["lr"], "beta_1": ADAMW["betas"][0],
                      "beta_2": ADAMW["betas"][1], "epsilon": ADAMW["eps"],
                      "weight_decay": ADAMW["weight_decay"]},
        "data.batch_size": BATCH, "data.shuffle": False, "trainer.max_epochs": 1,
        "trainer.log_every_n_steps": 1, "trainer.progress": False, "trainer.checkpoint": None,
        "trainer.loggers": [],
    })  # fmt: skip
    recorder = StepLosses()
    ct.fit(spec, backend=backend, data=(x, y), callbacks=[recorder], run_dir=False)
    return recorder.losses


@pytest.mark.parametrize(
    ("kind", "backend"),
    [(kind, backend) for kind in MODELS for backend in ("torch", "jax", "keras")],
)  # keras:jax and keras:torch: test_keras_engines_in_a_fresh_interpreter
def test_five_adamw_steps_give_the_losses_of_a_torch_loop(
    tmp_path_factory, kind: str, backend: str
) -> None:
    model, directory = saved(tmp_path_factory, kind)  # GPT-2 tied: one matrix trained
    spec = ct.from_pretrained(directory, sequence_length=SEQ)
    x, y = finetune_batches()
    ours = crosstrain_losses(spec, x, y, backend)
    theirs = torch_losses(model, x, y)
    assert len(ours) == STEPS
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-3)
    assert all(b < a for a, b in zip(theirs, theirs[1:], strict=False))  # they learn


def test_other_architectures_are_refused_by_name(tmp_path) -> None:
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32,
    )  # fmt: skip
    transformers.BertForMaskedLM(config).save_pretrained(tmp_path)
    with pytest.raises(SpecError, match=r"model_type 'bert' \(architectures: BertForMaskedLM\)"):
        ct.from_pretrained(tmp_path)
    with pytest.raises(SpecError, match="no config.json"):
        ct.from_pretrained(tmp_path / "missing")


def test_bfloat16_weights_are_read_as_float32(tmp_path) -> None:
    """transformers' usual dtype: the logits are those of the bf16-rounded model in float32."""
    torch.manual_seed(0)
    model = llama().eval().to(torch.bfloat16)
    model.save_pretrained(tmp_path)
    model = model.float()
    spec = ct.from_pretrained(tmp_path, sequence_length=SEQ)
    x = tokens()
    out = ct.predict(spec, None, x, backend="torch")
    assert deviation(out, reference_logits(model, x)) < 1e-4


def test_the_import_command_writes_a_spec_and_its_weights(models, tmp_path) -> None:
    model, directory, _ = models["gpt2"]
    output = tmp_path / "specs" / "gpt2.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "crosstrain.cli", "import", "hf", str(directory), "--output",
         str(output), "--sequence-length", str(SEQ)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    spec = ct.load_spec(output)  # the graph and its tie read back from YAML
    assert spec.model.nodes[-1].tie == "wte"
    assert spec.model.weights == str((tmp_path / "specs" / "gpt2.safetensors").resolve())
    x = tokens()
    out = ct.predict(spec, None, x, backend="torch")
    assert deviation(out, reference_logits(model, x)) < 1e-4
