"""Which Ray node the current process runs on, as the strings a trial records.

A trial reports the node of its rank-0 Train worker (where it trained and was scored) under
`NODE_ID_KEY` and `NODE_IP_KEY`; the MLflow callback turns them into the run's `ncsearch.node_id` and
`ncsearch.node_ip` tags, so a multi-node search shows where each of its trials ran.
"""

from __future__ import annotations

__all__ = ["NODE_ID_KEY", "NODE_IP_KEY", "node_identity"]

NODE_ID_KEY = "ncsearch/node_id"
NODE_IP_KEY = "ncsearch/node_ip"


def node_identity() -> dict[str, str]:
    """{NODE_ID_KEY: the Ray node id, NODE_IP_KEY: its IP} of this process (the id is "" outside Ray,
    e.g. in a plain torch process group)."""
    import ray

    node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    return {NODE_ID_KEY: node_id, NODE_IP_KEY: ray.util.get_node_ip_address()}
