"""The shape of the code: no import cycles, one record per component kind, one source of defaults."""

from __future__ import annotations

import ast
import inspect
import re
from dataclasses import fields
from pathlib import Path

from vaekit import hookspecs, kinds
from vaekit.config import RunConfig

ROOT = Path(__file__).resolve().parent.parent
FLAGS_PAGE = ROOT / "docs" / "usage.md"  # holds the "`vaekit run` flags" table


def modules() -> dict[str, Path]:
    """vaekit's modules by dotted name, the built-in plugins as installed (vaekit.default_plugins.*)."""
    out = {}
    for path in (ROOT / "vaekit").rglob("*.py"):
        parts = ("vaekit",) + path.relative_to(ROOT / "vaekit").with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for path in (ROOT / "plugins").glob("*.py"):
        name = "vaekit.default_plugins" + ("" if path.stem == "__init__" else f".{path.stem}")
        out[name] = path
    return out


def imports_of(path: Path, known: set[str], name: str) -> set[str]:
    """Every vaekit module that module ``name`` (at ``path``) imports, at module level or inside functions:
    ``import vaekit.x``, ``from vaekit import x``, relative imports (``from . import x``, ``from .x import y``)
    and ``importlib.import_module("vaekit.x")`` / ``import_module(".x", "vaekit")`` / ``__import__`` with a
    literal name."""
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        for imported in names_imported(node, package, known):
            while imported and imported not in known:  # vaekit.model.VAE → vaekit.model
                imported = imported.rpartition(".")[0]
            if imported:
                found.add(imported)
    return found


