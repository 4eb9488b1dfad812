"""The detection benchmark on a short simulation: its JSON has the documented structure and
every planted incident is detected by the learned baseline."""

from __future__ import annotations

import json

from simulators.bench.__main__ import main


def test_detection_benchmark_short_run(capsys):
    code = main(["detection", "--households", "48", "--days", "3", "--warmup", "15",
                 "--seed", "0", "--fixed-sweep", "2h,3h,6h"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["benchmark"] == "detection" and result["incidents"] >= 3
    for name in ("learned", "fixed"):
        row = result[name]
        for key in ("detection_rate", "median_delay_h", "p95_delay_h",
                    "false_alarms_per_100_household_days"):
            assert isinstance(row[key], (int, float)), (name, key)
        assert row["false_alarms_per_100_household_days"] >= 0
        assert row["median_delay_h"] <= row["p95_delay_h"] < 24
    assert result["learned"]["detection_rate"] == 1.0, result["learned"]["missed"]
    assert result["learned"]["missed"] == []
    assert [r["timeout_h"] for r in result["fixed_sweep"]] == [2.0, 3.0, 6.0]
    assert result["fixed"] in result["fixed_sweep"]
    ratio = result["false_alarm_ratio_fixed_to_learned"]
    assert ratio is None or ratio > 0
    # issue 15.6: trips told through the away state, and dead sensors give 无法监护
    without = result["learned_without_away"]
    assert without["detection_rate"] == 1.0
    assert (result["learned"]["false_alarms_per_100_household_days"]
            <= without["false_alarms_per_100_household_days"])
    assert result["dead_sensor_incidents"] >= 1
    for name in ("learned", "learned_without_away"):
        dead = result[name]["dead_sensors"]
        assert dead["incidents"] == result["dead_sensor_incidents"]
        assert dead["share"] == 1.0, dead["inactivity_alarm_instead"]
