"""The layering rules, checked by walking every drkit module's imports with ast.

CLI -> actions -> the service layer -> engines and profiles, all on drkit.model. No action
imports another action; the service layer (drkit.service) imports no action. Engines know no
profile, service or action;
a profile reaches another only through drkit.profiles.common (and the interface); the CLI never
imports an engine; only drkit.runner starts processes.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from drkit import profiles
from drkit.profiles.interface import ModuleProfile, Profile

PACKAGE = Path(__file__).resolve().parents[1] / "drkit"
SHARED_PROFILE_MODULES = {"drkit.profiles", "drkit.profiles.common", "drkit.profiles.interface"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Return every module path imports (from X import y counts as X and X.y)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


MODULES = {module_name(path): imported(path) for path in sorted(PACKAGE.rglob("*.py"))}


def offenders(prefix: str, forbidden) -> list[str]:
    return sorted(
        f"{name} imports {target}"
        for name, targets in MODULES.items()
        if name == prefix or name.startswith(prefix + ".")
        for target in targets
        if forbidden(name, target)
    )


def under(target: str, package: str) -> bool:
    return target == package or target.startswith(package + ".")


def test_the_walk_sees_every_layer():
    assert {"drkit.cli", "drkit.model", "drkit.engines.restic", "drkit.profiles.openssh"} <= set(
        MODULES
    )
    assert any(under(t, "drkit.profiles.common") for t in MODULES["drkit.profiles.openssh.config"])


def test_engines_import_no_profile_action_or_cli():
    def bad(name: str, target: str) -> bool:
        return any(
            under(target, package)
            for package in (
                "drkit.profiles",
                "drkit.service",
                "drkit.actions",
                "drkit.cli",
                "drkit.daemon",
            )
        )

    assert offenders("drkit.engines", bad) == []


def test_the_service_layer_imports_no_action_cli_or_daemon():
    def bad(name: str, target: str) -> bool:
        return any(under(target, p) for p in ("drkit.actions", "drkit.cli", "drkit.daemon"))

    assert "drkit.service.locate" in MODULES
    assert offenders("drkit.service", bad) == []


def test_no_action_imports_another_action():
    def bad(name: str, target: str) -> bool:
        if target == "drkit.actions" or not under(target, "drkit.actions"):
            return False
        return not under(target, name)

    assert offenders("drkit.actions", bad) == []


def test_model_imports_no_layer():
    layers = (
        "drkit.profiles",
        "drkit.service",
        "drkit.actions",
        "drkit.engines",
        "drkit.cli",
        "drkit.daemon",
    )
    assert offenders("drkit.model", lambda _, t: any(under(t, p) for p in layers)) == []


def test_no_profile_imports_another_profile():
    def bad(name: str, target: str) -> bool:
        if not under(target, "drkit.profiles") or target in SHARED_PROFILE_MODULES:
            return False
        if target.startswith(("drkit.profiles.common.", "drkit.profiles.interface.")):
            return False
        # a profile is drkit.profiles.<kind>, a module or a package whose modules share it
        return not under(target, ".".join(name.split(".")[:3]))

    assert offenders("drkit.profiles", bad) == []


def test_the_cli_imports_no_engine():
    assert offenders("drkit.cli", lambda _, target: under(target, "drkit.engines")) == []


def test_only_the_runner_starts_processes():
    def bad(name: str, target: str) -> bool:
        return name != "drkit.runner" and under(target, "subprocess")

    assert offenders("drkit", bad) == []


@pytest.mark.parametrize("kind", profiles.KINDS)
def test_every_kind_implements_the_declared_interface(kind: str):
    profile = profiles.get(kind)
    assert isinstance(profile, Profile) and profile.name == kind
    assert not inspect.isabstract(type(profile))
    for method in ("inventory", "checks", "smoke", "sandbox_config"):
        declared = list(inspect.signature(getattr(Profile, method)).parameters)[1:]  # no self
        if isinstance(profile, ModuleProfile):
            implemented = getattr(profile, f"{method}_of")
        else:
            implemented = getattr(profile, method)
        assert list(inspect.signature(implemented).parameters) == declared, (kind, method)
