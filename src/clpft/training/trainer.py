"""sentence-transformers' trainer, as clpft runs it: stops at the first NaN/inf loss, counts the batches and
rows it really trains on per epoch, logs CLP's two terms apart, marks each checkpoint complete
(clpft.training.checkpoints) and rotates them; plus the callbacks that tell the collator the epoch and let
the guard score the model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from clpft.errors import ClpftError
from clpft.faults import kill_point
from clpft.training.checkpoints import mark_complete, rotate
from clpft.training.collator import CLPDataCollator
from clpft.training.runtime import release_freed

KEEP_CHECKPOINTS = 2  # complete checkpoints kept while training (older ones are removed)


class NonFiniteLoss(ClpftError):
    pass


def trainer_classes():
    """(Trainer, EpochCallback, GuardCallback): built on first use, so importing clpft does not import the
    trainer stack; tests and benchmarks wrap this function to add callbacks."""
    from sentence_transformers import SentenceTransformerTrainer
    from transformers import TrainerCallback

    class EpochCallback(TrainerCallback):
        def __init__(self, collator: CLPDataCollator) -> None:
            self.collator = collator

        def on_epoch_begin(self, args, state, control, **kwargs):
            self.collator.epoch = int(state.epoch or 0)

    class Trainer(SentenceTransformerTrainer):
        """sentence-transformers' trainer that stops at the first NaN/inf loss instead of training on,
        counts the batches and rows it really trains on per epoch, and logs CLP's two terms apart."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.batches_by_epoch: dict[int, int] = {}
            self.rows_by_epoch: dict[int, int] = {}

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            result = super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
            terms = getattr(self.loss, "last_terms", None)
            if model.training and terms:
                self.track_loss_components(terms)  # sentence-transformers logs them beside "loss"
            return result

        def _save_checkpoint(self, model, trial):
            super()._save_checkpoint(model, trial)
            if self.args.should_save:
                folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
                kill_point("checkpoint.unmarked")
                mark_complete(folder)
                rotate(folder.parent, keep=KEEP_CHECKPOINTS)

        def _save_optimizer_and_scheduler(self, output_dir):
            kill_point("checkpoint.model_written")  # mid-checkpoint: weights on disk, optimizer not yet
            super()._save_optimizer_and_scheduler(output_dir)

        def training_step(self, model, inputs, *args, **kwargs):
            epoch = self.data_collator.epoch
            self.batches_by_epoch[epoch] = self.batches_by_epoch.get(epoch, 0) + 1
            self.rows_by_epoch[epoch] = self.rows_by_epoch.get(epoch, 0) + len(inputs["query_input_ids"])
            loss = super().training_step(model, inputs, *args, **kwargs)
            release_freed()  # this step's activations were just freed (clpft.training.runtime, CLPFT_MALLOC=trim)
            if not torch.isfinite(loss).all():
                raise NonFiniteLoss(
                    f"the loss became {loss.item()} at step {self.state.global_step + 1}; stopped "
                    "(lower --lr, raise --temperature, or check the training data); "
                    "the last checkpoint, if any, is kept"
                )
            return loss

    class GuardCallback(TrainerCallback):
        def __init__(self, guard) -> None:
            self.guard = guard

        def on_step_end(self, args, state, control, **kwargs):
            if self.guard.after_step(state.global_step):
                control.should_training_stop = True

    return Trainer, EpochCallback, GuardCallback
