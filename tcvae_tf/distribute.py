"""Data-parallel training on tf.distribute, with the objective of the global batch.

The minibatch estimators of log q(z) are defined on the whole minibatch of M images, so
R replicas that each hold M / R images must not estimate it from their own slice (a
different estimator, with the wrong log(N * M)). Each replica r instead:

```none
rows       i = r * M/R .. (r + 1) * M/R - 1 of the global batch (its images, its noise)
all-gather loc, log_scale [M, D]           (gradients flow back: all-reduce, then slice)
share      log q(z_i), log prod_d q(z_id) of its rows against all M columns
           = the [M/R, M, D] share of the [M, M, D] work, global M and MSS indices
loss_r     = sum over its rows of the per-image loss / M
sum_r grad(loss_r) = grad(mean over the M images) = the one-device gradient
```

Keras sums the replicas' gradients, so the per-replica losses are the replicas' parts of
the global mean (not their own means); the reported terms are all-reduced to the global
means. BatchNorm normalises with the global batch's statistics (see
`tcvae_tf.architectures.BatchNormalization`). One step on R replicas therefore equals one
step on one device, up to the order of floating-point sums.

A strategy comes from `make_strategy`: `mirrored` (all local GPUs, or `cpu_replicas`
logical CPU devices), `multiworker` (`MultiWorkerMirroredStrategy` configured by
`TF_CONFIG`, TensorFlow's collective runtime), `auto` or `none`.

Example:

```python
from tcvae_tf import distribute

distribute.configure_cpu_replicas(2)          # before TensorFlow initialises its devices
strategy = distribute.make_strategy("mirrored")
with strategy.scope():
    model = BetaTCVAE(...)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
model.fit(distribute.distribute_batches(strategy, make_batches, 256), steps_per_epoch=100)
```

References: Chen, Li, Grosse, Duvenaud, "Isolating Sources of Disentanglement in VAEs",
NeurIPS 2018 (the estimators); TensorFlow's distributed training guide (the strategies).
"""

import dataclasses
import json
import os
import re

STRATEGIES = ("auto", "none", "mirrored", "multiworker")


# -- building a strategy --------------------------------------------------------------------


