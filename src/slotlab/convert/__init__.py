"""slotlab.convert."""
