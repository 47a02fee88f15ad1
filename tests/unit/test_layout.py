"""The layout shows the architecture: the parts of research/ import each other in one direction only,
and so do the files inside each part."""
from __future__ import annotations

import ast
from pathlib import Path

RESEARCH = Path(__file__).resolve().parents[2] / "research"


def part_of(module: str) -> str:
    """research.training.loop -> training, research.config -> config: a subpackage or a top-level module."""
    return module.split(".")[1]


def imported_modules(path: Path) -> set[str]:
    """Every research.* module `path` imports, also inside functions and TYPE_CHECKING blocks."""
    package = ".".join(path.relative_to(RESEARCH.parent).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(filter(None, [base, node.module]))
            found |= {module} if node.module else {f"{module}.{alias.name}" for alias in node.names}
    return {module for module in found if module.startswith("research.")}


def part_graph() -> dict[str, dict[str, list[str]]]:
    """part -> {imported part: [the importing files]}."""
    graph: dict[str, dict[str, list[str]]] = {}
    for path in sorted(RESEARCH.rglob("*.py")):
        importer = part_of(".".join(path.relative_to(RESEARCH.parent).with_suffix("").parts)) \
            if path.parent != RESEARCH or path.stem != "__init__" else "__init__"
        for module in imported_modules(path):
            if part_of(module) != importer:
                graph.setdefault(importer, {}).setdefault(part_of(module), []).append(
                    str(path.relative_to(RESEARCH.parent)))
    return graph


def find_cycle(graph: dict[str, dict[str, list[str]]]) -> list[str] | None:
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in graph.get(node, {}):
            if state.get(nxt) == "open":
                return trail[trail.index(nxt):] + [node, nxt] if nxt in trail else [node, nxt]
            if nxt not in state and (cycle := visit(nxt, trail + [node])):
                return cycle
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node, [])):
            return cycle
    return None


def test_no_part_of_research_imports_a_part_that_imports_it():
    graph = part_graph()
    assert {"training", "detached", "sweeps", "dist"} <= set(graph)        # the scan found the packages
    cycle = find_cycle(graph)
    assert cycle is None, "research/ parts import each other in a circle: " + " -> ".join(
        f"{a} ({', '.join(sorted(set(graph[a][b])))})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


def file_graph(package: Path) -> dict[str, dict[str, list[str]]]:
    """Inside one package: file -> {file of the same package it imports: [itself]}."""
    prefix = ".".join(package.relative_to(RESEARCH.parent).parts) + "."
    graph: dict[str, dict[str, list[str]]] = {}
    for path in sorted(package.glob("*.py")):
        name = path.stem
        for module in imported_modules(path):
            if module.startswith(prefix):
                other = module[len(prefix):].split(".")[0]
                if other != name and (package / f"{other}.py").exists():
                    graph.setdefault(name, {}).setdefault(other, []).append(str(path.relative_to(RESEARCH.parent)))
    return graph


def test_no_file_imports_a_file_of_its_package_that_imports_it():
    packages = [p for p in sorted(RESEARCH.iterdir()) if (p / "__init__.py").is_file()]
    assert {"training", "tracking", "data"} <= {p.name for p in packages}
    assert "job" in file_graph(RESEARCH / "training")               # the scan sees the files' imports
    for package in packages:
        graph = file_graph(package)
        cycle = find_cycle(graph)
        assert cycle is None, f"research/{package.name}/: " + " -> ".join(f"{a}.py" for a in cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b": ["x"]}, "b": {"c": ["y"]}, "c": {"a": ["z"]}}) is not None
    assert find_cycle({"a": {"b": ["x"]}, "b": {"c": ["y"]}}) is None


RUN_DIR_FILES = RESEARCH / "rundir" / "files.py"
# Spelled elsewhere on purpose: the exported model folder's own recipe (RUN_DIR/model/recipe.yaml, a deployable
# copy that travels without its run directory) is its owner's constant.
OTHER_OWNERS = {("recipe.yaml", "research/model/export.py")}
NOT_REFUSED = {"model"}        # also the MLflow artifact path of the logged model and an argument's name


def run_dir_file_names() -> set[str]:
    """The names research/rundir/files.py holds (its module-level string constants)."""
    tree = ast.parse(RUN_DIR_FILES.read_text())
    return {node.value.value for node in tree.body if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)}


def spelled_in(path: Path, names: set[str], where: str) -> list[str]:
    """'where:line "name"' for every string literal in `path` equal to one of `names`, except its other owners'."""
    return [f'{where}:{node.lineno} "{node.value}"' for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and node.value in names and (node.value, where) not in OTHER_OWNERS]


def test_a_run_directory_file_is_named_by_its_owner_alone():
    names = run_dir_file_names() - NOT_REFUSED
    assert {"run.json", "status.json", "console.log", "checkpoints"} <= names      # the scan reads the owner
    spelled = [hit for path in sorted([*RESEARCH.rglob("*.py"), *(RESEARCH.parent / "tools").glob("*.py")])
               if path != RUN_DIR_FILES for hit in spelled_in(path, names, str(path.relative_to(RESEARCH.parent)))]
    assert not spelled, ("a run directory's file spelled outside research/rundir/files.py (import its constant): "
                         + ", ".join(spelled))


def test_the_file_name_scan_finds_a_name_spelled_in_code_not_in_a_sentence(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text('PATH = "status.json"\nSAID = f"see {PATH} or the status.json beside it"\n')
    assert spelled_in(probe, {"status.json"}, "probe.py") == ['probe.py:1 "status.json"']
