"""Stop at a step boundary with a checkpoint on SIGTERM and on SLURM's pre-timeout signal.

Under ``srun`` Lightning picks :class:`~lightning.fabric.plugins.environments.SLURMEnvironment` with
``auto_requeue=True``: on the requeue signal (SIGUSR1, sent by ``sbatch --signal=SIGUSR1@90``) it
saves ``hpc_ckpt_<n>.ckpt`` in ``default_root_dir`` (through the module's checkpoint hooks, so
adapter-only here), runs ``scontrol requeue`` and, when the job starts again, restores the newest
such checkpoint. Lightning does this the moment the signal arrives, which can be in the middle of an
optimizer step or between the step and its learning-rate update, and then keeps training until
SLURM kills the job, W&B's service process included, before it wrote what it had. Measured on the
local cluster (tests/test_slurm.py without this callback): the offline W&B file of the interrupted
part stayed empty and the resumed fit validated one step off its schedule. On SIGTERM (what SLURM
sends on preemption or at the time limit, and what ``kill`` sends) Lightning saves nothing and, at
the end of the epoch, exits with status 0.

:class:`RequeueAtStepEnd` notes either signal and acts at the end of the training step in which it
arrived (on every rank at the same step), after logging that step's metrics and finishing the W&B
run: under SLURM it runs Lightning's requeue handler, elsewhere it saves ``last.ckpt`` where
``fit --ckpt_path last`` finds it; then it stops the process. The checkpoint holds a consistent
state (the corpus loader's position included, so the resumed fit goes on with the next batch), the
W&B run is on disk with every step up to the checkpoint, and nothing is logged after it. (The
per-epoch mean of an epoch cut short is not logged.) While predicting, where there is nothing to save, SIGTERM
stops the process at the end of the batch (exit :data:`STOPPED_EXIT_CODE`): Lightning's handler only notes it
and its predict loop would go on to the end. SIGTERM under SLURM reaches every process of the
job step, W&B's service too: the W&B run stops there, its last steps may be lost, and the step is
finished without logging to it. A validation due at the step of the checkpoint is not run on resume
(Lightning skips it).
"""

from __future__ import annotations

import os
import signal
import threading
from functools import partial
from types import FrameType

from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn

REQUEUED_EXIT_CODE = 3
"""Exit status of a process that saved its checkpoint and asked SLURM to requeue its job."""
STOPPED_EXIT_CODE = 128 + signal.SIGTERM
"""Exit status of a process that saved its checkpoint on SIGTERM outside SLURM (as shells report SIGTERM)."""


class RequeueAtStepEnd(Callback):
    """Checkpoint and stop at the end of the training step in which SIGTERM or SLURM's requeue signal came
    (while predicting: stop at the end of the batch).

    In a :class:`SLURMEnvironment` with ``auto_requeue`` either signal runs Lightning's requeue handler
    and the process exits with :data:`REQUEUED_EXIT_CODE` (SLURM restarts the job; if the requeue
    failed, the job ends as failed with the checkpoint on disk). Elsewhere SIGTERM saves ``last.ckpt``
    in the folder of the trainer's ``ModelCheckpoint`` and the process exits with
    :data:`STOPPED_EXIT_CODE`.
    """

    def __init__(self) -> None:
        self._received: signal.Signals | None = None
        self._requeue = None
        self._requeue_signal: signal.Signals | None = None
        self._replaced: dict[signal.Signals, object] = {}

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # Python handles signals in the main thread only
        signals = {signal.SIGTERM}
        # Lightning's own signal connector reads the environment from the same place
        environment = trainer._accelerator_connector.cluster_environment
        if isinstance(environment, SLURMEnvironment) and environment.auto_requeue:
            handler = signal.getsignal(environment.requeue_signal)
            if callable(handler):  # Lightning keeps a handler that was there before it
                self._requeue, self._requeue_signal = handler, environment.requeue_signal
                signals.add(environment.requeue_signal)
        self._replaced = {s: signal.signal(s, partial(self._note_signal, trainer)) for s in signals}

    def _note_signal(self, trainer: Trainer, signum: int, frame: FrameType | None) -> None:
        self._received = signal.Signals(signum)
        if self._received == signal.SIGTERM and self._requeue is not None:
            # SLURM sends SIGTERM to every process of the job step, W&B's service included: its run
            # ends here, and logging to it for the rest of the step would fail
            trainer.loggers = [logger for logger in trainer.loggers if not isinstance(logger, WandbLogger)]

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if not trainer.strategy.reduce_boolean_decision(self._received is not None, all=False):
            return
        name = self._received.name if self._received is not None else "a signal on another rank"
        self._close_loggers(trainer)
        if self._requeue is not None:
            rank_zero_info(f"{name} received: checkpoint at step {trainer.global_step}, then requeue")
            self._requeue(self._requeue_signal, None)
            raise SystemExit(REQUEUED_EXIT_CODE)
        self._save_last(trainer, name)
        raise SystemExit(STOPPED_EXIT_CODE)

    @staticmethod
    def _close_loggers(trainer: Trainer) -> None:
        """Log this step's metrics (Lightning would just after this hook, which the process won't reach)
        and finish the W&B run before the requeue stops every process of the job, W&B's service too. A
        logger that fails only warns: SIGTERM under SLURM reaches W&B's service as well, and the
        checkpoint matters more than the last logged step."""
        try:
            trainer._logger_connector.update_train_step_metrics()
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    logger.experiment.finish()
        except Exception as err:
            rank_zero_warn(f"the loggers could not write step {trainer.global_step}: {err!r}")

    @staticmethod
    def _save_last(trainer: Trainer, name: str) -> None:
        """Save ``last.ckpt`` in the ``ModelCheckpoint`` folder (``--ckpt_path last`` takes the newest ``last*``)."""
        callback = trainer.checkpoint_callback
        if callback is None:
            rank_zero_warn(
                f"{name} received: no ModelCheckpoint, stopping at step {trainer.global_step} unsaved"
            )
            return
        path = os.path.join(callback.dirpath, callback.CHECKPOINT_NAME_LAST + callback.FILE_EXTENSION)
        rank_zero_info(f"{name} received: checkpoint at step {trainer.global_step} in {path}, then exit")
        if trainer.is_global_zero and os.path.islink(path):  # save_last="link": keep the linked file
            os.remove(path)
        callback.last_model_path = path  # the resumed ModelCheckpoint then overwrites it, not last-v1.ckpt
        trainer.save_checkpoint(path)

    def on_predict_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs,
        batch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if trainer.received_sigterm:  # Lightning's own handler notes SIGTERM; its predict loop never looks
            rank_zero_info(f"SIGTERM received: stopped while predicting, after batch {batch_idx}")
            raise SystemExit(STOPPED_EXIT_CODE)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for signum, handler in self._replaced.items():
            signal.signal(signum, handler)
        self._replaced = {}
