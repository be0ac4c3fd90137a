"""`python -m experiments.generative_table`: the README's cross-family table from the results.json of
finished pixelcnn, vae and gan runs, each number where it belongs; bad input in one line."""

import json

import pytest

from experiments import generative_table


def write(workdir, models, uniform=4.087462841250339):
    workdir.mkdir()
    (workdir / "results.json").write_text(json.dumps({"models": models, "uniform_bits_per_dim": uniform}))
    return workdir


def runs(tmp_path):
    common = {"class_histogram": [3, 0, 5], "training_seconds": 30.7, "sampling_seconds_per_image": 0.00825}
    return [
        write(tmp_path / "pixelcnn", {"gated_pixelcnn": {**common, "test_bits_per_dim": 1.7521, "parameters": 105905,
                                                         "frechet_distance": 2.869, "classifier_score": 6.08}}),
        write(tmp_path / "vae", {"VAE, latent 16": {**common, "test_bits_per_dim": 1.85, "parameters": 161922,
                                                    "negative_elbo_bits_per_dim": 1.9561, "frechet_distance": 6.36,
                                                    "classifier_score": 4.116, "class_histogram": [1, 1, 1]}}),
        write(tmp_path / "gan", {"DCGAN, minimax": {**common, "test_bits_per_dim": None, "parameters": 41665,
                                                    "frechet_distance": 24.01, "classifier_score": 2.512}}),
    ]


def test_every_model_is_a_row_with_its_numbers_and_the_uniform_bound_last(tmp_path):
    lines = generative_table.markdown(runs(tmp_path)).splitlines()
    assert lines[0] == "| " + " | ".join(generative_table.COLUMNS) + " |"
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    assert rows == [
        ["gated PixelCNN", "1.752", "exact", "8", "2.87", "6.08", "2 of 3", "31", "8.250", "105,905"],
        ["VAE, latent 16", "1.850", "importance-weighted estimate (bound: 1.956)", "3", "6.36", "4.12", "3 of 3", "31",
         "8.250", "161,922"],
        ["DCGAN, minimax", "—", "none (no likelihood)", "8", "24.01", "2.51", "2 of 3", "31", "8.250", "41,665"],
        ["uniform distribution", "4.087", "exact (the bound to beat)", "—", "—", "—", "—", "—", "—", "—"],
    ]


def test_runs_on_other_data_or_not_generative_are_one_line(tmp_path, capsys):
    pixelcnn, vae, _ = runs(tmp_path)
    cifar = write(tmp_path / "cifar", {}, uniform=8.0)
    classify = tmp_path / "classify"
    classify.mkdir()
    (classify / "results.json").write_text(json.dumps({"rows": []}))
    for argv, message in [([pixelcnn, cifar], "on data of different levels"),
                          ([vae, classify], "is not the workdir of a pixelcnn, vae or gan run"),
                          ([tmp_path / "missing"], "holds no results.json"),
                          ([], "usage: python -m experiments.generative_table")]:
        with pytest.raises(SystemExit) as exit_info:
            generative_table.main(["generative_table", *map(str, argv)])
        assert exit_info.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], lines