def names_imported(node: ast.AST, package: str, known: set[str]) -> list[str]:
    """The dotted names one AST node imports (in module ``package``): none for a node that imports nothing."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative: from the module's package, one level up per extra dot
            parts = package.split(".")[:len(package.split(".")) - (node.level - 1)]
            base = ".".join(parts + ([node.module] if node.module else []))
        # `from vaekit import x` imports module vaekit.x when there is one, else a name of vaekit.
        return [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names] if base else []
    if isinstance(node, ast.Call) and dynamic_import(node):
        target, anchor = (arg.value if isinstance(arg, ast.Constant) else None for arg in (node.args + [None])[:2])
        if not isinstance(target, str):
            return []
        if target.startswith("."):  # import_module(".x", "vaekit")
            dots = len(target) - len(target.lstrip("."))
            root = anchor if isinstance(anchor, str) else package
            target = ".".join(root.split(".")[:len(root.split(".")) - (dots - 1)] + [target[dots:]])
        return [target]
    return []


def dynamic_import(call: ast.Call) -> bool:
    """``importlib.import_module(...)``, ``import_module(...)`` or ``__import__(...)`` with arguments."""
    func = call.func
    called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    return called in ("import_module", "__import__") and bool(call.args)


def test_the_import_parser_sees_relative_and_dynamic_imports(tmp_path):
    """Each way a module can import another, in a function, as the two tests below read them."""
    known = {"vaekit", "vaekit.run", "vaekit.model", "vaekit.default_plugins", "vaekit.default_plugins.dense"}
    code = {
        "from . import run": {"vaekit.run"},
        "from .run import run": {"vaekit.run"},
        "from .model import VAE": {"vaekit.model"},
        "import vaekit.run": {"vaekit.run"},
        "from vaekit import run, model": {"vaekit.run", "vaekit.model"},
        "import importlib\nimportlib.import_module('vaekit.run')": {"vaekit.run"},
        "from importlib import import_module\nimport_module('.run', 'vaekit')": {"vaekit.run"},
        "__import__('vaekit.run')": {"vaekit.run"},
        "from .. import run": {"vaekit.run"},  # from a built-in plugin
        "from ..default_plugins import dense": {"vaekit.default_plugins.dense"},
    }
    for i, (line, expected) in enumerate(code.items()):
        path = tmp_path / f"m{i}.py"
        path.write_text("def f():\n" + "".join(f"    {part}\n" for part in line.split("\n")))
        name = "vaekit.default_plugins.m" if line.startswith("from ..") else "vaekit.m"
        assert imports_of(path, known, name) == expected, line


def test_no_import_cycles_between_vaekit_modules_function_level_imports_included():
    mods = modules()
    graph = {name: imports_of(path, set(mods), name) - {name} for name, path in mods.items()}
    assert graph["vaekit.commands.run"] >= {"vaekit.training", "vaekit.runlog", "vaekit.components"}  # the parser sees imports
    cycles = []

    def visit(node, stack, on_stack, done):
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt in on_stack:
                cycles.append(" → ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in done:
                visit(nxt, stack, on_stack, done)
        on_stack.discard(stack.pop())
        done.add(node)

    done: set[str] = set()
    for name in sorted(graph):
        if name not in done:
            visit(name, [], set(), done)
    assert cycles == []


def test_nothing_imports_run_but_the_cli():
    """run.py is the top of the run path, not a hub of helpers."""
    mods = modules()
    importers = {name for name, path in mods.items() if "vaekit.commands.run" in imports_of(path, set(mods), name)}
    assert importers == {"vaekit.cli"}


def commands(mods: dict[str, Path]) -> set[str]:
    """The commands' modules (docs/contributing.md's second layer): the CLI and vaekit.commands.*; everything
    else in vaekit/ is the library under them."""
    return {"vaekit.cli", "vaekit.__main__"} | {n for n in mods if n.startswith("vaekit.commands.")}


def test_commands_live_in_vaekit_commands_and_the_library_imports_none_of_them():
    """The layout shows the layers: each command's code is a module of vaekit.commands, and no module of the
    library (nor a built-in plugin) imports one."""
    mods = modules()
    assert {"vaekit.commands.run", "vaekit.commands.tune", "vaekit.commands.explore"} <= commands(mods)
    for name, path in mods.items():
        if name not in commands(mods) and name != "vaekit.commands":
            assert imports_of(path, set(mods), name) & commands(mods) == set(), name


def test_no_command_imports_another_command():
    """What two commands share (the trial runner of sweep and tune, loading a logged run) lives in the library."""
    mods = modules()
    sweep = "vaekit.commands.sweep"
    assert "vaekit.launcher" in imports_of(mods[sweep], set(mods), sweep)  # the parser sees what it imports
    imported = {name: imports_of(mods[name], set(mods), name) & (commands(mods) - {name})
                for name in commands(mods) - {"vaekit.cli", "vaekit.__main__"}}
    assert {name: found for name, found in imported.items() if found} == {}


def test_a_logged_run_is_loaded_by_the_library_not_through_a_command():
    """vaekit.logged (open_run, load_model, build_vocoders, load_test_set) imports no command module, and
    explore and export load a run through it, not through generate."""
    mods = modules()
    assert "vaekit.logged" in imports_of(mods["vaekit.commands.explore"], set(mods), "vaekit.commands.explore")
    assert imports_of(mods["vaekit.logged"], set(mods), "vaekit.logged") & commands(mods) == set()
    for command in ("vaekit.commands.explore", "vaekit.commands.export"):
        assert "vaekit.commands.generate" not in imports_of(mods[command], set(mods), command), command


def test_run_reads_top_to_bottom_in_at_most_60_lines():
    from vaekit.commands.run import run

    lines, _ = inspect.getsourcelines(run)
    assert len(lines) <= 60, len(lines)


def test_kinds_and_hook_specs_match_one_to_one():
    specs = {n for n in dir(hookspecs) if n.startswith("register_")}
    assert specs == {k.hook for k in kinds.KINDS}
    for kind in kinds.KINDS:  # the spec documents the same contract the record holds
        doc = inspect.getdoc(getattr(hookspecs, kind.hook))
        assert all(arg in doc for arg in kind.contract), (kind.hook, doc)
    # Each built-in kind has a RunConfig field (its flag; an added kind is selected by --component), and every kind
    # is listed by `vaekit plugins`.
    assert {k.name for k in kinds.KINDS} <= {f.name for f in fields(RunConfig)}
    from click.testing import CliRunner

    from vaekit.cli import main

    listing = CliRunner().invoke(main, ["plugins"]).output
    assert [line[:-1] for line in listing.splitlines() if not line.startswith(" ")] == [k.plural for k in kinds.KINDS]


def documented_flags() -> set[str]:
    section = FLAGS_PAGE.read_text().split("`vaekit run` flags", 1)[1].split("\n\n", 2)[1]
    return set(re.findall(r"`(--[a-z-]+)", section))


def test_every_setting_has_a_flag_with_its_default_in_help_and_a_docs_row():
    from click.testing import CliRunner

    from vaekit.cli import main, run

    flags = {opt for p in run.params for opt in p.opts}
    documented = documented_flags()
    help_text = " ".join(CliRunner().invoke(main, ["run", "--help"], terminal_width=10_000).output.split())
    for f in fields(RunConfig):
        flag = {"options": "--option", "components": "--component"}.get(f.name, "--" + f.name.replace("_", "-"))
        assert flag in flags, flag
        assert flag in documented, f"docs/usage.md's flags table has no row for {flag}"
        shown = f.metadata["shown"] if f.metadata["shown"] is not None else f.default
        if isinstance(shown, (str, int, float)) and not isinstance(shown, bool):
            assert f"[{shown}]" in help_text, (flag, shown)


def test_every_built_in_component_says_what_it_is():
    from vaekit.components import all_components

    for kind in kinds.names():
        for comp in all_components(kind).values():
            if comp.plugin.startswith("vaekit.default_plugins"):
                assert comp.description, f"{kind} {comp.name!r} ({comp.plugin}) has no docstring"


#: What `vaekit --help`, `vaekit plugins` and the like must not import: a backend, Keras, MLflow or librosa
#: (seconds of start-up each; these commands are what a user types first).
HEAVY = ("keras", "tensorflow", "jax", "torch", "mlflow", "librosa")


def test_help_and_plugins_list_everything_without_importing_a_backend_mlflow_or_librosa():
    """One fresh process (the only way to see what is imported): ``python -m vaekit --help`` through the
    package's ``__main__``, then ``plugins``, ``plugins --json`` and each command's ``--help``."""
    import json
    import subprocess
    import sys

    from vaekit.cli import main

    commands = sorted(main.commands)
    code = f"""
