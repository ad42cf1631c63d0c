"""Updates a worker queued, as they go on the wire: times become ages at sending."""

import time

import pytest

from hyperq.worker.main import _on_the_wire


def test_queued_updates_carry_their_age() -> None:
    now = time.monotonic()
    queued = [
        ["started", 1, 0, 0, 0.25, now - 10.0],  # reported 0.25 s after it began
        ["finished", 1, 1, 0, None, now - 4.0],
        ["failed", 1, 2, 0, "Program terminated with exit code 1.", 2.0, now - 3.0],
    ]
    wire = _on_the_wire(queued)
    heads = [["started", 1, 0, 0], ["finished", 1, 1, 0], ["failed", 1, 2, 0]]
    assert [item[:4] for item in wire] == heads
    assert wire[0][4] == pytest.approx(10.25, abs=0.5)
    assert wire[1][4] is None and wire[1][5] == pytest.approx(4.0, abs=0.5)
    assert wire[2][4:6] == ["Program terminated with exit code 1.", 2.0]
    assert wire[2][6] == pytest.approx(3.0, abs=0.5)
    # The queue keeps its stamps: a batch that fails to send is sent again, aged anew.
    assert queued[0][-1] == now - 10.0 and len(queued[1]) == 6