def configure_cpu_replicas(num_replicas):
    """Splits the host CPU into `num_replicas` logical devices (replicas without GPUs).

    Must run before TensorFlow initialises its devices (before the first op or device
    query); calling it again with the same number is harmless.

    Args:
      num_replicas: int >= 1.

    Raises:
      ValueError: num_replicas < 1, or TensorFlow's devices are already initialised with
        another split.
    """
    import tensorflow as tf

    if isinstance(num_replicas, bool) or not isinstance(num_replicas, int) or num_replicas < 1:
        raise ValueError(f"--cpu-replicas must be a positive int, got {num_replicas!r}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if len(current or [None]) == num_replicas:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(num_replicas)])
    except RuntimeError:
        raise ValueError(
            f"cannot split the CPU into {num_replicas} devices: TensorFlow has already "
            f"initialised its devices (configure the replicas before any TensorFlow op)"
        ) from None


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
    """The parsed TF_CONFIG of a multi-worker run: the workers and this process's task."""

    workers: tuple
    chief: tuple
    task_type: str
    task_index: int

    @property
    def num_workers(self):
        return len(self.workers) + len(self.chief)

    @property
    def is_chief(self):
        """The task that writes the run folder: the chief, else worker 0."""
        if self.chief:
            return self.task_type == "chief"
        return self.task_type == "worker" and self.task_index == 0


def parse_tf_config(text):
    """Parses and validates a TF_CONFIG for `MultiWorkerMirroredStrategy`.

    ```none
    {"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}
    ```

    Args:
      text: the JSON text of the TF_CONFIG environment variable (None or empty: unset).

    Returns:
      A ClusterSpec.

    Raises:
      ValueError: one line naming what is wrong.
    """
    if not text:
        raise ValueError('--strategy multiworker needs TF_CONFIG, e.g. {"cluster": {"worker": '
                         '["host1:12345", "host2:12345"]}, "task": {"type": "worker", '
                         '"index": 0}}')
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON: {error}") from None
    if not isinstance(config, dict):
        raise ValueError("TF_CONFIG must be a JSON object with 'cluster' and 'task'")
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict):
        raise ValueError("TF_CONFIG has no 'cluster' object")
    jobs = {}
    for job in ("worker", "chief"):
        addresses = cluster.get(job, [])
        if not isinstance(addresses, list) or not all(
                isinstance(a, str) and a.rpartition(":")[2].isdigit() for a in addresses):
            raise ValueError(f"TF_CONFIG cluster.{job} must be a list of 'host:port' strings")
        jobs[job] = tuple(addresses)
    unknown = sorted(set(cluster) - {"worker", "chief", "evaluator"})
    if unknown:
        raise ValueError(f"TF_CONFIG cluster has job {unknown[0]!r}; multiworker training "
                         f"takes 'worker' (and an optional single 'chief')")
    if not jobs["worker"] and not jobs["chief"]:
        raise ValueError("TF_CONFIG cluster.worker lists no workers")
    if len(jobs["chief"]) > 1:
        raise ValueError(f"TF_CONFIG cluster.chief lists {len(jobs['chief'])} tasks; at most 1")
    if not isinstance(task, dict):
        raise ValueError("TF_CONFIG has no 'task' object")
    task_type, task_index = task.get("type"), task.get("index", 0)
    if task_type not in ("worker", "chief"):
        raise ValueError(f"TF_CONFIG task.type must be 'worker' or 'chief', got {task_type!r}")
    if isinstance(task_index, bool) or not isinstance(task_index, int):
        raise ValueError(f"TF_CONFIG task.index must be an int, got {task_index!r}")
    if not 0 <= task_index < len(jobs[task_type]):
        raise ValueError(f"TF_CONFIG task.index {task_index} is out of range for the "
                         f"{len(jobs[task_type])} {task_type} task(s) of the cluster")
    return ClusterSpec(jobs["worker"], jobs["chief"], task_type, task_index)


