"""``nki.typing`` for the simulator: shape annotations for kernel parameters (NKI 0.3.0 and later).

``nt.tensor[shape]`` (or ``nt.tensor[shape, dtype]``) declares the expected shape of a kernel argument
(``release-notes/components/nki.rst``, 0.3.0, "nki.typing module"). Annotations are not checked at
run time here: the kernel's own assertions and the instructions' checks still apply.
"""


class TensorAnnotation:
    """The value of ``nt.tensor[...]``: the declared shape (and dtype, when given)."""

    def __init__(self, spec):
        self.spec = spec

    def __repr__(self):
        return f"nki.typing.tensor[{self.spec!r}]"


class _TensorType:
    def __getitem__(self, spec):
        return TensorAnnotation(spec)

    def __repr__(self):
        return "nki.typing.tensor"


tensor = _TensorType()
