"""Safe YAML for config files and ``--set`` values: PyYAML's safe loader with limits, so that any
bytes become data or one :class:`YamlProblem` and never a traceback.

- no implicit timestamps: ``seed: 2001-13-01`` is the text ``'2001-13-01'`` (which the schema then
  refuses, naming the field), not a ``ValueError`` from the date constructor;
- nesting deeper than :data:`MAX_DEPTH` (a config is about five levels deep) is refused while the
  document is composed, before any recursion can overflow;
- aliases are expanded in the count: a document whose expansion exceeds :data:`MAX_NODES` nodes
  (a "billion laughs" alias bomb) or that refers to itself is refused before it is constructed;
- a key given twice in one mapping is refused (YAML would silently keep the last one);
- constructor errors of explicit tags (``!!int x``, ``!!binary``, a 5,000-digit integer) are problems.
"""
from __future__ import annotations

from typing import Any

import yaml

MAX_DEPTH = 32  # nesting levels, aliases expanded
MAX_NODES = 100_000  # nodes after alias expansion (the largest file here has ~600)
MAX_BYTES = 1 << 20  # a config file; the largest file here is ~5 kB

_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class YamlProblem(Exception):
    """Why a text is not an acceptable YAML document (one line, with ``line:col`` where known)."""


class _Loader(yaml.SafeLoader):
    """The safe loader without the timestamp resolver, counting its nesting while it composes."""

    yaml_implicit_resolvers = {ch: [(tag, rx) for tag, rx in rs if tag != _TIMESTAMP]
                               for ch, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise YamlProblem(f"{_at(self.peek_event().start_mark)}nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _at(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""


def _children(node: Any) -> list[Any]:
    if isinstance(node, yaml.MappingNode):
        return [n for kv in node.value for n in kv]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_keys(node: Any) -> None:
    if not isinstance(node, yaml.MappingNode):
        return
    seen: set[str] = set()
    for key, _ in node.value:
        if isinstance(key, yaml.ScalarNode) and key.value != "<<":
            if key.value in seen:
                raise YamlProblem(f"{_at(key.start_mark)}duplicate key {key.value!r}")
            seen.add(key.value)


def check_graph(root: Any) -> None:
    """Size and depth of the node graph with every alias expanded, without expanding it (each
    distinct node is measured once); a cycle is refused. Iterative: no recursion to overflow."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path = {id(root)}
    frames = [(root, iter(_children(root)))]
    while frames:
        node, kids = frames[-1]
        for child in kids:
            if id(child) in size:
                continue
            if id(child) in on_path:
                raise YamlProblem(f"{_at(child.start_mark)}an alias refers to a node that contains it")
            on_path.add(id(child))
            frames.append((child, iter(_children(child))))
            break
        else:
            frames.pop()
            on_path.discard(id(node))
            _check_keys(node)
            kids_all = _children(node)
            size[id(node)] = 1 + sum(size[id(c)] for c in kids_all)
            depth[id(node)] = 1 + max((depth[id(c)] for c in kids_all), default=0)
            if size[id(node)] > MAX_NODES:
                raise YamlProblem(f"{_at(node.start_mark)}expands to more than {MAX_NODES:,} nodes (aliases)")
            if depth[id(node)] > MAX_DEPTH:
                raise YamlProblem(f"{_at(node.start_mark)}nested more than {MAX_DEPTH} levels deep (aliases)")


def load_text(text: str) -> Any:
    """One YAML document as plain data; :class:`YamlProblem` for anything unacceptable."""
    if len(text) > MAX_BYTES:
        raise YamlProblem(f"longer than {MAX_BYTES:,} characters")
    loader = None
    try:
        loader = _Loader(text)  # its reader already refuses control characters
        node = loader.get_single_node()
        if node is None:
            return None
        check_graph(node)
        return loader.construct_document(node)
    except YamlProblem:
        raise
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise YamlProblem(f"{_at(mark)}YAML syntax error: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise YamlProblem(f"YAML error: {_first_line(e)}") from None
    except Exception as e:  # noqa: BLE001 - PyYAML's constructors raise what they meet: !!int x (ValueError),
        # a bare !!int (IndexError), a 5,000-digit integer, !!binary of bad base64 ...
        raise YamlProblem(f"YAML value error: {type(e).__name__}: {_first_line(e)}") from None
    finally:
        if loader is not None:
            loader.dispose()


def _first_line(e: BaseException) -> str:
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    return (lines[0] if lines else type(e).__name__)[:200]
