"""core/randomness.py RandomBytes: CSPRNG bytes fetched ahead, each handed out once, and
never shared with a forked worker."""

from __future__ import annotations

import os

from bastion.core.randomness import RandomBytes


def test_every_byte_is_handed_out_once_and_draws_are_large() -> None:
    source = RandomBytes()
    taken = [source.take(26) for _ in range(1000)]

    assert all(len(piece) == 26 for piece in taken)
    assert len(set(taken)) == len(taken)
    assert source.take(RandomBytes.DRAW_BYTES + 10) != source.take(10)  # larger than a draw


def test_a_forked_child_never_hands_out_its_parents_bytes() -> None:
    source = RandomBytes()
    source.take(1)  # the parent holds fetched bytes at the fork
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: what it would hand out next
        os.write(writer, source.take(32))
        os._exit(0)
    os.close(writer)
    child = os.read(reader, 64)
    os.close(reader)
    os.waitpid(pid, 0)

    assert len(child) == 32
    assert child != source.take(32)  # what the parent hands out next