def make_strategy(name="auto", cpu_replicas=None):
    """Builds the tf.distribute strategy of a run (None: no strategy, one device).

    - `none`: None.
    - `auto`: `MirroredStrategy` over the visible GPUs when there are two or more, else
      over `cpu_replicas` logical CPU devices when that is 2 or more, else None.
    - `mirrored`: `MirroredStrategy` over all visible GPUs, or without GPUs over
      `cpu_replicas` (default 1) logical CPU devices.
    - `multiworker`: `MultiWorkerMirroredStrategy` over the workers of `TF_CONFIG` (each
      uses its local GPUs, or its CPU as one replica).

    Call it before any other TensorFlow work (multi-worker collectives and the logical
    CPU split must be set up first).

    Args:
      name: one of `STRATEGIES`.
      cpu_replicas: None or an int >= 1, logical CPU devices for hosts without GPUs.

    Returns:
      A `tf.distribute.Strategy`, or None.

    Raises:
      ValueError: unknown name, bad `cpu_replicas` or TF_CONFIG (one line).
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    if cpu_replicas is not None:
        if isinstance(cpu_replicas, bool) or not isinstance(cpu_replicas, int) \
                or cpu_replicas < 1:
            raise ValueError(f"--cpu-replicas must be a positive int, got {cpu_replicas!r}")
        if name == "none" and cpu_replicas > 1:
            raise ValueError("--cpu-replicas needs a strategy (mirrored or auto), not none")
        if name == "multiworker" and cpu_replicas > 1:
            raise ValueError("--cpu-replicas applies to --strategy mirrored; a multiworker "
                             "worker without GPUs is one replica")
    if name == "none":
        return None
    if name == "multiworker":
        parse_tf_config(os.environ.get("TF_CONFIG"))
        import tensorflow as tf

        return tf.distribute.MultiWorkerMirroredStrategy()
    if cpu_replicas is not None and cpu_replicas > 1:
        configure_cpu_replicas(cpu_replicas)
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto" and len(gpus) < 2 and (cpu_replicas or 1) < 2:
        return None
    devices = [device.name for device in gpus] or [
        device.name for device in tf.config.list_logical_devices("CPU")]
    if not gpus and cpu_replicas is not None:
        devices = devices[:cpu_replicas]
    return tf.distribute.MirroredStrategy(devices)


def num_replicas(strategy):
    """Replicas of a strategy (1 for None)."""
    return 1 if strategy is None else int(strategy.num_replicas_in_sync)


def is_chief(strategy):
    """Whether this process writes the run folder (always, except on non-chief workers)."""
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    return parse_tf_config(os.environ.get("TF_CONFIG")).is_chief


def check_batch_size(batch_size, strategy):
    """Raises ValueError unless the global batch splits evenly over the replicas.

    Args:
      batch_size: M.
      strategy: a strategy, None (one replica) or a number of replicas.
    """
    replicas = strategy if isinstance(strategy, int) else num_replicas(strategy)
    if batch_size % replicas:
        raise ValueError(f"batch size {batch_size} does not split over {replicas} replicas; "
                         f"give a multiple of {replicas}")


def describe(strategy):
    """JSON-ready summary recorded in a run's config (replicas, workers, devices)."""
    if strategy is None:
        return {"strategy": "none", "replicas": 1, "workers": 1}
    import tensorflow as tf

    multiworker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    workers = (parse_tf_config(os.environ.get("TF_CONFIG")).num_workers if multiworker else 1)
    return {"strategy": "multiworker" if multiworker else "mirrored",
            "replicas": num_replicas(strategy), "workers": workers,
            "devices_per_worker": list(strategy.extended.worker_devices)}


def collective_errors():
    """The TensorFlow errors raised when a replica or worker is lost mid-step."""
    import tensorflow as tf

    return (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
            tf.errors.CancelledError, tf.errors.AbortedError, tf.errors.InternalError)


def collective_failure(error, run_dir):
    """One line for a step that failed because a worker went away."""
    from tcvae_tf import runs

    try:
        step = runs.checkpoint_step(run_dir) if runs.has_checkpoint(run_dir) else None
    except Exception:  # a damaged checkpoint must not hide the failure being reported
        step = None
    text = re.sub(r"\{\{.*?\}\}\s*", "", str(getattr(error, "message", "") or error))
    first_line = (text.strip().splitlines() or [""])[0]
    kept = (f"the run resumes from its checkpoint at step {step} with --resume"
            if step is not None else "no checkpoint was written yet")
    return (f"distributed training stopped, a worker is unreachable or failed "
            f"({type(error).__name__}: {first_line[:160]}); {kept}")


# -- the input pipeline -----------------------------------------------------------------------


def distribute_batches(strategy, make_batches, batch_size):
    """Splits a stream of global batches over the replicas, in the global order.

    Every worker builds the same stream of global batches [M, ...] (the one-device stream
    for the seed), keeps its own rows and gives each of its replicas M / R consecutive
    ones: replica r (global id) holds images r * M/R .. (r + 1) * M/R - 1 of each batch.

    Args:
      strategy: a `tf.distribute.Strategy`, or None (returns `make_batches()`).
      make_batches: () -> tf.data.Dataset of global batches [M, ...] with a static M.
      batch_size: M, divisible by the number of replicas.

    Returns:
      A `tf.distribute.DistributedDataset` (or the dataset itself without a strategy).
    """
    if strategy is None or num_replicas(strategy) == 1:
        return make_batches()
    check_batch_size(batch_size, strategy)
    import tensorflow as tf

    per_replica = batch_size // num_replicas(strategy)

    def worker_batches(context):
        local = context.num_replicas_in_sync // context.num_input_pipelines
        first = context.input_pipeline_id * local * per_replica

        def split(batch):  # [M, ...] -> [local replicas, M / R, ...]
            rows = batch[first:first + local * per_replica]
            return tf.reshape(rows, tf.concat([[local, per_replica], tf.shape(batch)[1:]], 0))

        # Consecutive elements go to the worker's replicas in turn.
        return make_batches().map(split).unbatch()

    options = tf.distribute.InputOptions(experimental_fetch_to_device=True)
    return strategy.distribute_datasets_from_function(worker_batches, options)


