"""The house rules of DESIGN's layering, checked on the source: imports go downwards only, with no
cycles (lazy imports inside functions included), ``info`` is pure torch, and nothing reaches into
another module's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from hf_infonc import citation

PACKAGE = Path(__file__).resolve().parents[1] / "hf_infonc"
README = PACKAGE.parent / "README.md"

#: Layer of each module, by longest dotted prefix: a module imports only from its own layer or lower ones.
LAYERS: dict[str, int] = {
    # 0: leaf utilities, no hf_infonc imports of their own
    "errors": 0, "files": 0, "mode_settings": 0, "citation": 0, "offline": 0, "secrets": 0, "distributed": 0,
    "local_models": 0, "testing": 0,
    # 1: the maths (pure torch) and the data
    "info": 1, "data": 1,
    # 2: losses and the evaluate metric modules
    "losses": 2, "metrics": 2,
    # 3-4: models, then the adapters that read them
    "models": 3, "adapters": 4,
    # 5: training
    "training_args": 5, "grad_cache": 5, "trainer": 5, "semi_supervised": 5, "callbacks": 5, "evaluation": 5,
    "card": 5, "hub": 5,
    # 6: runs from recipes
    "recipe": 6, "modes": 6, "factory": 6, "finetune": 6, "runs": 6, "preflight": 6, "compare": 6,
    # 7: entry points
    "cli": 7, "analysis": 7, "collapse_demo": 7,
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(name: str) -> list[tuple[str, int]]:
    """``(imported hf_infonc module, line)`` for every import in the module, lazy ones included;
    ``from pkg import sub`` counts as an import of ``pkg.sub`` when that is a module."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names if alias.name.startswith("hf_infonc")]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([module] if module else []))
            if not module.startswith("hf_infonc"):
                continue
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                found.append((sub if sub in MODULES else module, node.lineno))
    return found


def _layer(name: str) -> int:
    parts = name.split(".")[1:]
    for end in range(len(parts), 0, -1):
        key = ".".join(parts[:end])
        if key in LAYERS:
            return LAYERS[key]
    raise KeyError(name)


def test_every_module_has_a_layer():
    missing = [name for name in MODULES if name != "hf_infonc" and not _has_layer(name)]
    assert not missing, f"add these modules to LAYERS in tests/test_layering.py: {missing}"


def _has_layer(name: str) -> bool:
    try:
        _layer(name)
    except KeyError:
        return False
    return True


def test_imports_go_downwards_only():
    upward = []
    for name in MODULES:
        if name == "hf_infonc":
            continue
        for target, line in _imports(name):
            if target != "hf_infonc" and _layer(target) > _layer(name):
                upward.append(f"{MODULES[name].relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert not upward, "imports that go up a layer:\n" + "\n".join(upward)


def test_no_import_cycles():
    graph = {name: {t for t, _ in _imports(name) if t in MODULES and t != name} for name in MODULES}
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(path[path.index(nxt):] + [node, nxt]) if nxt in path else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, path + [node])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("hf_infonc.info")))
def test_info_is_pure_torch(name):
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    allowed = {"torch", "math", "numpy", "warnings", "dataclasses", "typing", "collections", "contextlib",
               "functools", "array", "struct", "itertools", "__future__", "hf_infonc"}
    bad = []
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module] if isinstance(node, ast.ImportFrom) and not node.level else [])
        bad += [n for n in names if n and n.split(".")[0] not in allowed]
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hf_infonc") and not node.module.startswith("hf_infonc.info"):
            bad.append(node.module)
    assert not bad, f"{name} imports {bad}: hf_infonc.info is pure torch"


def test_no_private_reach_ins():
    """``from hf_infonc.x import _name`` across modules: make the helper public instead."""
    reach = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hf_infonc"):
                own_package = node.module.rpartition(".")[0] == name.rpartition(".")[0] and "." in name[len("hf_infonc."):]
                for alias in node.names:
                    if alias.name.startswith("_") and not own_package:
                        reach.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.module}.{alias.name}")
    assert not reach, "private names imported from another module:\n" + "\n".join(reach)


def test_no_reference_outside_the_repository():
    """Code and help cite docs/theory.md, never a spec that does not ship."""
    cited = [str(p.relative_to(PACKAGE.parent)) for p in PACKAGE.rglob("*") if p.suffix in (".py", ".j2", ".md")
             and "SPEC" in p.read_text(encoding="utf-8")]
    assert not cited, f"these files cite SPEC (cite docs/theory.md): {cited}"
    assert (PACKAGE.parent / "docs" / "theory.md").is_file()


def test_one_citation():
    """The README, the card template and the metric modules carry the citation constants, not copies."""
    readme = README.read_text(encoding="utf-8")
    assert citation.EXPLORING in readme and citation.UNVEILING in readme
    copies = [str(p.relative_to(PACKAGE.parent)) for p in PACKAGE.rglob("*") if p.suffix in (".py", ".j2")
              and p.name != "citation.py" and "@article{song2024" in p.read_text(encoding="utf-8")]
    assert not copies, f"copies of the citation outside hf_infonc/citation.py: {copies}"
    assert "Chen, Jiansheng" in citation.EXPLORING and "Jiaxin" not in citation.CITATION
