"""Compiled train/eval/predict steps, one flavour per Keras engine, the way Keras's own trainers
compile them.

- jax: `jax.jit` of a pure step over `(trainable, non_trainable, optimizer)` value lists, using
  `model.stateless_call` and `optimizer.stateless_apply`, with the state donated (as Keras's
  JAXTrainer). The Keras variables are written back only when someone reads them (`sync_out`).
  `train_steps` is one `lax.scan` over K batches.
- tensorflow: `tf.function` steps on the model's variables (XLA when `trainer.compile` is set or
  a GPU is present, as Keras's `jit_compile="auto"`); `train_steps` is an in-graph loop.
- torch: eager steps with `torch.autograd.grad` (as Keras's TorchTrainer), in `steps_torch.py`.

Every step returns one float32 vector `[rows, loss, *metrics]` that stays on the device until
`to_host` fetches a list of them at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from keras import ops

Objective = Callable[[Any, Any], tuple[Any, Any]]
"""`(outputs, targets) -> (loss, report)`, in `keras.ops`/array-API terms."""


def with_grad_norm(report: Any, grads: list[Any]) -> Any:
    """`report` with the global L2 norm of `grads` appended (the `grad_norm` train metric)."""
    squares = [ops.sum(ops.square(ops.cast(g, "float32"))) for g in grads if g is not None]
    norm = ops.sqrt(ops.sum(ops.stack(squares)))
    return ops.concatenate([report, ops.reshape(ops.cast(norm, "float32"), (1,))])


class Steps:
    """The compiled steps of one engine: `train`, `train_many`, `accumulate`, `evaluate`,
    `predict` on numpy batches, `to_host` for their reports, and the state hand-over below."""

    grad_norm = False
    """Train steps append the gradient norm to their report (set by `make_steps`)."""
    stateful = False
    """Evaluation keeps the non-trainable state it computes (`trainer.stateful`: the carried
    recurrent states advance); set by the program."""

    def __init__(
        self, model: Any, optimizer: Any, objective: Objective, compile_hint: bool = False
    ):
        self.model, self.optimizer, self.objective = model, optimizer, objective
        self.compile_hint = compile_hint

    def sync_out(self) -> None:
        """Writes the compiled state into the Keras variables (no-op where they are the state)."""

    def host_values(self) -> dict[int, np.ndarray]:
        """Numpy copies of the compiled state by `id` of its Keras variable (empty where the
        variables are the state: read them)."""
        return {}

    def sync_in(self) -> None:
        """Reloads the compiled state from the Keras variables after they were assigned."""


class JaxSteps(Steps):
    """Jitted stateless steps for the jax engine (see the module docstring)."""

    def __init__(
        self,
        model: Any,
        optimizer: Any,
        objective: Objective,
        distribution: Any = None,
        compile_hint: bool = False,
    ):
        super().__init__(model, optimizer, objective, compile_hint)
        import jax

        self.jax, self.distribution = jax, distribution
        self._multi_process = jax.process_count() > 1
        self.state: tuple[list[Any], list[Any], list[Any]] = ([], [], [])
        self._variables = (
            model.trainable_variables,
            model.non_trainable_variables,
            optimizer.variables,
        )
        self.sync_in()
        options: dict[str, Any] = {}
        if distribution is not None:
            shardings = jax.tree.map(lambda a: a.sharding, self.state)
            options = {"out_shardings": (shardings, None)}
        self._train = jax.jit(self._train_body, donate_argnums=0, **options)
        self._scan = jax.jit(self._scan_body, donate_argnums=0, **options)
        self._accumulate = jax.jit(self._accumulate_body, donate_argnums=0, **options)
        self._eval = jax.jit(self._eval_body)
        self._predict = jax.jit(self._predict_body)

    def sync_in(self) -> None:
        """Takes the variables' arrays as the state; the first donated step invalidates the
        variables' own buffers, so they are only read after `sync_out`."""
        self.state = tuple([v.value for v in group] for group in self._variables)

    def sync_out(self) -> None:
        """Assigns host copies of the state (no device kernels to compile, and the variables
        then own buffers that no later step donates)."""
        host = self.host_values()
        for group in self._variables:
            for variable in group:
                variable.assign(host[id(variable)])

    def host_values(self) -> dict[int, np.ndarray]:
        """This process's copy of every (replicated) state array, by `id` of its variable; no
        collective, so one process of a multi-process run may read alone."""
        found = {}
        for group, values in zip(self._variables, self.state, strict=True):
            for variable, value in zip(group, values, strict=True):
                found[id(variable)] = np.array(value.addressable_data(0), copy=True)
        return found

    def _train_body(self, state: Any, x: Any, y: Any) -> tuple[Any, Any]:
        trainable, non_trainable, opt_vars = state
        grads, report, non_trainable = self._grads(state, non_trainable, x, y)
        if self.grad_norm:
            report = with_grad_norm(report, grads)
        trainable, opt_vars = self.optimizer.stateless_apply(opt_vars, grads, trainable)
        return (trainable, non_trainable, opt_vars), report

    def _scan_body(self, state: Any, xs: Any, ys: Any) -> tuple[Any, Any]:
        return self.jax.lax.scan(lambda s, batch: self._train_body(s, *batch), state, (xs, ys))

    def _grads(self, state: Any, non_trainable: Any, x: Any, y: Any) -> tuple[Any, Any, Any]:
        """Gradients of the (scaled) loss of one batch, its report and the new statistics."""
        from keras import StatelessScope

        trainable, _, opt_vars = state

        def objective(values: list[Any]) -> tuple[Any, tuple[Any, Any]]:
            out, new_non_trainable = self.model.stateless_call(
                values, non_trainable, x, training=True
            )
            loss, report = self.objective(out, y)
            with StatelessScope(
                state_mapping=list(zip(self.optimizer.variables, opt_vars, strict=True))
            ):
                scaled = self.optimizer.scale_loss(loss)
            return scaled, (report, new_non_trainable)

        grads, (report, non_trainable) = self.jax.grad(objective, has_aux=True)(trainable)
        return grads, report, non_trainable

    def _accumulate_body(self, state: Any, xs: Any, ys: Any, tail: Any) -> tuple[Any, Any]:
        """One update from stacked micro-batches (a `lax.scan`) and an optional shorter one:
        gradients summed times their rows, divided by all rows (`accumulate_step`)."""
        jnp = self.jax.numpy
        trainable, non_trainable, opt_vars = state

        def micro(carry: Any, batch: Any) -> tuple[Any, Any]:
            total, non_trainable = carry
            grads, report, non_trainable = self._grads(state, non_trainable, *batch)
            total = [t + g * batch[0].shape[0] for t, g in zip(total, grads, strict=True)]
            return (total, non_trainable), report

        zeros = [jnp.zeros_like(v) for v in trainable]
        carry, reports = self.jax.lax.scan(micro, (zeros, non_trainable), (xs, ys))
        count = xs.shape[0] * xs.shape[1]
        if tail is not None:
            carry, report = micro(carry, tail)
            reports = jnp.concatenate([reports, report[None]])
            count += tail[0].shape[0]
        total, non_trainable = carry
        grads = [t / count for t in total]
        if self.grad_norm:
            norm = with_grad_norm(reports[0], grads)[-1]
            reports = jnp.concatenate([reports, jnp.full((reports.shape[0], 1), norm)], axis=1)
        trainable, opt_vars = self.optimizer.stateless_apply(opt_vars, grads, trainable)
        return (trainable, non_trainable, opt_vars), reports

    def accumulate(self, xs: np.ndarray, ys: np.ndarray, tail: Any) -> Any:
        if tail is not None:
            tail = (self._shard(tail[0]), self._shard(tail[1]))
        self.state, reports = self._accumulate(
            self.state, self._shard(xs, True), self._shard(ys, True), tail
        )
        return reports

    def _eval_body(self, trainable: Any, non_trainable: Any, x: Any, y: Any) -> Any:
        out, new_non_trainable = self.model.stateless_call(
            trainable, non_trainable, x, training=False
        )
        report = self.objective(out, y)[1]
        return (report, new_non_trainable) if self.stateful else report

    def _predict_body(self, trainable: Any, non_trainable: Any, x: Any) -> Any:
        out, _ = self.model.stateless_call(trainable, non_trainable, x, training=False)
        return ops.cast(out, "float32")

    def _shard(self, array: np.ndarray, stacked: bool = False) -> Any:
        """Splits a batch over the data-parallel devices (rows that do not divide stay whole)."""
        if self.distribution is None:
            return array
        rows = array.shape[1 if stacked else 0]
        if rows % self.distribution.num_model_replicas:
            return array
        layout = self.distribution.get_data_layout(array.shape[1:] if stacked else array.shape)
        sharding = layout.backend_layout
        if stacked:
            from jax.sharding import NamedSharding, PartitionSpec

            sharding = NamedSharding(sharding.mesh, PartitionSpec(None, *sharding.spec))
        if self._multi_process:  # every process holds the global batch: each gives its rows
            return self.jax.make_array_from_callback(array.shape, sharding, lambda i: array[i])
        return self.jax.device_put(array, sharding)

    def train(self, x: np.ndarray, y: np.ndarray) -> Any:
        self.state, report = self._train(self.state, self._shard(x), self._shard(y))
        return report

    def train_many(self, xs: np.ndarray, ys: np.ndarray) -> Any:
        self.state, reports = self._scan(self.state, self._shard(xs, True), self._shard(ys, True))
        return reports

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> Any:
        report = self._eval(self.state[0], self.state[1], self._shard(x), self._shard(y))
        if self.stateful:
            report, non_trainable = report
            self.state = (self.state[0], non_trainable, self.state[2])
        return report

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._predict(self.state[0], self.state[1], self._shard(x)))

    def to_host(self, outputs: list[Any]) -> np.ndarray:
        local = [o.addressable_data(0) if not o.is_fully_addressable else o for o in outputs]
        return np.concatenate(
            [np.asarray(o).reshape(-1, np.shape(o)[-1]) for o in self.jax.device_get(local)]
        )


