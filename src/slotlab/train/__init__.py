"""slotlab.train."""
