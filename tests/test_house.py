"""The house keeps its shape: arrows between folders point one way."""

from __future__ import annotations

import ast

import pytest

from careflow.settings import PROJECT_ROOT

#: careflow's layers: the core (careflow's own modules, db/ and policy/) and its
#: subpackages; what each may import of careflow
PACKAGES = (
    "segments", "channels", "webhooks", "flows", "importers", "demo", "cli", "service", "insight",
    "journeys",
)
ALLOWED = {
    "core": {"core"},
    "segments": {"core", "segments"},
    "channels": {"core", "channels"},
    "webhooks": {"core", "webhooks"},
    "flows": {"core", "segments", "channels", "webhooks", "flows", "insight", "journeys"},
    "journeys": {"core", "segments", "journeys"},
    "insight": {"core", "segments", "insight"},
    "importers": {"core", "importers"},
    "service": {"core", "webhooks", "service"},
}


def _layer(dotted: str) -> str | None:
    """The layer a careflow module belongs to (None: not careflow's)."""
    parts = dotted.split(".")
    if parts[0] != "careflow":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in PACKAGES else "core"


def _imports(path):
    """The careflow modules ``path`` imports, by dotted name (``from careflow import
    flows`` imports careflow.flows)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield from (f"{node.module}.{a.name}" for a in node.names)


def _files(layer: str):
    root = PROJECT_ROOT / "careflow"
    if layer != "core":
        return (root / layer).rglob("*.py")
    # __main__.py is ``python -m careflow``: the CLI's, at the package's top
    return (
        p for p in root.rglob("*.py")
        if p.relative_to(root).parts[0] not in (*PACKAGES, "__main__.py")
    )


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_no_arrow_points_up(layer):
    wrong = {
        f"{path.relative_to(PROJECT_ROOT)} imports {name}"
        for path in _files(layer)
        for name in _imports(path)
        if (to := _layer(name)) is not None and to not in ALLOWED[layer]
    }
    assert not wrong, sorted(wrong)


def test_the_layer_check_sees_an_arrow_up():
    assert _layer("careflow.flows.route") == "flows"
    assert _layer("careflow.ledger") == _layer("careflow.db.models") == "core"
    assert _layer("prefect.flows") is None
    assert _layer("careflow.flows.route") not in ALLOWED["core"]


def _webhook_modules(path):
    """The careflow/webhooks/ modules ``path`` imports, by name (``twilio`` for webhooks.twilio)."""
    prefix = "careflow.webhooks."
    yield from (n[len(prefix):].split(".")[0] for n in _imports(path) if n.startswith(prefix))


def test_the_service_names_no_webhook_provider():
    """careflow/service/ serves whatever careflow/webhooks/registry.py holds: adding a
    provider never edits it."""
    shared = {"registry", "bodies"}
    wrong = {
        f"{path.relative_to(PROJECT_ROOT)} imports webhooks.{name}"
        for path in (PROJECT_ROOT / "careflow" / "service").rglob("*.py")
        for name in _webhook_modules(path)
        if name not in shared
    }
    assert not wrong, sorted(wrong)


def test_installing_careflow_adds_one_import_name(tmp_path):
    """``pip install careflow`` puts one top-level name into site-packages, careflow: the
    CLI, flows, channels and the rest are its subpackages, so nothing collides with a
    user's own ``cli`` or ``service``. Builds the wheel pip would install, offline."""
    import subprocess
    import sys
    import zipfile

    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--wheel-dir", str(tmp_path), str(PROJECT_ROOT)],
        check=True, capture_output=True,
    )
    (wheel,) = tmp_path.glob("careflow-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        top = {name.split("/")[0] for name in zf.namelist()}
        entry_points = zf.read(next(n for n in zf.namelist() if n.endswith("entry_points.txt")))
    assert {t for t in top if not t.endswith(".dist-info")} == {"careflow"}
    assert "careflow = careflow.cli:main" in entry_points.decode()


#: import edges inside careflow/ known to close a cycle, each with why it stays for now
KNOWN_CYCLE_EDGES: set[tuple[str, str]] = set()


def _core_modules() -> dict[str, object]:
    """careflow's modules by dotted name (a package by its own name), with their paths."""
    found = {}
    for path in (PROJECT_ROOT / "careflow").rglob("*.py"):
        parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
        if "migrations" in parts:
            continue
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _runtime_imports(tree):
    """Every import statement of a module, at its top or inside a function, except those
    only a type checker runs (``if TYPE_CHECKING:``)."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return [
        n for n in ast.walk(tree)
        if isinstance(n, ast.Import | ast.ImportFrom) and id(n) not in skip
    ]


def _core_import_graph() -> dict[str, set[str]]:
    modules = _core_modules()
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
                continue
            base = node.module or ""
            if node.level:
                base = ".".join(
                    [*package.split(".")[: len(package.split(".")) - node.level + 1], base]
                ).strip(".")
            for a in node.names:  # `from careflow import db` imports careflow.db
                targets.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
        graph[name] = {
            t for t in targets
            if t in modules and t != name and (name, t) not in KNOWN_CYCLE_EDGES
        }
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (its modules in order, the first again at the end)."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return path[path.index(name) :] + [name]
        if name in done:
            return None
        for target in sorted(graph[name]):
            if found := visit(target, [*path, name]):
                return found
        done.add(name)
        return None

    return next((c for name in sorted(graph) if (c := visit(name, []))), None)


def test_the_core_has_no_import_cycle():
    """careflow/ modules import each other one way: counting the imports inside functions,
    which otherwise hide a cycle until the function first runs."""
    cycle = _cycle(_core_import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
