"""Remote settings from shared attributes: checked, applied, refused with a reason, reverted."""

from services.tb_uplink.settings import RemoteSettings, table


def settings() -> RemoteSettings:
    return RemoteSettings(table(["cells"]), {"upload_interval": 5.0, "key_set": "full", "cadence_cells_s": None})


def test_a_good_value_is_used_and_reported():
    s = settings()
    assert s.take({"upload_interval": 2}, full=False) == {"upload_interval": 2.0}
    assert s.attributes()["upload_interval_in_use"] == 2.0 and s.attributes()["settings_refused"] == ""


def test_a_bad_value_is_refused_with_a_reason_and_the_value_in_use_kept():
    s = settings()
    for bad in ("fast", -1, 0.01, True, None, [5], 99999):
        assert s.take({"upload_interval": bad}, full=False) == {}
        assert s.in_use["upload_interval"] == 5.0
        assert s.attributes()["settings_refused"].startswith("upload_interval: ")
    assert s.take({"key_set": "some"}, full=False) == {}
    assert "key_set: 'some' is not one of full, original" in s.attributes()["settings_refused"]
    s.take({"upload_interval": "10"}, full=False)
    assert s.in_use["upload_interval"] == 10.0 and "upload_interval" not in s.attributes()["settings_refused"]


def test_a_key_missing_from_a_full_reply_or_deleted_goes_back_to_the_config_value():
    s = settings()
    s.take({"upload_interval": 1, "cadence_cells_s": 30}, full=False)
    assert s.take({"shared": "ignored", "upload_interval": 1}, full=True) == {"cadence_cells_s": None}
    assert s.take({"deleted": ["upload_interval"]}, full=False) == {"upload_interval": 5.0}


def test_unknown_keys_and_shapes_are_ignored():
    s = settings()
    assert s.take({"dashboard_colour": "red"}, full=False) == {}
    assert s.take(["upload_interval", 1], full=False) == {}
    assert s.in_use == {"upload_interval": 5.0, "key_set": "full", "cadence_cells_s": None}
