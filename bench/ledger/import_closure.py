"""The code version of a cell: a hash of every project module that training imports.

A cell's key hashes its configuration and this version, so a result computed by other
code is never taken for the current one: change how a step, a figure or a data split is
computed and every key changes, a rerun trains again, and no report mixes definitions.

Which modules count is not a hand-kept list but the *import closure* of the training
code, :data:`TRAINING_ROOTS`: every module of the training package (the loop, models,
budget, metrics, ...) and of the methods package, and every module they import,
transitively, restricted to this project's packages (:data:`PROJECT_PACKAGES`). It is
found statically, from the import statements of the source files (:mod:`ast`), not from
``sys.modules``: what a process happens to have imported depends on what ran before (a
test session imports the report), while the source tree is the same on every machine.
The closure is a superset of what runs:

- a root that is a package counts with every module in it, imported or not;
- every ``import`` statement counts, wherever it stands (inside functions, under
  ``if TYPE_CHECKING``), so a lazily imported module is never missed;
- importing ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py``, so they count;
- ``from a import b`` counts ``a/b.py`` when ``b`` is a module, else ``a`` only.

Not covered, by design: third-party packages (their versions are recorded in each
record's environment) and code loaded by name at run time (a model builder given as
``module:function`` or an entry point): it is the user's, outside this repository.

The version hashes, in sorted order, each file's path relative to the repository root
(``bench/metrics.py``, POSIX separators) and its bytes, so the same tree gives the same
version on every machine and in every folder.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

#: The repository root: the folder holding the ``bench`` and ``optimizers`` packages.
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
#: Top-level packages of this project; imports of anything else are not followed.
PROJECT_PACKAGES = ("bench", "optimizers")
#: The packages whose import closure determines a cell's result: training (the loop,
#: which imports the data, the suite's cell, ...) and the methods.
TRAINING_ROOTS = ("bench.training", "optimizers")
VERSION_LENGTH = 16


def module_file(module: str, root: Path) -> Path | None:
    """The source of ``module`` under ``root`` (a module file or a package's
    ``__init__.py``), or None when it is not a module of this project."""
    if module.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _with_parents(module: str) -> list[str]:
    """``a.b.c`` and the packages importing it runs: ``a``, ``a.b``."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The module a ``from ... import`` names, relative imports resolved."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _package_modules(module: str, root: Path) -> list[str]:
    """Every module of package ``module`` (none when it is a plain module)."""
    path = module_file(module, root)
    if path is None or path.name != "__init__.py":
        return []
    return [
        ".".join(source.relative_to(root).with_suffix("").parts[:-1])
        if source.name == "__init__.py"
        else ".".join(source.relative_to(root).with_suffix("").parts)
        for source in sorted(path.parent.rglob("*.py"))
    ]


def imported_modules(module: str, root: Path) -> set[str]:
    """The project modules that ``module``'s source imports, parents included."""
    path = module_file(module, root)
    if path is None:
        return set()
    tree = ast.parse(path.read_bytes(), filename=str(path))
    is_package = path.name == "__init__.py"
    named: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, module, is_package)
            named.add(source)
            for alias in node.names:
                if module_file(f"{source}.{alias.name}", root) is not None:
                    named.add(f"{source}.{alias.name}")
    return {
        name
        for imported in named
        for name in _with_parents(imported)
        if module_file(name, root) is not None
    }


def import_closure(
    roots: tuple[str, ...] = TRAINING_ROOTS, root: Path = REPOSITORY_ROOT
) -> list[str]:
    """Every project module in ``roots`` (packages: all their modules) or imported by
    them, transitively, sorted by name."""
    seen: set[str] = set()
    pending = [name for module in roots for name in _with_parents(module)]
    pending += [name for module in roots for name in _package_modules(module, root)]
    while pending:
        module = pending.pop()
        if module in seen or module_file(module, root) is None:
            continue
        seen.add(module)
        pending.extend(imported_modules(module, root) - seen)
    missing = [module for module in roots if module not in seen]
    if missing:
        raise ValueError(f"training module {missing[0]!r} has no source file under {root}")
    return sorted(seen)


def closure_files(
    roots: tuple[str, ...] = TRAINING_ROOTS, root: Path = REPOSITORY_ROOT
) -> list[str]:
    """The closure's files, as repository-relative POSIX paths, sorted."""
    files = (module_file(module, root) for module in import_closure(roots, root))
    return sorted(path.relative_to(root).as_posix() for path in files if path is not None)


def version_of(roots: tuple[str, ...] = TRAINING_ROOTS, root: Path = REPOSITORY_ROOT) -> str:
    """The hash of the closure's files (paths and contents) under ``root``."""
    digest = hashlib.sha256()
    for relative in closure_files(roots, root):
        digest.update(relative.encode())
        digest.update((root / relative).read_bytes())
    return digest.hexdigest()[:VERSION_LENGTH]


@cache
def code_version() -> str:
    """This checkout's code version (computed once per process)."""
    return version_of()
