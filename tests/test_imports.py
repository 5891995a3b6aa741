"""The import graph of the project's own modules has no cycle, lazy (in-function) imports included,
and the layers keep their places: zoo/ and metanets/ import neither Ray nor pipelines/."""
import ast
from pathlib import Path

from conftest import REPO

PACKAGES = ("zoo", "metanets", "pipelines", "cluster")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}


def imports_of(name: str, path: Path, modules) -> set[str]:
    """Project modules `name` imports anywhere in its body: `from X import Y` counts Y when it is a module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            subs = {f"{base}.{a.name}" for a in node.names} & set(modules)
            out |= subs or {base}
    return {m for m in out if m in modules and m != name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == "open":
                return stack[stack.index(m):] + [m]
            if m not in state and (cycle := visit(m)):
                return cycle
        state[n] = "done"
        stack.pop()
        return None

    for n in sorted(graph):
        if n not in state and (cycle := visit(n)):
            return cycle
    return None


def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {n: imports_of(n, p, modules) for n, p in modules.items()}


def test_no_import_cycle():
    assert find_cycle(graph()) is None, " -> ".join(find_cycle(graph()))


def test_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_layers_keep_their_places():
    for name, path in project_modules().items():
        text = path.read_text()
        if name.startswith(("zoo", "metanets")):
            assert "import ray" not in text and "from ray" not in text, name
            assert "pipelines" not in {m.split(".")[0] for m in imports_of(name, path, project_modules())}, name
        if name.startswith(("zoo", "metanets", "pipelines")):
            assert "import ray" not in text.replace("import ray  # noqa", ""), name
