"""The package's import graph has no loops and points down the stack of layers (ARCHITECTURE.md): every
``import`` statement counts, those inside functions included, so a loop cannot hide behind a late import."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "artok"

# the stack, lowest first: a module may import modules of its own layer or of a layer below
LAYERS = [
    ["config"],
    ["checkpoint", "model_card"],
    ["quantizers", "encoders", "models", "schedulers"],
    ["tokenizers"],
    ["sampling", "pipeline", "hub", "registry"],  # hub and registry: the old names, re-exported
    ["data", "losses", "metrics"],
    ["training", "convert"],
    ["commands", "recipes"],
    ["cli", "__main__"],
]
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name → file, for every module and package of artok."""
    out = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module → the artok modules it imports anywhere in its file. ``from a.b import c`` points at the module
    ``a.b.c`` when there is one, else at ``a.b``; relative imports are resolved."""
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in mods else base for alias in node.names]
            for target in targets:
                while target and target not in mods:  # `import artok.a.b.c` of a name inside a.b: a.b
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges[name].add(target)
    return edges


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components of more than one module (the loops)."""
    index, low, on_stack, stack, loops = {}, {}, set(), [], []
    counter = 0
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    component = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.append(w)
                        if w == v:
                            break
                    if len(component) > 1:
                        loops.append(sorted(component))
    return loops


def layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return len(LAYERS)  # the package face sits above everything
    if parts[1] not in RANK:
        raise AssertionError(f"{module} is in no layer of the stack: add artok.{parts[1]} to LAYERS in this test "
                             "and to the stack of ARCHITECTURE.md")
    return RANK[parts[1]]


def test_the_cycle_finder_finds_a_loop_hidden_in_a_function(tmp_path):
    pkg = tmp_path / "artok"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from artok.sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import thing\n")
    (pkg / "c.py").write_text("import artok.a\n")
    edges = import_graph(modules(pkg))
    assert edges["artok.sub.b"] == {"artok.a"} and edges["artok.c"] == {"artok.a"}
    assert strongly_connected(edges) == [["artok.a", "artok.sub.b"]]


def test_no_import_loop_among_artok_modules():
    loops = strongly_connected(import_graph(modules()))
    assert not loops, "import loops (each line one strongly connected component): " + "; ".join(
        " <-> ".join(c) for c in loops)


def test_every_import_points_down_the_stack_of_layers():
    edges = import_graph(modules())
    upward = sorted(f"{a} -> {b}" for a, targets in edges.items() for b in targets
                    if a != "artok" and layer(b) > layer(a))
    assert not upward, "imports of a higher layer: " + ", ".join(upward)


def test_the_package_face_imports_nothing_and_every_name_it_offers_resolves():
    import artok

    assert not import_graph(modules())["artok"], "artok/__init__.py must load its names lazily"
    for name in artok.__all__:
        assert getattr(artok, name) is not None, name


@pytest.mark.parametrize("statement, absent", [
    ("import artok", ("torch", "artok.models", "diffusers", "accelerate")),
    ("import artok.encoders", ("artok.models", "artok.tokenizers", "diffusers", "accelerate")),
    ("import artok.config", ("artok.models", "diffusers", "accelerate")),
])
@pytest.mark.slow  # spawns processes or trains for seconds; .ci/run runs it
def test_importing_artok_loads_no_model_diffusers_or_accelerate(statement, absent):
    code = f"{statement}; import sys; print(' '.join(m for m in {absent!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert not loaded, f"`{statement}` loaded {loaded}"


@pytest.mark.slow  # spawns processes or trains for seconds; .ci/run runs it
def test_the_public_names_still_resolve_from_where_they_were_after_a_bare_import():
    code = ("import artok; from artok.hub import Pipeline, CheckpointError, from_pretrained; "
            "from artok.registry import build_tokenizer, generator_config, HART_PRESETS; "
            "from artok.data import TokenDataset; import artok.data.tokens; "
            "assert artok.hub.Pipeline is artok.Pipeline and artok.sampling.generate and artok.convert.var_vqvae; "
            "assert artok.convert.hart_tokenizer and artok.convert.var_transformer and artok.convert.hart_transformer; "
            "assert artok.convert.hart_diffusion_head and artok.from_pretrained and artok.build_generator")
    subprocess.run([sys.executable, "-c", code], check=True)
