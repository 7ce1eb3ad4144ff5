"""Where the sensors of a simulated zone go: named by the user, or placed by a documented rule.

Flow meters: by default every link with one end at a reservoir or tank, i.e. the
district meters of a zone made of all junctions (its inflow then equals consumption
plus leaks). A flow is counted positive into the zone: for a link touching a source
the sign comes from the topology; for any other link the link's own direction counts
as "into the zone" unless its name is written with a leading ``-``.

Pressure sensors: by default ``k`` junctions chosen by farthest-first traversal over
the pipe network (distance = pipe length along the shortest path): the first is the
candidate farthest from every source, each next one the candidate farthest from
those already chosen. Candidates are junctions that keep at least
``MIN_SENSOR_PRESSURE_M`` in a leak-free run, so no sensor sits on a pump suction.

>>> parse_flow_spec("10, -22 ,60")
[('10', 1), ('22', -1), ('60', 1)]
>>> parse_flow_spec("10,,")
Traceback (most recent call last):
...
ValueError: flow sensor list '10,,' has an empty name (write links separated by commas: 10,60,-22)
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

MIN_SENSOR_PRESSURE_M = 10.0
DEFAULT_PRESSURE_SENSORS = 5


def parse_flow_spec(text: str) -> list[tuple[str, int]]:
    """'10,-22' -> [('10', 1), ('22', -1)]: a leading '-' flips the meter's sign."""
    out = []
    for part in str(text).split(","):
        name = part.strip()
        sign = 1
        if name.startswith("-"):
            sign, name = -1, name[1:].strip()
        if not name:
            raise ValueError(
                f"flow sensor list {text!r} has an empty name (write links separated by commas: 10,60,-22)"
            )
        out.append((name, sign))
    return out


def parse_node_spec(text: str) -> list[str]:
    """The node or link names of a comma-separated list (``"101, 123"``)."""
    names = [p.strip() for p in str(text).split(",")]
    if not all(names):
        raise ValueError(f"pressure sensor list {text!r} has an empty name (write nodes separated by commas: 101,123)")
    return names


def sources(wn) -> set[str]:
    """The names of the reservoirs and tanks of the network."""
    return set(wn.reservoir_name_list) | set(wn.tank_name_list)


def boundary_links(wn) -> list[str]:
    """Links with exactly one end at a reservoir or tank, in the network's order."""
    src = sources(wn)
    return [name for name, link in wn.links() if (link.start_node_name in src) != (link.end_node_name in src)]


def flow_signs(wn, flows: list[tuple[str, int]]) -> list[int]:
    """Sign that turns each link's flow into 'water entering the zone', checking the links exist."""
    src = sources(wn)
    missing = [name for name, _ in flows if name not in wn.link_name_list]
    if missing:
        raise ValueError(f"flow sensor link(s) not in the network: {', '.join(missing)}")
    signs = []
    for name, user_sign in flows:
        link = wn.get_link(name)
        if link.start_node_name in src and link.end_node_name not in src:
            topology = 1
        elif link.end_node_name in src and link.start_node_name not in src:
            topology = -1
        else:
            topology = 1
        signs.append(topology * user_sign)
    return signs


def check_nodes(wn, nodes: list[str]) -> list[str]:
    """``nodes``, once every one is known to be a junction of the network."""
    missing = [n for n in nodes if n not in wn.junction_name_list]
    if missing:
        raise ValueError(f"pressure sensor node(s) not junctions of the network: {', '.join(missing)}")
    if len(set(nodes)) != len(nodes):
        raise ValueError("a pressure sensor node is listed twice")
    return nodes


def pipe_distances(wn, origins: list[str]) -> tuple[np.ndarray, list[str]]:
    """Shortest distance (m of pipe) from each origin to every node; (distances[origin, node], node names)."""
    names = wn.node_name_list
    index = {n: i for i, n in enumerate(names)}
    rows, cols, weights = [], [], []
    for _, link in wn.links():
        length = float(getattr(link, "length", 1.0) or 1.0)  # pumps and valves: a metre
        a, b = index[link.start_node_name], index[link.end_node_name]
        rows += [a, b]
        cols += [b, a]
        weights += [length, length]
    graph = coo_matrix((weights, (rows, cols)), shape=(len(names), len(names))).tocsr()
    return dijkstra(graph, indices=[index[o] for o in origins]), names


def place_pressure_sensors(wn, candidates: list[str], k: int = DEFAULT_PRESSURE_SENSORS) -> list[str]:
    """Farthest-first traversal over ``candidates`` (ties broken by name), starting far from the sources."""
    if k < 1:
        raise ValueError("need at least one pressure sensor")
    candidates = sorted(candidates)
    if not candidates:
        raise ValueError(f"no junction keeps {MIN_SENSOR_PRESSURE_M} m of pressure: name the pressure sensors")
    k = min(k, len(candidates))
    src = sorted(sources(wn))
    dist, names = pipe_distances(wn, src + candidates)
    column = [names.index(c) for c in candidates]
    from_sources = dist[: len(src)][:, column].min(axis=0) if src else np.zeros(len(candidates))
    from_sources[~np.isfinite(from_sources)] = -1.0  # unreachable from a source: never first
    chosen = [int(np.argmax(from_sources))]
    nearest = dist[len(src) + chosen[0]][column]
    while len(chosen) < k:
        nearest = np.where(np.isfinite(nearest), nearest, -1.0)
        nearest[chosen] = -1.0
        best = int(np.argmax(nearest))
        chosen.append(best)
        nearest = np.minimum(nearest, dist[len(src) + best][column])
    return [candidates[i] for i in chosen]
