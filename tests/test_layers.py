"""The package's layering: inference and pseudo masks load model files without training code."""

import subprocess
import sys


def test_inference_cams_and_evaluation_do_not_import_lightning():
    code = (
        "import sys, segmix.models, segmix.pseudo, segmix.eval, segmix.infer\n"
        "print(sorted(m for m in ('lightning', 'torchmetrics', 'segmix.train') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_training_stages_do_import_it():  # the check above can fail: it sees Lightning when it is there
    code = "import sys, segmix.train\nprint('lightning' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"


def import_cycles(graph) -> list[list[str]]:
    """Groups of modules that import each other, directly or through others (imports inside
    functions included): the strongly connected components of more than one module."""
    order, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(module: str) -> None:
        order[module] = low[module] = len(order)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in order:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], order[imported])
        if low[module] == order[module]:
            group = []
            while not group or group[-1] != module:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in order:
            visit(module)
    return cycles


def test_no_module_imports_itself_through_others():
    import grimp

    assert import_cycles(grimp.build_graph("segmix")) == []


def test_the_cycle_check_finds_a_cycle():  # the check above can fail
    import grimp

    graph = grimp.ImportGraph()
    for a, b in (("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")):
        graph.add_import(importer=a, imported=b)
    assert import_cycles(graph) == [["p.a", "p.b", "p.c"]]
