"""Site config rules: errors name the file, the key and the rule, never the value; charger secrets."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import pytest

from coordinator.runtime.service import load_site
from coordinator.runtime.settings import DEFAULT_SITE_CONFIG
from coordinator.site import SiteConfig, SiteConfigError
from services.ocpp_gateway.central import server_tls_context
from tools.credentials import SiteFacts, provision_ocpp

SECRET = "MyRealSecret123"  # 15 characters: the example
GOOD = "a-real-charger-secret-0123"


def site_text(ocpp_lines: str, listen_lines: str = "") -> str:
    return f"""
site_id = "sit_t"

[[gateways]]
gateway_id = "ocpp"
protocol = "ocpp"
[gateways.ocpp]
port = 9000
{listen_lines}

[[assets]]
asset_id = "ast_bay_1"
kind = "ev_charger"
gateway_id = "ocpp"
max_power_kw = 22.0
[assets.ocpp]
charge_point_id = "CP001"
{ocpp_lines}
"""


def refused(tmp_path: Path, text: str, capsys, secrets_for: str | None = "ocpp") -> str:
    """load_site on ``text``: must end with exit status 2; what it printed on stderr."""
    path = tmp_path / "site.toml"
    path.write_text(text)
    with pytest.raises(SystemExit) as ended:
        load_site(str(path), secrets_for=secrets_for)
    assert ended.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    return err


def test_a_short_password_is_named_by_key_and_rule_never_by_value(tmp_path, capsys):
    err = refused(tmp_path, site_text(f'password = "{SECRET}"'), capsys)
    assert err.strip() == f"{tmp_path / 'site.toml'}: assets[0].ocpp.password: must be at least 16 bytes " \
                          "(OCPP security profiles 1 and 2)"
    assert SECRET not in err and "input_value" not in err


@pytest.mark.parametrize("bad, key", [
    ('max_power_kw = "MyRealSecret123"', "assets[0].max_power_kw"),
    ('charge_point_id = "MyRealSecret123 with spaces"', "assets[0].ocpp.charge_point_id"),
    ('site_id = "MyRealSecret123!"', "site_id"),
    ('unknown_key = "MyRealSecret123"', "assets[0].ocpp.unknown_key"),
    ('version = "MyRealSecret123"', "assets[0].ocpp.version"),
])
def test_no_field_prints_its_value(tmp_path, capsys, bad, key):
    text = site_text(f'password = "{GOOD}"')
    field = bad.split(" = ")[0]
    lines = [line for line in text.splitlines() if not line.startswith(f"{field} =")]
    anchor = ("[assets.ocpp]" if key.startswith("assets[0].ocpp")
              else "asset_id" if "assets" in key else "[[gateways]]")
    at = next(i for i, line in enumerate(lines) if line.startswith(anchor))
    lines.insert(at + 1 if anchor != "[[gateways]]" else at, bad)
    err = refused(tmp_path, "\n".join(lines), capsys)
    assert f": {key}: " in err and SECRET not in err and "input_value" not in err


def test_toml_syntax_errors_and_a_missing_file_are_one_line(tmp_path, capsys):
    err = refused(tmp_path, site_text(f'password = "{SECRET}'), capsys)  # unterminated string
    assert err.count("\n") == 1 and "not valid TOML" in err and SECRET not in err
    with pytest.raises(SystemExit) as ended:
        load_site(str(tmp_path / "nowhere.toml"))
    assert ended.value.code == 2
    assert capsys.readouterr().err.strip() == f"{tmp_path / 'nowhere.toml'}: cannot read the site config " \
                                              "(No such file or directory)"


def test_require_auth_needs_a_password_and_without_it_anything_goes(tmp_path, capsys):
    err = refused(tmp_path, site_text(""), capsys)
    assert "assets[0].ocpp: CP001 has no password or password_file, and gateway ocpp requires auth" in err
    (tmp_path / "open.toml").write_text(site_text("", "require_auth = false"))
    assert SiteConfig.load(tmp_path / "open.toml").assets[0].ocpp is not None


@pytest.mark.parametrize("placeholder", ["change-me-bay-1-secret", "CHANGEME-CHANGEME-0000", "please-change_me-1234"])
def test_placeholders_are_refused_inline_and_in_a_file(tmp_path, capsys, placeholder):
    err = refused(tmp_path, site_text(f'password = "{placeholder}"'), capsys)
    assert "assets[0].ocpp.password: is a placeholder" in err and placeholder not in err
    (tmp_path / "cp.password").write_text(placeholder + "\n")
    err = refused(tmp_path, site_text('password_file = "cp.password"'), capsys)
    assert "assets[0].ocpp.password_file: the password in the file is a placeholder" in err and placeholder not in err


def test_password_and_password_file_are_never_both(tmp_path, capsys):
    err = refused(tmp_path, site_text(f'password = "{GOOD}"\npassword_file = "cp.password"'), capsys)
    assert "assets[0].ocpp: password and password_file are both set" in err and GOOD not in err


def test_a_password_file_is_read_relative_to_the_site_file_and_only_when_asked(tmp_path, capsys, caplog):
    (tmp_path / "secrets").mkdir()
    path = tmp_path / "site.toml"
    path.write_text(site_text('password_file = "secrets/CP001.password"',
                              'tls_cert = "secrets/server.crt"\ntls_key = "secrets/server.key"'))
    site = SiteConfig.load(path)  # the planner's view: no secret read, none needed
    charger = site.assets[0].ocpp
    assert charger is not None and charger.password is None
    assert charger.password_file == str(tmp_path / "secrets" / "CP001.password")
    listen = site.gateways[0].ocpp
    assert listen is not None and listen.tls_cert == str(tmp_path / "secrets" / "server.crt") and listen.tls
    with pytest.raises(SiteConfigError) as missing:
        SiteConfig.load(path, secrets_for="ocpp")
    assert missing.value.lines == [f"{path}: assets[0].ocpp.password_file: cannot read "
                                   f"{tmp_path / 'secrets' / 'CP001.password'} (No such file or directory); "
                                   "qubit-credentials makes the site's password files"]
    (tmp_path / "secrets" / "CP001.password").write_text(GOOD + "\n")
    (tmp_path / "secrets" / "CP001.password").chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="coordinator.site"):
        charger = SiteConfig.load(path, secrets_for="ocpp").assets[0].ocpp
    assert charger is not None and charger.password == GOOD  # the line, without its newline
    assert GOOD not in repr(charger)
    assert "readable by group or others (mode 644): chmod 600 it" in caplog.text and GOOD not in caplog.text
    (tmp_path / "secrets" / "CP001.password").write_text("short\n")
    err = refused(tmp_path, path.read_text(), capsys)
    assert "the password in the file must be at least 16 bytes" in err and "short" not in err


def test_tls_key_needs_a_cert(tmp_path, capsys):
    err = refused(tmp_path, site_text(f'password = "{GOOD}"', 'tls_key = "k.pem"'), capsys)
    assert "gateways[0].ocpp: tls_key is set without tls_cert" in err


def test_the_sample_is_profile_2_and_loads_with_its_secrets(tmp_path):
    sample = SiteConfig.load(DEFAULT_SITE_CONFIG)
    listen = sample.gateway("ocpp").ocpp  # type: ignore[union-attr]
    assert listen is not None and listen.require_auth and listen.tls
    assert listen.tls_cert == str(DEFAULT_SITE_CONFIG.parent / "secrets" / "ocpp" / "server.crt")
    chargers = [a.ocpp for a in sample.assets if a.ocpp is not None]
    assert chargers and all(c.password is None and c.password_file for c in chargers)
    copy = tmp_path / "site.toml"
    copy.write_text(DEFAULT_SITE_CONFIG.read_text())
    provision_ocpp(tmp_path / "secrets", SiteFacts(sample.site_id, (), tuple(c.charge_point_id for c in chargers)))
    loaded = SiteConfig.load(copy, secrets_for="ocpp")
    passwords = [a.ocpp.password for a in loaded.assets if a.ocpp is not None]
    assert all(p and len(p) >= 16 for p in passwords) and len(set(passwords)) == len(passwords)
    assert (tmp_path / "secrets" / "chargers" / f"{chargers[0].charge_point_id}.password").stat().st_mode & 0o077 == 0


def test_the_gateway_tls_context_is_tls_1_2_or_later_with_the_site_certificate(tmp_path):
    from coordinator.site import OcppListenConfig

    assert server_tls_context(OcppListenConfig()) is None
    provision_ocpp(tmp_path, SiteFacts("sit_t", (), ()))
    context = server_tls_context(OcppListenConfig(tls_cert=str(tmp_path / "ocpp" / "server.crt"),
                                                  tls_key=str(tmp_path / "ocpp" / "server.key")))
    assert context is not None and context.minimum_version is ssl.TLSVersion.TLSv1_2


LIMITS_SITE = """
site_id = "sit_1"
[[gateways]]
gateway_id = "loopback"
protocol = "loopback"
[[assets]]
asset_id = "ast_bay_1"
kind = "ev_charger"
gateway_id = "loopback"
max_power_kw = 22.0
"""


def test_site_limits_are_optional_and_checked(tmp_path):
    path = tmp_path / "site.toml"
    path.write_text(LIMITS_SITE)
    assert SiteConfig.load(path).site_limits.import_kw is None
    path.write_text(LIMITS_SITE + "[site_limits]\nimport_kw = 100.0\nexport_kw = 0\n")
    limits = SiteConfig.load(path).site_limits
    assert (limits.import_kw, limits.export_kw) == (100.0, 0.0)
    for bad, key in (("import_kw = 0", "site_limits.import_kw"), ("export_kw = -1", "site_limits.export_kw"),
                     ("fuse_a = 63", "site_limits.fuse_a")):
        path.write_text(LIMITS_SITE + f"[site_limits]\n{bad}\n")
        with pytest.raises(SiteConfigError) as err:
            SiteConfig.load(path)
        assert key in str(err.value)