import contextlib, io, json, runpy, sys
out = io.StringIO()
sys.argv = ["vaekit", "--help"]
with contextlib.redirect_stdout(out):
    try:
        runpy.run_module("vaekit", run_name="__main__")  # python -m vaekit --help
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code
from click.testing import CliRunner
from vaekit.cli import main
outputs = {{"-m vaekit --help": out.getvalue()}}
for args in [["plugins"], ["plugins", "--json"], *[[c, "--help"] for c in {commands!r}]]:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, (args, result.output)
    outputs[" ".join(args)] = result.output
print(json.dumps({{"outputs": outputs, "imported": sorted(m for m in {HEAVY!r} if m in sys.modules)}}))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.splitlines()[-1])
    assert got["imported"] == []
    outputs = got["outputs"]
    listed = [line.split()[0] for line in outputs["-m vaekit --help"].split("Commands:", 1)[1].splitlines() if line.strip()]
    assert sorted(listed) == commands and {"run", "plugins", "sweep", "tune", "explore"} <= set(listed)
    assert [line[:-1] for line in outputs["plugins"].splitlines() if not line.startswith(" ")] == [k.plural for k in kinds.KINDS]
    assert "fastgl" in outputs["plugins"] and "conv2" in outputs["plugins"]
    assert {c["name"] for c in json.loads(outputs["plugins --json"])["vocoder"]} >= {"griffinlim", "fastgl"}
    assert "--grid" in outputs["sweep --help"] and "--space" in outputs["tune --help"]
