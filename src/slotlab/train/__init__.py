"""Training: losses, schedules, the training loop, evaluation and visualisation."""

from slotlab.train.losses import hungarian_huber_loss, reconstruction_loss

__all__ = ["hungarian_huber_loss", "reconstruction_loss"]
