"""The regularity subcommand on the built-in mixture target: the JSON profile and its plot."""

import json


def test_cli_gmm(tmp_path):
    from jaxode_diffusion.cli.regularity import main

    out = tmp_path / "reg"
    assert main(["regularity", "--target", "gmm", "--out", str(out), "--num-times", "3", "--batch", "4",
                 "--substeps", "1", "--source", "data"]) == 0
    data = json.loads((out / "regularity.json").read_text())
    assert data["meta"]["dim"] == 2 and len(data["t"]) == 3
    assert (out / "regularity.png").stat().st_size > 0
