"""The layering the README's "How it works" states: every module of the package is listed there,
in the order data flows, and none imports (at the top or inside a function) a module listed
after it; `bench/` scripts import only public names of the package's modules, never `cli`."""
import ast
import re
from pathlib import Path

from helpers import REPO

PACKAGE = REPO / "src" / "compete"
ENTRY_POINTS = {"__init__", "__main__"}  # `python -m compete` runs cli; nothing imports these


def readme_layers() -> list[str]:
    """Module names in the order of the README's "How it works" block (one `name.py` a line)."""
    section = (REPO / "README.md").read_text().split("## How it works", 1)[1]
    block = section.split("```", 2)[1]
    return [match[1] for match in re.finditer(r"^(\w+)\.py\s", block, re.M)]


def package_imports(path: Path) -> set[str]:
    """The package's modules that the file at `path` imports, relatively or as compete.X."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            parts = (node.module or "").split(".")
            if node.level == 1 or parts[0] == "compete":
                inner = parts[1:] if parts[0] == "compete" else parts
                found |= {inner[0]} if inner and inner[0] else {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("compete.")}
    return found - {path.stem}


def test_the_readme_lists_every_module_once():
    layers = readme_layers()
    modules = {path.stem for path in PACKAGE.glob("*.py")} - ENTRY_POINTS
    assert len(layers) == len(set(layers)), "a module is listed twice"
    assert set(layers) == modules, f"unlisted: {sorted(modules - set(layers))}, " \
                                   f"gone: {sorted(set(layers) - modules)}"


def test_no_module_imports_one_listed_after_it():
    layers = readme_layers()
    upward = [f"{module}.py imports {imported}.py"
              for position, module in enumerate(layers)
              for imported in sorted(package_imports(PACKAGE / f"{module}.py"))
              if imported in layers and layers.index(imported) > position]
    assert not upward, upward


def test_the_layer_check_sees_an_upward_import(tmp_path):
    """package_imports finds the forms the package uses, so the check above can fail."""
    sample = tmp_path / "data.py"
    sample.write_text("from .config import Member\nfrom . import runs\n\n"
                      "def late():\n    from compete.cli import main\n    import compete.report\n")
    assert package_imports(sample) == {"config", "runs", "cli", "report"}


def bench_violations(path: Path) -> list[str]:
    """Names a bench script takes from the package that are private or from cli."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "compete":
            module = node.module.split(".")[1] if "." in node.module else None
            names = [alias.name for alias in node.names]
            found += [f"{node.module}.{name}" for name in names
                      if name.startswith("_") or "cli" in (module, name)]
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names
                      if alias.name.startswith("compete.") and alias.name.split(".")[1] == "cli"]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__") \
                and isinstance(node.value, ast.Name) and node.value.id in package_names(path):
            found.append(f"{node.value.id}.{node.attr}")
    return found


def package_names(path: Path) -> set[str]:
    """Local names bound to the package's modules in a script (`from compete import data`)."""
    return {alias.asname or alias.name for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ImportFrom) and node.module == "compete" for alias in node.names}


def test_bench_imports_only_public_names_and_never_cli():
    scripts = sorted((REPO / "bench").glob("*.py"))
    assert scripts
    assert {str(path.name): bench_violations(path) for path in scripts} == {path.name: [] for path in scripts}


def test_the_bench_check_sees_private_names_and_cli(tmp_path):
    script = tmp_path / "bad.py"
    script.write_text("from compete.cli import main\nfrom compete.data import _decode_all, load_train\n"
                      "from compete import data\nimport compete.cli\ndata._cache_key(1)\n")
    assert sorted(bench_violations(script)) == ["compete.cli", "compete.cli.main", "compete.data._decode_all",
                                                "data._cache_key"]


MOST_PARAMETERS = 6      # a function taking more wants its arguments grouped into the objects they are
MOST_OVER = 6            # functions allowed above MOST_PARAMETERS (today: the submission format's three,
                         # the own CNN's constructor, data.load_images and its message)
MOST_LINES = 50          # a longer function is a design smell (STYLE.md)


def functions(path: Path):
    """(name, parameters without self/cls, lines) of every function in the file at `path`."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
            names = names[1:] if names[:1] in (["self"], ["cls"]) else names
            count = len(names) + (args.vararg is not None) + (args.kwarg is not None)
            yield f"{path.name}:{node.lineno} {node.name}", count, node.end_lineno - node.lineno + 1


def test_functions_stay_short_and_take_few_parameters():
    found = [entry for path in sorted(PACKAGE.glob("*.py")) for entry in functions(path)]
    many = [name for name, count, _ in found if count > MOST_PARAMETERS]
    long = [f"{name} ({lines} lines)" for name, _, lines in found if lines > MOST_LINES]
    assert len(many) <= MOST_OVER, f"{len(many)} functions take over {MOST_PARAMETERS} parameters: {many}"
    assert not long, f"functions over {MOST_LINES} lines: {long}"
