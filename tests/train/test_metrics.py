"""metrics.jsonl and TensorBoard: records written, read back, cut at the resume step."""

import json

from visionax.train.metrics import METRICS_FILE, MetricWriter, last_record, read_metrics


def test_records_round_trip_and_resume_drops_later_records(tmp_path):
    writer = MetricWriter(tmp_path, start_step=0, total_steps=10)
    for step in (2, 4, 6):
        writer.write(step, "train", {"loss": 1.0 / step})
    writer.write(4, "eval", {"accuracy": 0.5})
    writer.close()
    assert [record["step"] for record in read_metrics(tmp_path)] == [2, 4, 6, 4]
    assert last_record(tmp_path, "train") == {"step": 6, "split": "train", "loss": 1.0 / 6}
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    resumed = MetricWriter(tmp_path, start_step=4, total_steps=10)
    resumed.close()
    assert [json.loads(line)["step"] for line in (tmp_path / METRICS_FILE).read_text().splitlines()] == [2, 4, 4]
    assert last_record(tmp_path, "missing") == {}
