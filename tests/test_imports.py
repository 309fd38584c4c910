"""Imports run one way, from the commands down to the maths: every ``import`` under clex/ is read, those inside
functions included (a lazy import hides a cycle from Python, not from a reader)."""

import ast
from pathlib import Path

import clex

PACKAGE = Path(clex.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """module -> the clex modules it imports (``from clex import x`` counts as clex.x where that is a module)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("clex")}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("clex") and not node.level:
                found |= {
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                    for a in node.names
                }
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def cycles(graph: dict) -> list[list[str]]:
    found, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for other in sorted(graph[node]):
            if state.get(other) == "open":
                found.append(stack[stack.index(other) :] + [other])
            elif other not in state:
                visit(other, stack + [other])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_no_import_cycle_among_clex_modules():
    assert cycles(imports()) == []


def test_library_modules_import_neither_the_facade_nor_a_command():
    bad = {
        (m, i)
        for m, imported in imports().items()
        for i in imported
        if (i == "clex" and m != "clex") or (i.startswith("clex.commands") and not m.startswith("clex.commands"))
    }
    assert bad == set()


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]


# the packages, lowest first: a module imports from its own package or a lower one, never a higher one (the
# top-level modules, errors, registry, io and plots, sit below everything and import no package)
LAYERS = (
    "",
    "rope",
    "checkpoints",
    "models",
    "data",
    "eval",
    "config",
    "analysis",
    "train",
    "reports",
    "sweeps",
    "commands",
)


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else 0


def upward(graph: dict) -> list[tuple[str, str]]:
    return sorted((m, i) for m, imported in graph.items() for i in imported if layer(i) > layer(m))


def test_packages_import_one_way_in_the_declared_order():
    assert upward(imports()) == []
    assert upward({"clex.rope.patch": {"clex.train.stages"}, "clex.io": {"clex.errors"}}) == [
        ("clex.rope.patch", "clex.train.stages")
    ]


def test_every_package_is_declared_and_the_top_level_stays_small():
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(LAYERS[1:]) - {""}
    assert len([p for p in PACKAGE.glob("*.py")]) <= 10
