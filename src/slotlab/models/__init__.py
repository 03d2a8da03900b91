"""slotlab.models."""
