"""The state of one simulated kernel run: target, memory tracker, profile, program id."""

import contextlib
import os

from . import cost
from .memory import MemoryTracker
from .profile import Profile


def default_target():
    """The target named by ``NEURON_PLATFORM_TARGET_OVERRIDE`` if it is a supported one, else trn2."""
    value = os.environ.get("NEURON_PLATFORM_TARGET_OVERRIDE", "trn2")
    try:
        return cost.normalize_target(value)
    except ValueError:
        return "trn2"


class RunContext:
    def __init__(self, target=None, program_id=0, num_programs=1, shared_outputs=None):
        self.target = cost.normalize_target(target or default_target())
        self.memory = MemoryTracker(self.target)
        self.profile = Profile(self.target)
        self.program_id = program_id
        self.num_programs = num_programs
        # Under LNC2 the k-th shared_hbm allocation of every program is the same tensor.
        self.shared_outputs = shared_outputs
        self.shared_count = 0


_stack = []


def current():
    if not _stack:
        _stack.append(RunContext())
    return _stack[-1]


@contextlib.contextmanager
def running(context):
    _stack.append(context)
    try:
        yield context
    finally:
        _stack.pop()
