"""gateway/adapters/journal.py: write-ahead entries and tombstones (a reversal by reference that
comes first blocks the operation for good; one journaled before the tombstone is undone)."""

from __future__ import annotations

import pytest

from common.errors import TRANSACTION_REVERSED, MeshError
from gateway.adapters.journal import JournalEntry, MemoryReferenceJournal, begin, tombstone


async def test_begin_returns_what_was_sent_before_under_the_reference():
    journal = MemoryReferenceJournal()
    assert await begin(journal, "m", "ref", JournalEntry("hold", 500, "USD")) == []
    assert await begin(journal, "m", "ref", JournalEntry("hold", 500, "USD")) == [JournalEntry("hold", 500, "USD")]
    assert await begin(journal, "other", "ref", JournalEntry("hold", 1, "USD")) == []


async def test_tombstone_first_blocks_a_later_operation():
    journal = MemoryReferenceJournal()
    assert await tombstone(journal, "m", "ref", "USD") == []
    with pytest.raises(MeshError) as caught:
        await begin(journal, "m", "ref", JournalEntry("redeem", 100, "USD"))
    assert caught.value.reason == TRANSACTION_REVERSED


async def test_tombstone_after_an_operation_returns_it_to_undo_without_tombstones():
    journal = MemoryReferenceJournal()
    await begin(journal, "m", "ref", JournalEntry("redeem", 100, "USD"))
    assert await tombstone(journal, "m", "ref", "USD") == [JournalEntry("redeem", 100, "USD")]
    assert await tombstone(journal, "m", "ref", "USD") == [JournalEntry("redeem", 100, "USD")]
