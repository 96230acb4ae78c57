"""Result tables: a snapshot of the layout users read."""

from edge_rl.table import format_table


def test_table_snapshot() -> None:
    text = format_table(
        ["policy", "return", "success", "ok"],
        [["DQN", 97.484, 1.0, True], ["baseline: fixed", 63.0, 0.63, False], ["big", 2139.4, float("nan"), True]],
    )
    assert text == (
        "policy            return  success  ok\n"
        "---------------  -------  -------  -----\n"
        "DQN                97.48    1.000  True\n"
        "baseline: fixed    63.00    0.630  False\n"
        "big              2,139.4      nan  True"
    )
