"""The package's three layers, read from its own imports (every `import`, function-local ones too):

  llmhub/*.py      engine    imports only the engine
  llmhub/study/    studies   imports the engine and itself
  llmhub/serve/    serving   imports the engine and itself
  llmhub/cli.py    commands  the one front door (`llmhub train|sweep|report|...`): may import all three

and no import cycle anywhere in llmhub/."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "llmhub"
COMMANDS = {"llmhub.cli", "llmhub.__main__"}
# which layers each layer may import (itself included)
ALLOWED = {"engine": {"engine"}, "study": {"engine", "study"}, "serve": {"engine", "serve"},
           "commands": {"engine", "study", "serve", "commands"}}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    if module in COMMANDS:
        return "commands"
    for name in ("study", "serve"):
        if module == f"llmhub.{name}" or module.startswith(f"llmhub.{name}."):
            return name
    return "engine"


def imports(path: Path, modules: set[str]) -> list[tuple[str, int]]:
    """(module of llmhub imported, line) for every import statement in the file."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # `from pkg import mod` imports the module pkg.mod; `from mod import name`, the module mod
            subs = [f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in modules]
            out += [(s, node.lineno) for s in subs] or [(source, node.lineno)]
    return [(m, line) for m, line in out if m in modules and m != "llmhub"]


def graph() -> dict[str, list[tuple[str, str]]]:
    """module -> [(imported module, "file:line")]; an empty package __init__ is no edge."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = {m for m, p in files.items() if p.name != "__init__.py" or p.read_text().strip()}
    return {m: [(dep, f"{p.relative_to(PACKAGE.parent)}:{line}") for dep, line in imports(p, modules) if dep != m]
            for m, p in files.items()}


def cycles(edges: dict[str, list[tuple[str, str]]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w, _ in edges.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_layers_import_only_downward():
    edges = graph()
    assert {"llmhub.experiment", "llmhub.study.report", "llmhub.serve.app"} <= set(edges)
    wrong = [f"{where}: {layer(m)} module {m} imports {layer(dep)} module {dep}"
             for m, deps in sorted(edges.items()) for dep, where in deps if layer(dep) not in ALLOWED[layer(m)]]
    assert not wrong, "imports against the layers (engine <- study, engine <- serve):\n" + "\n".join(wrong)


def test_no_import_cycles():
    edges = graph()
    found = cycles(edges)
    detail = ["cycle: " + " <-> ".join(comp) + "\n  " + "\n  ".join(
        f"{where} -> {dep}" for m in comp for dep, where in edges[m] if dep in comp) for comp in found]
    assert not found, "import cycles in llmhub/:\n" + "\n".join(detail)
