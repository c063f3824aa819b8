"""Hostile input shared by the tests and the benchmarks."""

# YAML that would take gigabytes or a deep recursion to load, and a value of 200,000 characters.
ALIAS_BOMB = "a: &a [" + ",".join(['"lol"'] * 9) + "]\n" + "".join(
    f"{n}: &{n} [" + ",".join([f"*{p}"] * 9) + "]\n" for p, n in zip("abcdefgh", "bcdefghi"))  # 9**9 strings
DEEP_NESTING = "bms_reader: " + "[" * 5000 + "\n"
HUGE_VALUE = "bms_reader:\n  bms_port: '" + "x" * 200_000 + "'\n"
HOSTILE_CONFIGS = {"alias-bomb": ALIAS_BOMB, "deep-nesting": DEEP_NESTING, "huge-value": HUGE_VALUE}
