"""The two tasks of the paper and video (SAVi), and the one place their names are normalised."""

from __future__ import annotations

from slotlab.errors import ConfigError

TASKS = ("object_discovery", "set_prediction", "video")


def normalize_task(task: str) -> str:
    """"object-discovery" / "object_discovery" -> "object_discovery" (likewise set prediction and
    video); anything else is a `ConfigError` naming the valid tasks."""
    name = str(task).strip().lower().replace("-", "_")
    if name not in TASKS:
        raise ConfigError(f"unknown task {task!r}; expected one of: "
                          f"{', '.join(t.replace('_', '-') for t in TASKS)}")
    return name
