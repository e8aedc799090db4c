"""docs/ARCHITECTURE.md's import direction, held by the code: every import of one room by another follows an
arrow of the diagram (data flows encode -> kernel -> op -> layer -> controller, never back)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dste"

# room -> the rooms it may import (docs/ARCHITECTURE.md, "Imports point one way"); dste.checks, dste.argparsing and
# dste.atomic_files belong to no room and import no room
MAY_IMPORT = {
    "checks": set(),
    "argparsing": set(),
    "atomic_files": set(),
    "reference": set(),
    "nkisim": {"checks"},
    "format": {"checks", "atomic_files"},
    "kernels": {"format", "nkisim", "checks"},
    "bindings": {"format", "kernels", "nkisim", "checks"},
    "gnn": {"bindings", "format", "kernels", "nkisim", "checks"},
    "data": {"checks", "atomic_files"},
    "controller": {"format", "checks"},
    "experiments": {"controller", "data", "gnn", "bindings", "format", "kernels", "nkisim", "checks", "argparsing"},
    "distributed": {"data", "bindings", "format", "kernels", "checks", "argparsing"},
    "cli": {"experiments", "argparsing"},
}


def _room(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _imported_rooms(source: str, package: tuple[str, ...]):
    """(line, room) of every dste room a module of ``package`` (e.g. ``("dste", "format")``) holding ``source``
    imports, at module level or inside a function, absolutely or relatively."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the module's own package
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ((node.module,) if node.module else ()))
            else:
                module = node.module or ""
            names = [module] if module != "dste" else [f"dste.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "dste" and len(parts) > 1:
                yield node.lineno, parts[1]


def test_every_import_between_rooms_follows_the_architecture():
    rooms = {path: _room(path) for path in PACKAGE.rglob("*.py") if path.name != "__init__.py" or
             path.parent != PACKAGE}
    assert set(rooms.values()) == set(MAY_IMPORT), "a room was added or removed: update MAY_IMPORT and the doc"
    wrong = []
    for path, room in rooms.items():
        package = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]
        for line, other in _imported_rooms(path.read_text(encoding="utf-8"), package):
            if other != room and other not in MAY_IMPORT[room]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({room}) imports dste.{other}")
    assert not wrong, "imports against docs/ARCHITECTURE.md's direction:\n" + "\n".join(wrong)


def test_the_scan_reads_relative_lazy_and_package_imports():
    """A check that missed these would pass any code."""
    source = ("from ..gnn import models\nfrom . import quant\nimport dste.kernels.plan\n\n"
              "def later():\n    from dste import controller\n")
    found = {room for _, room in _imported_rooms(source, ("dste", "format"))}
    assert found == {"gnn", "format", "kernels", "controller"}