# -- inside a replica: its place in the global batch -----------------------------------------


class ReplicaBatch:
    """A replica's rows of the global batch, and the collectives that join the replicas.

    Built inside a train or test step from the replica's batch size B; without a strategy
    (or with one replica) every method is the one-device computation.

    ```none
    R replicas, M = R * B;  replica r holds rows r * B .. r * B + B - 1
    rows(x [M, ...])      -> x[r * B : (r + 1) * B]
    gather(x [B, ...])    -> [M, ...], rows in replica order; gradients all-reduced back
    mean(v [B])           -> sum(v) / M   (summed over the replicas: the global mean)
    ```

    Args:
      local_batch_size: B, an int or scalar int tensor (the replica's rows).
    """

    def __init__(self, local_batch_size):
        import tensorflow as tf

        context = tf.distribute.get_replica_context()
        self._context = context
        self.num_replicas = 1 if context is None else int(context.num_replicas_in_sync)
        self.local_batch_size = local_batch_size
        self.global_batch_size = local_batch_size * self.num_replicas
        if self.num_replicas == 1:
            self.replica = 0
            self.row_offset = None
        else:
            self.replica = context.replica_id_in_sync_group
            self.row_offset = tf.cast(self.replica, tf.int32) * tf.cast(local_batch_size,
                                                                        tf.int32)

    @property
    def distributed(self):
        return self.num_replicas > 1

    def rows(self, values):
        """This replica's rows [B, ...] of a tensor of the global batch [M, ...]."""
        if not self.distributed:
            return values
        import tensorflow as tf

        return values[self.row_offset:self.row_offset + tf.cast(self.local_batch_size,
                                                                 tf.int32)]

    def gather(self, *values):
        """All-gathers tensors [B, ...] to [M, ...] along the batch axis, with gradients.

        `ReplicaContext.all_gather` differentiates to an all-reduce (sum) of the gradients
        followed by this replica's slice, which is the gradient of the global objective
        with respect to the replica's own rows.
        """
        if not self.distributed:
            return values
        return tuple(self._context.all_gather(list(values), axis=0))

    def mean(self, values):
        """This replica's part sum(values) / M of the global-batch mean of per-image values."""
        import tensorflow as tf

        if not self.distributed:
            return tf.reduce_mean(values)
        return tf.reduce_sum(values) / tf.cast(self.global_batch_size, values.dtype)



def step_logs(logs):
    """The scalars a train or test step returns, in the shape Keras can reduce.

    Keras 3 reduces a step's outputs under a multi-worker strategy with
    `strategy.reduce("MEAN", value, axis=0)`, which fails on scalars
    (tensorflow/tensorflow#72388); as vectors [1] they reduce to the scalar. Elsewhere the
    logs are returned unchanged.
    """
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    if not (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode()):
        return logs
    return {name: tf.reshape(value, [1]) for name, value in logs.items()}


def sum_over_replicas(terms):
    """Sums a dict of scalars over the replicas, without gradient (identity on one device).

    Applied to the replicas' parts of global-batch means (`ReplicaBatch.mean`), it gives
    every replica the global means to report.
    """
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return terms
    names = sorted(terms)
    summed = context.all_reduce(
        tf.distribute.ReduceOp.SUM, [tf.stop_gradient(terms[name]) for name in names])
    return dict(zip(names, summed, strict=True))
