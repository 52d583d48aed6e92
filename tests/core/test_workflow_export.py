"""export_workflow_filename: the submitted calls as a Python Workflow Definition JSON file,
nothing runs. Where the package python-workflow-definition is installed, the file is validated
with its model and run with its executorlib loader on this Executor."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest

from executorlib import Executor, SingleNodeExecutor, get_item_from_future, split_future
from tests.core import wf_funcs as wf


def load(path):
    return json.loads(path.read_text())


def by_id(workflow):
    return {n["id"]: n for n in workflow["nodes"]}


def test_the_workflow_of_the_pwd_example(tmp_path):
    target = tmp_path / "workflow.json"
    with SingleNodeExecutor(export_workflow_filename=str(target)) as exe:
        prod_div = exe.submit(wf.get_prod_and_div, x=1, y=2)
        summed = exe.submit(wf.get_sum, x=get_item_from_future(prod_div, "prod"),
                            y=get_item_from_future(prod_div, "div"))
        last = exe.submit(wf.get_square, summed)  # positional: the port is the parameter's name
        assert last.result(timeout=5) is None and prod_div.done()  # nothing ran
        assert exe.info["export_workflow_filename"] == str(target)
    assert not target.with_suffix(".png").exists()
    workflow = load(target)
    assert workflow["version"] == "0.1.0"
    nodes = by_id(workflow)
    functions = [n["value"] for n in workflow["nodes"] if n["type"] == "function"]
    assert functions == ["tests.core.wf_funcs.get_prod_and_div", "tests.core.wf_funcs.get_sum",
                         "tests.core.wf_funcs.get_square"]
    inputs = {n["name"]: n["value"] for n in workflow["nodes"] if n["type"] == "input"}
    assert inputs == {"x": 1, "y": 2}
    edges = {(nodes[e["source"]].get("value", nodes[e["source"]].get("name")), e["sourcePort"],
              nodes[e["target"]].get("value", nodes[e["target"]].get("name")), e["targetPort"])
             for e in workflow["edges"]}
    assert ("tests.core.wf_funcs.get_prod_and_div", "prod", "tests.core.wf_funcs.get_sum", "x") in edges
    assert ("tests.core.wf_funcs.get_prod_and_div", "div", "tests.core.wf_funcs.get_sum", "y") in edges
    assert ("tests.core.wf_funcs.get_sum", None, "tests.core.wf_funcs.get_square", "x") in edges
    assert ("tests.core.wf_funcs.get_square", None, "result", None) in edges
    (output,) = [n for n in workflow["nodes"] if n["type"] == "output"]
    assert output["name"] == "result"


def test_lists_dicts_numpy_and_shared_inputs(tmp_path):
    target = tmp_path / "wf.json"
    with Executor(export_workflow_filename=target) as exe:
        a = exe.submit(wf.get_sum, 1, 2)
        b = exe.submit(wf.get_sum, 1, 3)  # x=1 again: the same input node
        c = exe.submit(wf.total, [a, b, 4], offset=np.int64(5))
        exe.submit(wf.merge, first=c, second={"n": a}, data=np.arange(3))
    workflow = load(target)
    nodes = by_id(workflow)
    values = [n["value"] for n in workflow["nodes"] if n["type"] == "function"]
    assert values.count("python_workflow_definition.shared.get_list") == 1
    assert values.count("python_workflow_definition.shared.get_dict") == 1
    inputs = [(n["name"], n["value"]) for n in workflow["nodes"] if n["type"] == "input"]
    assert ("x", 1) in inputs and inputs.count(("x", 1)) == 1
    assert ("y_1", 3) in inputs  # a second value for the same parameter gets its own name
    assert ("offset", 5) in inputs and ("data", [0, 1, 2]) in inputs
    into_list = [e for e in workflow["edges"] if nodes[e["target"]].get("value", "").endswith("get_list")]
    assert sorted(e["targetPort"] for e in into_list) == ["0", "1", "2"]


@pytest.mark.parametrize("call, match", [
    (lambda exe: exe.submit(lambda x: x, 1), "module.function"),
    (lambda exe: exe.submit(functools.partial(wf.get_sum, 1), 2), "module.function"),
    (lambda exe: exe.submit(wf.only_positional, 1), "positional-only"),
    (lambda exe: exe.submit(wf.get_square, object()), "not a JSON value"),
    (lambda exe: exe.submit(wf.get_square, split_future(exe.submit(wf.pair, 1, 2), 2)[0]), "index"),
])
def test_what_the_format_cannot_hold_is_an_error_at_submit(tmp_path, call, match):
    target = tmp_path / "wf.json"
    with SingleNodeExecutor(export_workflow_filename=str(target)) as exe:
        with pytest.raises(ValueError, match=match):
            call(exe)
        exe.submit(wf.get_square, 3)  # the Executor goes on
    workflow = load(target)
    assert [n["value"] for n in workflow["nodes"] if n["type"] == "function"][-1].endswith("get_square")


def test_a_future_of_another_executor_is_an_error(tmp_path):
    with Executor() as other:
        foreign = other.submit(wf.get_square, 2)
        foreign.result(timeout=60)
        with Executor(export_workflow_filename=tmp_path / "wf.json") as exe:
            with pytest.raises(ValueError, match="did not record"):
                exe.submit(wf.get_square, foreign)


def test_export_and_plot_together(tmp_path):
    with Executor(export_workflow_filename=tmp_path / "wf.json", plot_dependency_graph=True,
                  plot_dependency_graph_filename=str(tmp_path / "g.dot")) as exe:
        exe.submit(wf.get_square, exe.submit(wf.get_sum, 1, 2))
    assert "get_sum" in (tmp_path / "g.dot").read_text()
    assert len(load(tmp_path / "wf.json")["edges"]) == 4  # x, y, x, result


def test_an_empty_workflow_and_a_bad_filename(tmp_path):
    with Executor(export_workflow_filename=tmp_path / "empty.json"):
        pass
    assert load(tmp_path / "empty.json") == {"version": "0.1.0", "nodes": [], "edges": []}
    with pytest.raises(ValueError, match="must name a file"):
        Executor(export_workflow_filename=tmp_path)


def test_the_pwd_package_validates_and_runs_the_exported_workflow(tmp_path):
    pytest.importorskip("python_workflow_definition")
    from python_workflow_definition.executorlib import load_workflow_json
    from python_workflow_definition.models import PythonWorkflowDefinitionWorkflow

    target = tmp_path / "workflow.json"
    with SingleNodeExecutor(export_workflow_filename=str(target)) as exe:
        prod_div = exe.submit(wf.get_prod_and_div, x=1, y=2)
        summed = exe.submit(wf.get_sum, x=get_item_from_future(prod_div, "prod"),
                            y=get_item_from_future(prod_div, "div"))
        exe.submit(wf.total, [summed, 1], offset=exe.submit(wf.get_square, 2))
    PythonWorkflowDefinitionWorkflow.load_json_file(file_name=str(target))
    with SingleNodeExecutor() as exe:
        assert load_workflow_json(file_name=str(target), exe=exe).result(timeout=60) == 2.5 + 1 + 4
