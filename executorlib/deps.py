"""The dependency graph of one scheduler: parents and children of its tasks, one edge structure.

An edge ``parent -> child`` exists while both are unfinished (a parent of another Executor is
an edge too). It *blocks* the child until the parent releases it: when the parent is done (a
loop that starts a task only after its parents), or as soon as the parent has a job id that the
job scheduler holds the child on (``afterok``). A released edge stays, so that a parent that
fails later still reaches every child it has.
"""

from __future__ import annotations

__all__ = ["Dependencies"]


class Dependencies:
    """Edges between task keys; each edge is blocking until released."""

    def __init__(self) -> None:
        self._children: dict[str, dict[str, None]] = {}  # parent -> children, in order
        self._blocking: dict[str, set[str]] = {}  # child -> parents it still waits for

    def add(self, child: str, parent: str, blocking: bool = True) -> None:
        self._children.setdefault(parent, {})[child] = None
        if blocking:
            self._blocking.setdefault(child, set()).add(parent)

    def blocked(self, child: str) -> bool:
        return bool(self._blocking.get(child))

    def blockers(self, child: str) -> set[str]:
        return set(self._blocking.get(child, ()))

    def children(self, parent: str) -> list[str]:
        return list(self._children.get(parent, ()))

    def release(self, child: str, parent: str) -> bool:
        """The edge no longer blocks ``child``; True when nothing blocks it any more."""
        waiting = self._blocking.get(child)
        if waiting is None:
            return True
        waiting.discard(parent)
        if not waiting:
            del self._blocking[child]
            return True
        return False

    def release_children(self, parent: str) -> list[str]:
        """Release every edge from ``parent``; the children that nothing blocks any more."""
        return [child for child in self.children(parent) if self.release(child, parent)]

    def remove(self, key: str) -> list[str]:
        """Drop ``key`` (finished) with its edges; return its children."""
        children = list(self._children.pop(key, ()))
        self._blocking.pop(key, None)
        return children

    def __len__(self) -> int:
        return len(self._children)
