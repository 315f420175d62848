"""GetHold shows where a hold's remainder went after a partial (non-final) shipment: the advanced
hold's id and the amount transferred to it, in both deployment modes."""

from __future__ import annotations

import pytest

from giftcard.type.v1 import hold_pb2
from tests.integration.test_settlement import authorize, call, capture, get_hold, new_card, usd
from tests.support.mesh import MODES, start_mesh


@pytest.fixture(params=MODES)
async def mesh(request, redis_client, redis_url):
    running = await start_mesh(request.param, redis_url)
    yield running
    await running.close()


async def test_get_hold_of_the_original_names_the_advanced_hold_and_what_moved(mesh):
    number = await new_card(mesh, 100_00)
    original = await authorize(mesh, number, 60_00)
    assert (original.advanced_hold_id, original.transferred.amount_minor) == ("", 0)

    shipped = await call(mesh, "Capture", capture(original.hold_id, 15_00, shipment_id="ship-1"))
    advanced = shipped.open_hold
    hold = await get_hold(mesh, original.hold_id)
    assert hold.advanced_hold_id == advanced.hold_id
    assert hold.transferred == usd(45_00)
    assert (hold.state, hold.captured, hold.open) == (hold_pb2.HOLD_STATE_CLOSED, usd(15_00), usd(0))
    # The advanced hold itself has moved nothing on (yet).
    later = await get_hold(mesh, advanced.hold_id)
    assert (later.parent_hold_id, later.advanced_hold_id, later.transferred) == (original.hold_id, "", usd(0))

    await call(mesh, "Capture", capture(advanced.hold_id, 45_00, shipment_id="ship-2", final_shipment=True))
    assert (await get_hold(mesh, advanced.hold_id)).advanced_hold_id == ""
