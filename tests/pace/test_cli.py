"""python -m common.pace decode: a frame pasted from a log in, one JSON line out."""

import json
import subprocess

from common.pace import commands
from common.pace.config import CONFIG_COMMANDS
from harness.proc import PY, REPO
from tests.pace.test_vectors import ANALOG, FRAMES, STATUS, VALID


def decode(lines: list[str], *args) -> list[dict]:
    out = subprocess.run([PY, "-m", "common.pace", "decode", *args], input="\n".join(lines).encode(), cwd=REPO,
                         capture_output=True, check=True)
    return [json.loads(line) for line in out.stdout.decode().splitlines()]


# The replies the CLI decodes; others (control commands, vendor commands) are shown as raw INFO.
DECODED = {"42", "44", "C1", "C2", "B1", "90", "A6"}


def test_every_vector_frame_gives_one_json_line_ok_only_when_valid():
    # Alternate the three ways a CR shows up in a pasted line: missing, written as \r, or real.
    pasted = [v["frame"].rstrip("\r") + ("", "\\r", "\r")[i % 3] for i, v in enumerate(FRAMES)]
    results = decode(pasted)
    assert len(results) == len(FRAMES)
    checked = {"refused": 0, "request": 0, "decoded": 0, "vendor layout": 0, "raw": 0, "unknown": 0}
    for vector, result in zip(FRAMES, results):
        exp = vector["expected"]
        if vector not in VALID:
            assert result["ok"] is False and result["error"] in ("framing", "checksum") and result["detail"]
            checked["refused"] += 1
            continue
        if vector.get("family", "25") != "25":
            # A vendor VER 20 layout: decoded with its family's command, never misread as v2.5.
            want = commands.by_cid2(int(vector["command"], 16), vector["family"])
            assert result["ok"] is True and result["name"] == want.name, (vector["id"], result)
            assert result["packs"][0]["pack"] == exp["vendor"]["group"]
            checked["vendor layout"] += 1
            continue
        if vector["command"] not in DECODED and vector["direction"] == "response" and not result["ok"]:
            # A vendor command's reply that fits no layout the CLI knows: said so, not guessed into one.
            assert result["error"] == "decode" and result["detail"], (vector["id"], result)
            checked["unknown"] += 1
            continue
        assert result["ok"] is True, (vector["id"], result)
        if "header" in exp:
            assert (result["ver"], result["adr"], result["cid1"]) == (exp["header"]["ver"], exp["header"]["adr"],
                                                                     exp["header"]["cid1"])
        if vector["direction"] == "request":
            assert result["direction"] == "request" and result["command"] == vector["command"]
            checked["request"] += 1
        elif vector["command"] in DECODED:
            assert result["command"] == vector["command"], (vector["id"], result)
            checked["decoded"] += 1
        elif result["command"] is None:
            assert result["info"] == vector["frame"][13:-5], (vector["id"], result)
            checked["raw"] += 1
    assert all(checked.values()), checked


def test_analog_and_status_replies_are_guessed_and_decoded_to_contract_fields():
    for vector in [v for v in ANALOG + STATUS if not v.get("info_only")]:
        [result] = decode([vector["frame"].rstrip("\r")])
        assert result["ok"] and result["command"] == vector["command"], (vector["id"], result)
        expected = vector["expected"]["packs"]
        assert len(result["packs"]) == len(expected)
        for pack, want in zip(result["packs"], expected):
            if vector["command"] == "42":
                assert pack["cells_mv"] == want["cells_mV"] and pack["current_a"] == want["current_A"]
                assert pack["soc_pct"] == want["soc_calc_pct"] and pack["temps_c"] == want["temps_C"]
            else:
                assert pack["protections"] == want["protect_1_flags"] + want["protect_2_flags"]
                assert pack["indicators"] == want["instruction_flags"]


def test_command_and_request_info_can_be_given():
    vector = next(v for v in ANALOG if v["id"] == "nk-42-resp-pack01")
    [echo] = decode([vector["frame"]], "--command", "42", "--request-info", "01")
    assert echo["ok"] and echo["pack_count"] is None and echo["packs"][0]["pack"] == 1
    [wrong] = decode([vector["frame"]], "--command", "44", "--request-info", "FF")
    assert wrong["ok"] is False and wrong["error"] == "decode"


def test_text_and_small_replies():
    by_id = {v["id"]: v for v in FRAMES}
    lines = [by_id[i]["frame"] for i in ("nk-c1-resp", "is22-c2-resp-reconstructed", "nk-B1-resp", "nk24-90-resp-master")]
    c1, c2, b1, count = decode(lines)
    assert c1["software_version"] == by_id["nk-c1-resp"]["expected"]["text_stripped"]
    assert c2["pack_serial"] == by_id["is22-c2-resp-reconstructed"]["expected"]["second_20_chars_stripped"]
    assert b1["bms_clock"].startswith(str(by_id["nk-B1-resp"]["expected"]["year"]))
    assert count["pack_count"] == by_id["nk24-90-resp-master"]["expected"]["pack_count"]


def test_an_error_reply_names_its_return_code():
    from common import pace
    [result] = decode([pace.encode_frame(0x04, adr=1).decode()])
    assert result == {"ok": False, "error": "rtn", "detail": "BMS returned RTN 04 (CID2 not defined)", "rtn": "04"}


def test_every_settings_reply_decodes_with_its_command():
    settings = {f"{c.cid2:02X}" for c in CONFIG_COMMANDS}
    vectors = [v for v in json.loads((REPO / "tests/data/pace/config_vectors.json").read_text())
               if v["direction"] == "response" and v["command"] in settings]
    assert len(vectors) >= 15
    for vector in vectors:
        [result] = decode([vector["frame"]], "--command", vector["command"])
        assert result["ok"], (vector["id"], result)
        assert result["command"] == vector["command"]
        assert {k: result[k] for k in vector["expected"]} == vector["expected"], vector["id"]


def test_an_unknown_command_is_named_with_the_known_ones():
    [result] = decode([FRAMES[3]["frame"].rstrip("\r")], "--command", "EE")
    assert result["ok"] is False and "no read command with CID2 EE" in result["detail"] and "D1" in result["detail"]
