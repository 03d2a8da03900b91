"""slotlab.metrics."""
