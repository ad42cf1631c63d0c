"""Which launch description sits in which slot of one connected worker.

A worker with few CPUs gets a message per task or two, and the same few descriptions
(program, env, cwd, ...) with each: encoding, sealing, decoding and type-checking them
again every time was a good part of both ends' cost per message. So a description goes
to a worker once per connection, into a numbered slot (schemas.SlotDesc), and later
messages name the slot. The server alone decides which slot a new description takes
(the least recently used one that the message being built does not use), so the worker
never guesses: it stores what it is told and refuses a slot that holds nothing.
One `DescSlots` lives as long as the connection's sender; a new connection starts
empty, as the worker's table does.
"""

from __future__ import annotations

from hyperq.transport.schemas import DESC_SLOTS

# (job, submit index, resource variant): what a launch description depends on.
DescKey = tuple[int, int, int]


class DescSlots:
    def __init__(self, capacity: int = DESC_SLOTS) -> None:
        if not 0 < capacity <= DESC_SLOTS:
            raise ValueError(f"capacity must be within 1..{DESC_SLOTS}")
        self.capacity = capacity
        # Least recently used first (a dict keeps insertion order; a use re-inserts).
        self._slots: dict[DescKey, int] = {}

    def find(self, key: DescKey) -> int | None:
        """The slot the worker holds `key`'s description in (now the most recently
        used), or None."""
        slot = self._slots.pop(key, None)
        if slot is not None:
            self._slots[key] = slot
        return slot

    def take(self, key: DescKey, in_use: set[int]) -> int | None:
        """A slot for `key`'s description, which the message being built must define
        before its tasks refer to it: a free slot, else the least recently used one
        not in `in_use` (the slots the message refers to already). None when every
        slot is in use by the message: the description then goes inline."""
        if len(self._slots) < self.capacity:
            slot = len(self._slots)
        else:
            for old, slot in self._slots.items():
                if slot not in in_use:
                    del self._slots[old]
                    break
            else:
                return None
        self._slots[key] = slot
        return slot

    def __len__(self) -> int:
        return len(self._slots)
