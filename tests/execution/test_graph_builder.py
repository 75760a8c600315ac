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


def test_replace_node_output_with_none_disconnects_every_consumer_of_that_output_only():
    graph = GraphBuilder(prefix="q.")
    a = graph.node("A")
    b = graph.node("B", x=a.out(0), y=a.out(1), z=a.out(0))
    graph.replace_node_output("1", 0, None)
    assert b.inputs == {"y": ["q.1", 1]}


def test_explicit_graph_index_leaves_the_scope_numbering_alone():
    GraphBuilder.set_default_prefix("5", 1)
    assert GraphBuilder.alloc_prefix(graph_index=9) == "5.1.9."
    assert GraphBuilder().prefix == "5.1.0."
    assert GraphBuilder.alloc_prefix(root="7") == "7.1.1."


def test_dynamic_prompt_follows_nested_expansions_to_the_prompt_node():
    import pytest
    from execution.dynamic_graph import DynamicPrompt, NodeNotFoundError

    graph = DynamicPrompt({"1": {"class_type": "A", "inputs": {}}})
    graph.add_ephemeral_node("1.0.0.1", {"class_type": "B", "inputs": {}}, "1", "1")
    graph.add_ephemeral_node("1.0.0.1.0.0.1", {"class_type": "C", "inputs": {}}, "1.0.0.1", "1.0.0.1")
    assert graph.get_real_node_id("1.0.0.1.0.0.1") == "1"
    assert graph.get_display_node_id("1.0.0.1.0.0.1") == "1"
    assert graph.get_parent_node_id("1.0.0.1.0.0.1") == "1.0.0.1" and graph.get_parent_node_id("1") is None
    assert graph.get_node("1.0.0.1.0.0.1")["class_type"] == "C"
    assert graph.all_node_ids() == {"1", "1.0.0.1", "1.0.0.1.0.0.1"}
    assert set(graph.ephemeral_prompt) == {"1.0.0.1", "1.0.0.1.0.0.1"}
    with pytest.raises(NodeNotFoundError):
        graph.get_node("nope")
    with pytest.raises(KeyError):  # callers catching KeyError keep working
        graph.get_node("nope")
