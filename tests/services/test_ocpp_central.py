import base64

from services.ocpp_gateway.central import CentralSystem, basic_auth_ok


def test_basic_auth():
    header = "Basic " + base64.b64encode(b"CP001:correct horse battery").decode()
    assert basic_auth_ok(header, "CP001", "correct horse battery")
    assert not basic_auth_ok(header, "CP001", "wrong password here")
    assert not basic_auth_ok(header, "CP002", "correct horse battery")
    assert not basic_auth_ok(None, "CP001", "x")
    assert not basic_auth_ok("Basic !!!notbase64", "CP001", "x")
    assert not basic_auth_ok("Bearer abc", "CP001", "x")


def test_charge_point_id_from_path():
    assert CentralSystem.charge_point_id("/ocpp/CP001") == "CP001"
    assert CentralSystem.charge_point_id("/CP001/?x=1") == "CP001"
