"""Control flow and launch queries: ranges, ``fori_loop``, ``while_loop``, ``no_reorder``, ``device_print``.

Static ranges unroll (they are aliases of ``range`` in NKI 0.6). Dynamic loops run their body in
Python with the bound registers' current values. ``nl.fori_loop`` and ``nl.dynamic_range`` (deprecated in 0.6) pass
their index as a read-only register (``isa_misc.LoopIndex``): an instruction reads it as a ``scalar_offset``, a nested
loop's bound or through ``register_store``, while Python cannot branch on it or compute with it, as on a device,
where its value exists only at run time.
"""

import builtins
import contextlib
import sys
import warnings

import numpy as np

from . import runtime, version
from .rules_language import violate
from .tensor import HBM_BUFFERS, NkiTensor

RN = "release-notes/components/nki.rst"
WHILE_LOOP_LIMIT = 1_000_000


def _range(start, stop, step):
    return builtins.range(start) if stop is None else builtins.range(start, stop, step)


def affine_range(start, stop=None, step=1):
    return _range(start, stop, step)


def sequential_range(start, stop=None, step=1):
    return _range(start, stop, step)


def static_range(start, stop=None, step=1):
    return _range(start, stop, step)


def register_value(value, function, role):
    """The integer a loop bound holds: an int, a register (``.value``) or a 1x1 integer tensor."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, NkiTensor) and value.size == 1:
        return int(np.asarray(value.array()).reshape(-1)[0])
    from .isa_misc import VirtualRegister

    if isinstance(value, VirtualRegister):
        return value.read()
    for attribute in ("value", "_value"):
        held = getattr(value, attribute, None)
        if isinstance(held, (int, np.integer)):
            return int(held)
    if hasattr(value, "__index__"):
        return int(value.__index__())
    violate("nl.loop.bound", f"nl.{function}: {role} must be an int or a register, got {value!r}")


def _step(step, function):
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step <= 0:
        violate("nl.loop.step", f"nl.{function}: step must be a compile-time positive integer, got {step!r}")
    return int(step)


def dynamic_range(start, stop=None, step=1):
    """Deprecated in NKI 0.6 (use nl.fori_loop); bounds may be registers. The induction variable is a read-only
    register (``isa_misc.LoopIndex``), as a fori_loop's index: "the induction variable is now a VirtualRegister
    (previously a bare scalar)" (release notes, NKI 0.4.0 Bug Fixes), and "the type of i is register in NKI"
    (nki/get-started/nki-language-guide.rst, Dynamic Control Flow). Following NKI 0.3 it is still an int."""
    warnings.warn(f"nl.dynamic_range is deprecated since NKI 0.6; use nl.fori_loop ({RN})", DeprecationWarning,
                  stacklevel=2)
    _not_in_no_reorder("dynamic_range")  # nki-dynamic-loops.rst: a dynamic loop inside no_reorder "will error"
    step = _step(step, "dynamic_range")
    lo = register_value(start, "dynamic_range", "start")
    indices = builtins.range(0, lo, step) if stop is None else builtins.range(
        lo, register_value(stop, "dynamic_range", "stop"), step)
    site = caller_line(1)
    if version.current() < version.parse("0.4"):
        record_control_flow(site, "dynamic_range trips", len(indices))
        return indices
    return _registers(indices, site)


def _registers(indices, site):
    """Each index as a read-only loop register, the instructions issued meanwhile inside one dynamic loop."""
    from .isa_misc import LoopIndex

    record_control_flow(site, "dynamic_range trips", len(indices))
    with _dynamic_loop():
        for i in indices:
            yield LoopIndex(i)


def caller_line(depth):
    """``file:line`` of the kernel code ``depth`` frames above the caller of this function."""
    frame = sys._getframe(depth + 1)
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


def record_control_flow(site, what, value):
    """A run-time control-flow decision of the running program (``Profile.control_flow``): the two programs of a
    kernel[2] launch must take the same ones (rule kernel.lnc.same-program)."""
    runtime.current().profile.control_flow.append((site, what, value))


def _not_in_no_reorder(function):
    if runtime.current().no_reorder_depth:
        violate("nl.no_reorder.dynamic-loop", f"nl.{function} inside a `with nl.no_reorder():` block")


def fori_loop(lower, upper, body_fun, step=1):
    """``for i in range(lower, upper, step): body_fun(i)`` with register (or int) bounds."""
    version.require("nl.fori_loop", introduced="0.6", source=RN)
    _not_in_no_reorder("fori_loop")
    step = _step(step, "fori_loop")
    lo = register_value(lower, "fori_loop", "lower")
    hi = register_value(upper, "fori_loop", "upper")
    from .isa_misc import LoopIndex

    record_control_flow(caller_line(1), "fori_loop trips", len(builtins.range(lo, hi, step)))
    with _dynamic_loop():
        for i in builtins.range(lo, hi, step):
            with _body_scope():
                returned = body_fun(LoopIndex(i))
            if returned is not None:
                violate("nl.fori_loop.body-return", "nl.fori_loop: the body function returned a value; it cannot "
                                                    "(keep state that crosses iterations in SBUF or HBM)")


def while_loop(init, body_fun):
    """``r = init; while r != 0: r = body_fun(r)`` (the body returns the next condition register)."""
    version.require("nl.while_loop", introduced="0.6", source=RN)
    _not_in_no_reorder("while_loop")
    condition = init
    site = caller_line(1)
    with _dynamic_loop():
        for trips in builtins.range(WHILE_LOOP_LIMIT):
            if register_value(condition, "while_loop", "condition") == 0:
                record_control_flow(site, "while_loop trips", trips)
                return
            with _body_scope():
                condition = body_fun(condition)
            if condition is None:
                violate("nl.while_loop.body", "nl.while_loop: the body returned None; it must return the next "
                                              "condition register")
    violate("nl.while_loop.limit", f"nl.while_loop: still running after {WHILE_LOOP_LIMIT} iterations")


@contextlib.contextmanager
def _dynamic_loop():
    """All iterations of one dynamic loop: the instructions issued meanwhile sit inside it (their handles record the
    loops around them, which NkiInstruction.depends_on compares)."""
    loops = runtime.current().dynamic_loops
    loops.append(object())  # this loop, told apart from every other
    try:
        yield
    finally:
        loops.pop()


@contextlib.contextmanager
def _body_scope():
    """One iteration of a loop body: the tensors it declares end with it (rule nl.loop.body-tensor-scope)."""
    stack = runtime.current().loop_body_allocations
    stack.append([])
    try:
        yield
    finally:
        for storage in stack.pop():
            storage.body_ended = True


@contextlib.contextmanager
def _no_reorder_block():
    context = runtime.current()
    context.no_reorder_depth += 1
    try:
        yield
    finally:
        context.no_reorder_depth -= 1


def no_reorder():
    """``with nl.no_reorder():`` keeps program order (the simulator runs in program order anyway)."""
    return _no_reorder_block()


def device_print(print_prefix, tensor):
    """Print ``print_prefix`` and the values of an SBUF or HBM tensor to stdout at once."""
    if not isinstance(tensor, NkiTensor) or (tensor.buffer != "sbuf" and tensor.buffer not in HBM_BUFFERS):
        where = tensor.buffer if isinstance(tensor, NkiTensor) else type(tensor).__name__
        violate("nl.device_print.buffer", f"nl.device_print({print_prefix!r}): tensor must be in SBUF or HBM, got {where}")
    print(print_prefix, tensor.numpy())


def program_id(axis=0):
    if axis != 0:
        violate("nl.program_id.axis", f"nl.program_id(axis={axis}): only axis 0 exists (launch grids are 1-D)")
    return runtime.current().program_id


def num_programs(axes=0):
    if axes not in (0, None, (0,), [0]):
        violate("nl.program_id.axis", f"nl.num_programs(axes={axes}): only axis 0 exists (launch grids are 1-D)")
    return runtime.current().num_programs


def program_ndim():
    """Axes of the launch grid: "0 if no grid" (nki/api/nki/language/__init__.py, def program_ndim). A launch is
    1-D when it names its core count in brackets, ``kernel[1]`` or ``kernel[2]``; ``kernel(...)`` has no grid
    (assumption: nki/get-started/about/lnc.rst says only that no brackets means one core)."""
    return runtime.current().grid_ndim


def _name(buffer):
    return buffer.value if hasattr(buffer, "value") else str(buffer)


def is_hbm(buffer):
    return _name(buffer) in HBM_BUFFERS


def is_on_chip(buffer):
    return _name(buffer) in ("sbuf", "psum")


def is_psum(buffer):
    return _name(buffer) == "psum"


def is_sbuf(buffer):
    return _name(buffer) == "sbuf"
