"""The shape of the code: the Keras side uses the builder only through its public API, and no
module of either package imports another that imports it back."""
import ast
import os

import tfrecords_builder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _imports(package: str):
    """(file, imported module, imported names) of every import in a package, lazy ones included."""
    for folder, _, files in os.walk(os.path.join(REPO, package)):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                module = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".").removesuffix(".__init__")
                with open(path, encoding="utf-8") as f:
                    tree = ast.parse(f.read())
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        for alias in node.names:
                            yield module, alias.name, []
                    elif isinstance(node, ast.ImportFrom):
                        base = module if os.path.basename(path) == "__init__.py" else module.rsplit(".", 1)[0]
                        for _ in range(node.level - 1):
                            base = base.rsplit(".", 1)[0]
                        target = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
                        yield module, target, [a.name for a in node.names]


def test_keras_side_imports_only_the_builders_public_api():
    bad = [(m, t, names) for m, t, names in _imports("tf_fusion")
           if t.startswith("tfrecords_builder") and (t != "tfrecords_builder" or set(names) - set(tfrecords_builder.__all__))]
    assert not bad, bad


def test_builder_knows_nothing_of_keras():
    bad = [(m, t) for m, t, _ in _imports("tfrecords_builder") if t.split(".")[0] in ("tf_fusion", "tensorflow", "keras")]
    assert not bad, bad


def test_no_import_circle_in_tf_fusion():
    edges = {}
    for module, target, names in _imports("tf_fusion"):
        if target.startswith("tf_fusion"):
            # `from . import x` names submodules
            targets = [f"{target}.{n}" for n in names if os.path.exists(os.path.join(REPO, *f"{target}.{n}".split(".")) + ".py")] or [target]
            edges.setdefault(module, set()).update(t for t in targets if t != module)

    def reaches(start, goal, seen=()):
        return any(n == goal or (n not in seen and reaches(n, goal, seen + (n,))) for n in edges.get(start, ()))

    circles = [m for m in edges if reaches(m, m)]
    assert not circles, circles
