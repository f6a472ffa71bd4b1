"""`crosstrain.Logger`: a plugin logger with options from the spec (`trainer.loggers` items
`{name, <options>}`), validated with the spec and named like any field; real distributions with
a `crosstrain` entry point, real fits through the command line."""

from __future__ import annotations

import json

import pytest
import yaml
from bad_inputs import Refusal, assert_refused, run_cli, snapshot
from conftest import run_python, tiny_spec
from example_plugins import make_distribution

JSONL_PLUGIN = '''
"""A logger with options: `{name: jsonl, every_n_epochs: 2, filename: m.jsonl}`."""
import json

import crosstrain as ct
from crosstrain import hookimpl
from pydantic import BaseModel, ConfigDict, PositiveInt


class JsonlOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    every_n_epochs: PositiveInt = 1
    filename: str = "metrics.jsonl"


class JsonlLogger(ct.Logger):
    options_model = JsonlOptions

    def on_epoch_end(self, trainer, stage, epoch, metrics):
        if stage == "train" and epoch % self.options.every_n_epochs == 0:
            with (self.run_dir / self.options.filename).open("a") as file:
                file.write(json.dumps({"epoch": epoch, **metrics}) + "\\n")


@hookimpl
def crosstrain_add_loggers(registry):
    registry.loggers.add("jsonl", JsonlLogger)
'''


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A directory with the `ct_jsonl_logger` distribution installed, for PYTHONPATH."""
    found = tmp_path_factory.mktemp("site")
    make_distribution(found, "ct_jsonl_logger", JSONL_PLUGIN)
    return found


def write_spec(cwd, loggers, max_epochs=3):
    spec = tiny_spec()
    spec["trainer"] = {**spec["trainer"], "loggers": loggers, "max_epochs": max_epochs}
    (cwd / "spec.yaml").write_text(yaml.safe_dump(spec))


def test_logger_options_reach_the_logger(site, tmp_path):
    write_spec(tmp_path, ["csv", {"name": "jsonl", "every_n_epochs": 2, "filename": "m.jsonl"}])
    done = run_cli("fit spec.yaml --backend torch", tmp_path, env={"PYTHONPATH": str(site)})
    assert done.returncode == 0, done.stderr
    (run_dir,) = (tmp_path / "runs" / "tiny").iterdir()
    rows = [json.loads(line) for line in (run_dir / "m.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [0, 2]
    assert "train_loss" in rows[0] and (run_dir / "metrics.csv").is_file()
    recorded = yaml.safe_load((run_dir / "spec.yaml").read_text())["trainer"]["loggers"]
    assert recorded == ["csv", {"name": "jsonl", "every_n_epochs": 2, "filename": "m.jsonl"}]


BAD_OPTIONS = [
    pytest.param(
        [{"name": "jsonl", "every_n_epochs": 0}],
        "",
        ("trainer.loggers[0].every_n_epochs: expected a positive integer, got 0",),
        id="bad-value",
    ),
    pytest.param(
        ["csv", {"name": "jsonl", "evry_n_epochs": 2}],
        "",
        ("trainer.loggers[1].evry_n_epochs",),
        id="unknown-option",
    ),
    pytest.param(
        ["csv", "jsonl"],
        "--set trainer.loggers[1].every_n_epochs=-1",
        ("trainer.loggers[1].every_n_epochs",),
        id="set-override",
    ),
    pytest.param(
        [{"name": "csv", "delimiter": ";"}],
        "",
        ("trainer.loggers[0].delimiter", "logger 'csv' takes no options"),
        id="options-to-a-plain-factory",
    ),
    pytest.param(
        [{"name": "tensorboard", "flush_secs": 5}],
        "",
        ("trainer.loggers[0].flush_secs",),
        id="tracker-takes-none",
    ),
    pytest.param(
        [{"name": "jsonll"}],
        "",
        ("trainer.loggers[0]", "unknown logger 'jsonll'", "jsonl"),
        id="unknown-name",
    ),
    pytest.param(
        [{"every_n_epochs": 2}],
        "",
        ("trainer.loggers[0].name",),
        id="no-name",
    ),
]


@pytest.mark.parametrize(("loggers", "extra", "fragments"), BAD_OPTIONS)
def test_bad_logger_options_are_spec_errors(site, tmp_path, loggers, extra, fragments):
    write_spec(tmp_path, loggers)
    before = snapshot(tmp_path)
    done = run_cli(
        f"fit spec.yaml --backend torch {extra}", tmp_path, env={"PYTHONPATH": str(site)}
    )
    assert_refused(done, Refusal(2, fragments), before, tmp_path)
    assert not (tmp_path / "runs").exists()


def test_logger_is_public_and_lazy():
    done = run_python(
        "import sys, crosstrain\n"
        "print('crosstrain.train.loggers' in sys.modules, 'pydantic' in sys.modules)\n"
        "from crosstrain.train.loggers import Logger, NoOptions\n"
        "from crosstrain.plugins.logger_base import TrackerLogger\n"
        "assert crosstrain.Logger is Logger and issubclass(TrackerLogger, Logger)\n"
        "assert issubclass(Logger, crosstrain.Callback) and Logger.options_model is NoOptions\n"
        "print(Logger('runs/x', None).run_dir)"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["False False", "runs/x"]
