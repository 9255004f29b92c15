"""The house keeps its shape: arrows between folders point one way."""

from __future__ import annotations

import ast

import pytest

from careflow.settings import PROJECT_ROOT

#: what each folder may import from careflow's own packages
ALLOWED = {
    "careflow": {"careflow"},
    "segments": {"careflow", "segments"},
    "channels": {"careflow", "channels"},
    "webhooks": {"careflow", "webhooks"},
    "flows": {"careflow", "segments", "channels", "webhooks", "flows", "insight"},
    "insight": {"careflow", "segments", "insight"},
    "importers": {"careflow", "importers"},
    "service": {"careflow", "webhooks", "service"},
}
OURS = {
    "careflow", "segments", "channels", "webhooks", "flows", "importers", "demo", "cli", "service",
    "insight",
}


def _imports(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module.split(".")[0]


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_no_arrow_points_up(folder):
    wrong = {
        f"{path.relative_to(PROJECT_ROOT)} imports {name}"
        for path in (PROJECT_ROOT / folder).rglob("*.py")
        for name in _imports(path)
        if name in OURS and name not in ALLOWED[folder]
    }
    assert not wrong, sorted(wrong)


def _webhook_modules(path):
    """The webhooks/ modules ``path`` imports, by name (``twilio`` for webhooks.twilio)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        yield from (n.split(".")[1] for n in names if n.startswith("webhooks.") and "." in n)


def test_the_service_names_no_webhook_provider():
    """service/ serves whatever webhooks/registry.py holds: adding a provider never edits it."""
    shared = {"registry", "bodies"}
    wrong = {
        f"{path.relative_to(PROJECT_ROOT)} imports webhooks.{name}"
        for path in (PROJECT_ROOT / "service").rglob("*.py")
        for name in _webhook_modules(path)
        if name not in shared
    }
    assert not wrong, sorted(wrong)
