"""slotlab.nn."""
