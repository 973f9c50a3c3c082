"""A view check compares the accounts touched since the last one and a few others in turn,
not every account: every account each time made a seed's run quadratic in its steps."""

from __future__ import annotations

from tests.simulation.world import VIEWED_IN_TURN, World


def a_world_with(accounts: int) -> World:
    world = World.__new__(World)  # only what the choice reads: no store, no Stripe
    world.accounts = {f"acct_{n:03}": None for n in range(accounts)}  # type: ignore[misc]
    world.touched_since_views = set()
    world.viewed_in_turn = 0
    return world


def test_a_view_check_compares_the_touched_accounts_and_a_few_others() -> None:
    world = a_world_with(100)
    world.touched_since_views = {"acct_042", "acct_097"}

    chosen = world.accounts_to_view()

    assert {"acct_042", "acct_097"} <= set(chosen)
    assert len(chosen) == 2 + VIEWED_IN_TURN
    # The touched ones were compared: the next check takes the next few in turn only.
    assert world.accounts_to_view() == [
        f"acct_{n:03}" for n in range(VIEWED_IN_TURN, 2 * VIEWED_IN_TURN)
    ]


def test_every_account_is_compared_in_turn() -> None:
    world = a_world_with(23)
    seen: set[str] = set()
    for _ in range(-(-23 // VIEWED_IN_TURN)):
        seen.update(world.accounts_to_view())
    assert seen == set(world.accounts)
