"""The argument parser every command line of the package uses (``dste run``, ``dste bench``,
``python -m dste.distributed``). Like ``dste.checks`` it belongs to no room: each room's entry point imports it, so
no room reaches back into ``dste.cli`` for it."""

from __future__ import annotations

import argparse
import re
import sys

__all__ = ["ArgumentParser"]


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, which reads a value that starts with '-' and is not a plain negative number
    (``--budget -0.5fp32``, ``--check-atol -1e-3``) as an option and says only "expected one argument"; this one
    adds how to write such a value (``--budget=-0.5fp32``), so the option's own check can name what is allowed.
    Sub-parsers are of the same class."""

    _EXPECTED_ONE = re.compile(r"argument (--[\w-]+)(?:/[\w-]+)*: expected one argument")

    def parse_known_args(self, args=None, namespace=None):
        self._arg_strings = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message):
        match = self._EXPECTED_ONE.fullmatch(message)
        if match:
            given = getattr(self, "_arg_strings", [])
            option = match.group(1)
            after = given[given.index(option) + 1:] if option in given else []
            if after and after[0].startswith("-") and not after[0].startswith("--") \
                    and after[0] not in self._option_string_actions:  # a value, not a forgotten one before -h
                message += f" (a value that starts with '-' is written {option}={after[0]})"
        super().error(message)
