"""Reading official TensorFlow checkpoints without TensorFlow."""

from slotlab.convert.official import load_tf_checkpoint, tf_state_dict
from slotlab.convert.tf_checkpoint import TFCheckpoint

__all__ = ["TFCheckpoint", "load_tf_checkpoint", "tf_state_dict"]
