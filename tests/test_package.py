"""The builder package's shape: its public API is exactly `__all__`, and no module imports another
that (directly or through others) imports it back — lazy imports inside functions included."""
import ast
import os

import tfrecords_builder

PACKAGE = os.path.dirname(tfrecords_builder.__file__)
PUBLIC = {
    "CLASS_NAMES", "S2_BANDS", "S1_BANDS", "BANDS", "MODALITY_BANDS", "BAND_SIZE", "BAND_DTYPE", "Partition",
    "DEFAULT_PARTITION", "SCHEMA_VERSION", "Manifest", "ManifestError", "load_manifest", "check_manifest",
    "iter_records", "BadPair", "read_patch", "band_paths", "GDAL_ENV", "Pair", "find_pairs", "MetadataError",
    "GENERATOR_VERSION", "ensure_synthetic_build", "BuildError", "write_scene", "OutputLock", "LockHeld", "__version__",
}


def test_public_api_is_exactly_all():
    assert set(tfrecords_builder.__all__) == PUBLIC and len(tfrecords_builder.__all__) == len(PUBLIC)
    for name in PUBLIC:
        assert getattr(tfrecords_builder, name) is not None, name
    public_modules = {n for n in vars(tfrecords_builder) if not n.startswith("_")} - PUBLIC
    # besides __all__, only the package's own submodules are attributes (as Python sets them)
    assert all(os.path.exists(os.path.join(PACKAGE, n + ".py")) or os.path.isdir(os.path.join(PACKAGE, n))
               for n in public_modules), public_modules


def _modules():
    """Dotted module name → file, for every .py file of the package."""
    out = {}
    for folder, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, f), os.path.dirname(PACKAGE))[:-3].split(os.sep)
                out[".".join(rel[:-1] if rel[-1] == "__init__" else rel)] = os.path.join(folder, f)
    return out


def _imports(name, path, modules):
    """The package modules `name` imports anywhere in its file."""
    is_package = path.endswith("__init__.py")
    here = name.split(".") if is_package else name.split(".")[:-1]
    found = set()
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = (here[: len(here) - node.level + 1] if node.level else [])
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
    return {m for m in found if m in modules and m != name}


def test_no_import_circle():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert graph["tfrecords_builder.cli"] and graph["tfrecords_builder.synth.cache"]  # the parser sees imports
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
