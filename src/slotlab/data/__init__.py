"""slotlab.data."""
