"""Reserved hits of the per-IP default: spent once each, only while fresh, bounded."""

from __future__ import annotations

from bastion.security import rate_leases
from bastion.security.rate_leases import LEASE_SECONDS, Leases, lease_size


def test_a_reservation_is_a_fiftieth_of_the_limit_at_most_sixteen_and_none_for_small_ones() -> None:
    assert lease_size(300) == 6
    assert lease_size(100_000) == 16
    assert lease_size(60) == 1  # 1: no leasing, every request is counted exactly
    assert lease_size(3) == 1


def test_each_reserved_hit_is_spent_once_and_only_while_the_reservation_is_fresh() -> None:
    leases = Leases(3)
    assert not leases.take("a", 0.0)
    leases.grant("a", 2, 0.0)

    assert leases.take("a", 0.1)
    assert not leases.take("b", 0.1)  # per address
    assert not leases.take("a", LEASE_SECONDS)  # lapsed, one hit still unspent
    leases.grant("a", 2, 5.0)
    assert leases.take("a", 5.1)
    assert leases.take("a", 5.2)
    assert not leases.take("a", 5.3)  # spent


def test_the_table_of_addresses_is_bounded(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(rate_leases, "MAX_ADDRESSES", 3)
    leases = Leases(2)
    for n in range(4):
        leases.grant(f"address {n}", 1, 0.0)
    assert len(leases._held) <= 3
