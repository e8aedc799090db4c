"""The simulator's rule table: every strict check names a rule, and every rule names its source.

A :class:`Rule` is one documented restriction (or a named assumption) that a kernel must respect on
a NeuronCore. ``source`` is the page of the official documentation that states it (a path in the
aws-neuron/aws-neuron-sdk repository, with the section), or ``"assumption: ..."`` when no page
states it and the simulator chooses to be strict anyway. :func:`violate` raises the error for a
rule with its id and source appended, so a kernel author can look the rule up.

``RULES`` is filled by the modules that enforce the rules (``register``); ``docs/NKI_RULES.md`` is
the same table in prose.
"""

from dataclasses import dataclass

from .errors import NkiValidationError

STUB_ISA = "nki/api/nki/isa/__init__.py"
STUB_LANGUAGE = "nki/api/nki/language/__init__.py"
STUB_NKI = "nki/api/nki/__init__.py"
SHARED_TABLES = "nki/api/nki.api.shared.rst"
RELEASE_NOTES = "release-notes/components/nki.rst"


@dataclass(frozen=True)
class Rule:
    id: str
    text: str
    source: str

    @property
    def is_assumption(self):
        return self.source.startswith("assumption")


RULES = {}


def register(rule_id, text, source):
    """Add a rule to the table (idempotent for an identical rule) and return it."""
    rule = Rule(rule_id, text, source)
    existing = RULES.get(rule_id)
    if existing is not None and existing != rule:
        raise ValueError(f"rule {rule_id!r} registered twice with different text or source")
    RULES[rule_id] = rule
    return rule


def violate(rule_id, message, error=NkiValidationError):
    """Raise ``error`` with ``message`` followed by the rule's id and source."""
    rule = RULES[rule_id]
    raise error(f"{message} [rule {rule.id}; {rule.source}]")


def table_markdown(ids=None):
    """The rule table as Markdown rows (id | rule | source), of every rule or of the ids given."""
    lines = ["| rule | what it requires | source |", "|---|---|---|"]
    chosen = RULES.values() if ids is None else [RULES[i] for i in ids]
    for rule in sorted(chosen, key=lambda r: r.id):
        lines.append(f"| `{rule.id}` | {rule.text} | {rule.source} |")
    return "\n".join(lines)
