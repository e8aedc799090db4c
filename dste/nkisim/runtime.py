"""The state of one simulated kernel run: target, memory tracker, profile, program id, PRNGs.

Everything a run accumulates lives on its :class:`RunContext`; nothing is kept at module level
except ``_stack``, the stack of contexts that are running. ``_stack`` owns no run data: it only
says which context the language and ISA functions act on. ``run_kernel`` (``jit.py``) pushes one
fresh context per program of every launch (``nki.jit`` calls, ``nki.simulate``, ``nki.profile``)
and pops it when the program returns, so no state passes from one run to the next. An ``nki.jit`` kernel
called from inside a running one is refused (``jit.Kernel.__call__``; the migration guide says to drop the decorator
of sub-kernels); ``run_kernel`` itself called there pushes on top, and the outer run resumes afterwards.

An NKI function called outside any run (e.g. ``nisa.get_nc_version()`` or ``nl.zeros`` at a
test's top level) gets a fresh context of the default target for that one call, which is then
dropped: its allocations, profile records and PRNG draws are not carried to the next call, so
two top-level ``nl.rand`` calls return the same values (both start from the default seed).
"""

import contextlib
import os
import threading

import numpy as np

from . import cost
from .memory import MemoryTracker
from .profile import Profile

# nl.rand / nl.dropout start each run from this seed until nl.random_seed reseeds (the value
# the simulator has always used; the hardware's power-on PRNG state is not documented).
DEFAULT_RANDOM_SEED = 0


def default_target():
    """The target named by ``NEURON_PLATFORM_TARGET_OVERRIDE`` if it is a supported one, else trn2."""
    value = os.environ.get("NEURON_PLATFORM_TARGET_OVERRIDE", "trn2")
    try:
        return cost.normalize_target(value)
    except ValueError:
        return "trn2"


class RunContext:
    """One program of one simulated kernel launch."""

    def __init__(self, target=None, program_id=0, num_programs=1, shared_outputs=None, grid_ndim=0):
        self.target = cost.normalize_target(target or default_target())
        self.memory = MemoryTracker(self.target)
        self.profile = Profile(self.target)
        self.program_id = program_id
        self.num_programs = num_programs
        # nl.program_ndim(): 1 for a kernel[lnc] launch, 0 for kernel(...) with no grid
        self.grid_ndim = grid_ndim
        # Under LNC2 the k-th shared_hbm allocation of every program is the same tensor.
        self.shared_outputs = shared_outputs
        self.shared_count = 0
        # The generator nl.rand / nl.dropout draw from; nl.random_seed replaces it. Each program
        # of a launch has its own (an assumption: one PRNG per NeuronCore, same default seed).
        self.random_generator = np.random.default_rng(DEFAULT_RANDOM_SEED)
        # How many `with nl.no_reorder():` blocks enclose the running code (dynamic loops refuse > 0).
        self.no_reorder_depth = 0
        # per running fori_loop / while_loop body (innermost last): the storages its current iteration declared
        self.loop_body_allocations = []
        # the running dynamic loops (fori_loop / while_loop / dynamic_range; innermost last), one token per loop for
        # all its iterations
        self.dynamic_loops = []
        # nisa.rng / rand2 / dropout generators by engine name, created or reseeded on first use.
        self.isa_rng = {}
        # The per-lane PRNG states last given to nisa.rand_set_state, by engine name.
        self.isa_rng_state = {}
        # The engines' accumulation registers (nisa accumulate instructions), created on first use.
        self.isa_accumulators = None
        # The engine the running nki.isa instruction charged its cycles to (None until it does).
        self.instruction_engine = None
        # kernel[2] launches: None while the programs run one after the other; the launch's Lockstep once a
        # core_barrier made run_kernel run them as two threads that meet at each barrier
        self.lockstep = None
        # kernel[2] launches: the launch's races.SharedAccessLog, shared by both programs (None for one core)
        self.shared_access = None


_local = threading.local()  # per thread: the two programs of a kernel[2] launch that meets at a core_barrier run
                            # in two threads (jit.run_kernel), each with its own context


def _stack():
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    return stack


def running_kernel():
    """Whether a kernel launch is running on this thread (a context is pushed)."""
    return bool(_stack())


def current():
    """The running context, or a fresh default one for a call made outside any run."""
    stack = _stack()
    if stack:
        return stack[-1]
    return RunContext()


@contextlib.contextmanager
def running(context):
    """Make ``context`` the current one for the duration of the block."""
    stack = _stack()
    stack.append(context)
    try:
        yield context
    finally:
        stack.pop()


class NeedsLockstep(BaseException):
    """Raised by ``core_barrier`` while the programs of a kernel[2] launch run one after the other: ``run_kernel``
    runs the launch again as two threads that meet at each barrier. A BaseException, so a kernel's own
    ``except Exception`` does not swallow it."""


class LockstepAbort(BaseException):
    """Unwinds a program whose partner program failed: the launch reports the partner's error."""


class Lockstep:
    """The two programs of a kernel[2] launch as two threads, one running at a time. A program runs until it reaches
    a ``core_barrier`` (or ends), then hands over to the other; it passes its k-th barrier once the other program has
    reached its own k-th barrier. So every write made before a barrier, on either core, is visible after it
    (isa core_barrier: "Now both cores can safely read the complete tensor"; nki_simulator.rst: kernel[2] runs two
    threads that core_barrier synchronises). Between two barriers the programs run one after the other (program 0
    first), which a kernel without races between the cores cannot tell from running them in parallel."""

    def __init__(self):
        self.cond = threading.Condition()
        self.turn = 0
        self.arrived = [0, 0]
        self.done = [False, False]
        self.failed = [False, False]
        # per program: meeting number -> (what the program reached there, what it brought)
        self.posted = [{}, {}]

    def start(self, program):
        with self.cond:
            self.cond.wait_for(lambda: self.turn == program)

    def meet(self, program, what, payload=None):
        """Block until the other program reached as many meetings (``core_barrier`` s and ``sendrecv`` s); returns
        ``(problem, the other program's payload)``: ``problem`` is None, or a message when the other program ended
        first or met here with another instruction."""
        other = 1 - program
        with self.cond:
            self.arrived[program] += 1
            count = self.arrived[program]
            self.posted[program][count] = (what, payload)
            self.turn = other
            self.cond.notify_all()
            # the other program may end (or fail) before it gets here: then it will never hand the turn back
            self.cond.wait_for(lambda: self.turn == program or self.done[other])
            if self.arrived[other] >= count:
                their_what, their_payload = self.posted[other][count]
                if their_what != what:
                    return (f"{what}: program {program} reached it as its meeting {count} with the other core, where "
                            f"program {other} reached {their_what}: the two cores must meet at the same instruction "
                            "(on hardware this launch would hang)"), None
                return None, their_payload
            if self.failed[other]:
                raise LockstepAbort()
            return (f"{what}: program {program} waits at barrier {count}, but program {other} ended after "
                    f"{self.arrived[other]} barrier(s): both cores must reach every core_barrier and sendrecv (on "
                    "hardware this launch would hang)"), None

    def finish(self, program, failed):
        with self.cond:
            self.done[program] = True
            self.failed[program] = failed
            self.turn = 1 - program
            self.cond.notify_all()
