"""`reuse_freed_memory`: on the CPU under glibc, a large tensor freed by one step gives its pages
to the next instead of back to the system."""

import json
import platform
import subprocess
import sys

import pytest
import torch

from slotlab.train.runtime import reuse_freed_memory

# A "step" that holds three tensors of 64 MiB, each written, then frees them: the page faults of
# steps 7-9 (with the pages kept, next to none; without, each tensor's pages fault in again).
FAULTS = """
import json, resource, sys, torch
from slotlab.train.runtime import reuse_freed_memory
on = reuse_freed_memory(None if sys.argv[1] == "default" else False, torch.device("cpu"))
def step():
    a = torch.ones(16 * 2**20)
    b = a * 2
    return (b + a).sum()
for _ in range(6):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    step()
print(json.dumps({"on": on, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _faults(setting: str) -> dict:
    out = subprocess.run([sys.executable, "-c", FAULTS, setting], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="glibc's mallopt")
def test_freed_memory_is_reused_by_default_on_the_cpu():
    off, on = _faults("off"), _faults("default")
    assert not off["on"] and on["on"]
    pages = 3 * 3 * 64 * 2**20 // 4096
    assert off["faults"] > pages // 2  # each tensor's pages fault in again
    assert on["faults"] < pages // 20


def test_reuse_is_off_when_asked_and_off_the_cpu():
    assert not reuse_freed_memory(False, torch.device("cpu"))
    assert not reuse_freed_memory(None, torch.device("meta"))
