"""GraphBuilder: the helper node authors use to describe an expansion."""
from execution.graph_builder import GraphBuilder, is_link


def test_prefixes_ids_links_and_finalize():
    GraphBuilder.set_default_prefix("12", 3)
    graph = GraphBuilder()
    assert graph.prefix == "12.3.0."
    a = graph.node("PrimitiveInt", value=1)
    b = graph.node("IntMath", a=a.out(0), b=2, operation="add")
    assert a.id == "12.3.0.1" and b.id == "12.3.0.2" and is_link(b.get_input("a"))
    assert GraphBuilder().prefix == "12.3.1."  # a second builder in the same call gets its own prefix
    assert graph.node("PrimitiveInt", id="1") is a and graph.lookup_node("2") is b
    b.set_override_display_id("7")
    out = graph.finalize()
    assert out["12.3.0.2"] == {"class_type": "IntMath", "inputs": {"a": ["12.3.0.1", 0], "b": 2,
                                                                   "operation": "add"},
                               "override_display_id": "7"}
    graph.replace_node_output("1", 0, 5)
    assert b.get_input("a") == 5
    b.set_input("b", None)
    assert "b" not in b.inputs
    graph.remove_node("1")
    assert list(graph.finalize()) == ["12.3.0.2"]
    explicit = GraphBuilder(prefix="p.")
    assert explicit.node("X").id == "p.1"
