"""How several charge point simulator processes share one site's chargers (--part K/N)."""

from __future__ import annotations

import argparse
import tomllib

import pytest

from coordinator.site import SiteConfig
from simulators.chargepoint.process import chargers_of, parse_part, part_of


def site(chargers: int) -> SiteConfig:
    lines = ['site_id = "sit_parts"', "[[gateways]]", 'gateway_id = "ocpp"', 'protocol = "ocpp"']
    for i in range(chargers):
        lines += ["[[assets]]", f'asset_id = "ast_cp_{i:02d}"', 'kind = "ev_charger"', 'gateway_id = "ocpp"',
                  "max_power_kw = 22.0", "[assets.ocpp]", f'charge_point_id = "CP{i:02d}"',
                  'password = "parts-password-0123456789"', f'version = "{"1.6" if i % 2 == 0 else "2.0.1"}"']
    return SiteConfig.model_validate(tomllib.loads("\n".join(lines)))


@pytest.mark.parametrize("parts", [1, 2, 3, 7])
def test_parts_cover_every_charger_once_in_order(parts):
    assets = chargers_of(site(10), "ocpp")
    shared = [part_of(assets, k, parts) for k in range(parts)]
    assert [a.asset_id for part in shared for a in part] == [a.asset_id for a in assets]
    assert max(map(len, shared)) - min(map(len, shared)) <= 1


def test_two_parts_each_keep_both_versions():
    assets = chargers_of(site(10), "ocpp")
    for k in range(2):
        assert {a.ocpp.version for a in part_of(assets, k, 2) if a.ocpp} == {"1.6", "2.0.1"}


def test_part_parsing():
    assert parse_part("0/1") == (0, 1)
    assert parse_part("2/3") == (2, 3)
    for bad in ("3/3", "-1/2", "1", "a/b", "1/0"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_part(bad)
