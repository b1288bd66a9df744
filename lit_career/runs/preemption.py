"""Requeue on SLURM's pre-timeout signal at a step boundary.

Under ``srun`` Lightning picks :class:`~lightning.fabric.plugins.environments.SLURMEnvironment` with
``auto_requeue=True``: on the requeue signal (SIGUSR1, sent by ``sbatch --signal=SIGUSR1@90``) it
saves ``hpc_ckpt_<n>.ckpt`` in ``default_root_dir`` (through the module's checkpoint hooks, so
adapter-only here), runs ``scontrol requeue`` and, when the job starts again, restores the newest
such checkpoint. Lightning does this the moment the signal arrives, which can be in the middle of an
optimizer step or between the step and its learning-rate update, and then keeps training until
SLURM kills the job, W&B's service process included, before it wrote what it had. Measured on the
local cluster (tests/test_slurm.py without this callback): the offline W&B file of the interrupted
part stayed empty and the resumed fit validated one step off its schedule. :class:`RequeueAtStepEnd`
runs the same handler at the end of the training step in which the signal arrived (on every rank at
the same step) after logging that step's metrics and finishing the W&B run, then stops the process:
the checkpoint holds a consistent state, the W&B run is on disk with every step up to the checkpoint,
and nothing is logged after it. (The per-epoch mean of an epoch cut short is not logged.)
"""

from __future__ import annotations

import signal
from types import FrameType

from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_info

REQUEUED_EXIT_CODE = 3
"""Exit status of a process that saved its checkpoint and asked SLURM to requeue its job."""


class RequeueAtStepEnd(Callback):
    """Defer Lightning's SLURM auto-requeue handler to the end of the current training step.

    A no-op unless the trainer runs in a :class:`SLURMEnvironment` with ``auto_requeue``. After the
    checkpoint is saved and the requeue requested, the process exits with :data:`REQUEUED_EXIT_CODE`
    (SLURM restarts the job; if the requeue failed, the job ends as failed with the checkpoint on disk).
    """

    def __init__(self) -> None:
        self._signal: signal.Signals | None = None
        self._lightning_handler = None
        self._received = False

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Lightning's own signal connector reads the environment from the same place
        environment = trainer._accelerator_connector.cluster_environment
        if not (isinstance(environment, SLURMEnvironment) and environment.auto_requeue):
            return
        handler = signal.getsignal(environment.requeue_signal)
        if not callable(handler):  # Lightning keeps a handler that was there before it
            return
        self._signal, self._lightning_handler = environment.requeue_signal, handler
        signal.signal(self._signal, self._note_signal)

    def _note_signal(self, signum: int, frame: FrameType | None) -> None:
        self._received = True

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if self._lightning_handler is None or not trainer.strategy.reduce_boolean_decision(
            self._received, all=False
        ):
            return
        rank_zero_info(
            f"{self._signal.name} received: checkpoint at step {trainer.global_step}, then requeue"
        )
        # this step's metrics: Lightning logs them just after this hook, which the process won't reach
        trainer._logger_connector.update_train_step_metrics()
        for logger in trainer.loggers:  # the requeue stops every process of the job, W&B's service too
            if isinstance(logger, WandbLogger):
                logger.experiment.finish()
        self._lightning_handler(self._signal, None)
        raise SystemExit(REQUEUED_EXIT_CODE)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._lightning_handler is not None:
            signal.signal(self._signal, self._lightning_handler)
            self._lightning_handler = None
