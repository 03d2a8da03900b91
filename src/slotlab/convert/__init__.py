"""Reading official TensorFlow checkpoints without TensorFlow."""

from slotlab.tf_formats.checkpoint import TFCheckpoint
from slotlab.tf_formats.official import load_tf_checkpoint, tf_state_dict

__all__ = ["TFCheckpoint", "load_tf_checkpoint", "tf_state_dict"]