class TensorflowSteps(Steps):
    """`tf.function` steps for the tensorflow engine (see the module docstring)."""

    def __init__(
        self, model: Any, optimizer: Any, objective: Objective, compile_hint: bool = False
    ):
        super().__init__(model, optimizer, objective, compile_hint)
        import tensorflow as tf

        self.tf = tf
        jit = compile_hint or bool(tf.config.list_logical_devices("GPU"))
        options = {"jit_compile": jit, "reduce_retracing": True, "autograph": False}
        self._train = tf.function(self._train_body, **options)
        self._scan = tf.function(self._scan_body, **options)
        # the micro-batch count is unrolled, so shapes stay exact (no relaxed retracing)
        self._accumulate = tf.function(
            self._accumulate_body, **{**options, "reduce_retracing": False}
        )
        self._eval = tf.function(self._eval_body, **options)
        self._predict = tf.function(
            lambda x: ops.cast(self.model(x, training=False), "float32"), **options
        )

    def _targets(self, y: Any) -> Any:
        return self.tf.cast(y, "int64") if y.dtype.is_integer else y

    def _train_body(self, x: Any, y: Any) -> Any:
        variables = self.model.trainable_variables
        with self.tf.GradientTape() as tape:
            out = self.model(x, training=True)
            loss, report = self.objective(out, self._targets(y))
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply(grads, variables)
        return with_grad_norm(report, grads) if self.grad_norm else report

    def _scan_body(self, xs: Any, ys: Any) -> Any:
        tf = self.tf
        count = tf.shape(xs)[0]

        def body(i: Any, reports: Any) -> tuple[Any, Any]:
            return i + 1, reports.write(i, self._train_body(xs[i], ys[i]))

        reports = tf.TensorArray(tf.float32, size=count)
        _, reports = tf.while_loop(lambda i, _: i < count, body, (tf.constant(0), reports))
        return reports.stack()

    def _eval_body(self, x: Any, y: Any) -> Any:
        return self.objective(self.model(x, training=False), self._targets(y))[1]

    def _accumulate_body(self, xs: Any, ys: Any, tail: Any) -> Any:
        """One update from stacked micro-batches and an optional shorter one, in one graph:
        each gradient times its rows, summed (a loop unrolled over the static count), then
        divided by all rows before `optimizer.apply`."""
        tf = self.tf
        variables = self.model.trainable_variables
        batches = [(xs[i], ys[i]) for i in range(xs.shape[0])]
        if tail is not None:
            batches.append(tail)
        total: list[Any] = [tf.zeros_like(v) for v in variables]
        reports, count = [], 0
        for x, y in batches:
            with tf.GradientTape() as tape:
                out = self.model(x, training=True)
                loss, report = self.objective(out, self._targets(y))
                scaled = self.optimizer.scale_loss(loss)
            grads = tape.gradient(scaled, variables)
            rows = int(x.shape[0])
            total = [t + tf.convert_to_tensor(g) * rows for t, g in zip(total, grads, strict=True)]
            reports.append(report)
            count += rows
        grads = [t / count for t in total]
        self.optimizer.apply(grads, variables)
        reports = tf.stack(reports)
        if self.grad_norm:
            norm = with_grad_norm(reports[0], grads)[-1]
            reports = tf.concat([reports, tf.fill((tf.shape(reports)[0], 1), norm)], axis=1)
        return reports

    def accumulate(self, xs: np.ndarray, ys: np.ndarray, tail: Any) -> Any:
        return self._accumulate(xs, ys, tail)

    def train(self, x: np.ndarray, y: np.ndarray) -> Any:
        return self._train(x, y)

    def train_many(self, xs: np.ndarray, ys: np.ndarray) -> Any:
        return self._scan(xs, ys)

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> Any:
        return self._eval(x, y)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self._predict(x).numpy()

    def to_host(self, outputs: list[Any]) -> np.ndarray:
        width = int(outputs[0].shape[-1])
        return self.tf.concat([self.tf.reshape(o, (-1, width)) for o in outputs], 0).numpy()


def make_steps(
    engine: str,
    model: Any,
    optimizer: Any,
    objective: Objective,
    distribution: Any = None,
    compile_hint: bool = False,
    grad_norm: bool = False,
) -> Any:
    """The step flavour of `engine` for a built model and optimizer; with `grad_norm` the train
    reports end with the gradient norm (steps trace lazily, so setting it here is in time)."""
    if engine == "jax":
        steps: Steps = JaxSteps(model, optimizer, objective, distribution, compile_hint)
    elif engine == "tensorflow":
        steps = TensorflowSteps(model, optimizer, objective, compile_hint)
    else:
        from .steps_torch import TorchSteps

        steps = TorchSteps(model, optimizer, objective, compile_hint)
    steps.grad_norm = grad_norm
    return steps
