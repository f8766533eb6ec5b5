"""The study subcommand: its flags reach the study's config, a bad --dims names the flag."""


def test_study_cli_only_dims_tv_samples(tmp_path, monkeypatch):
    """The CLI flags reach the config and the command recorded in the report."""
    import jaxode_diffusion.cli.study as study_cli
    from jaxode_diffusion.cli.app import main

    seen = {}

    def fake_run(cfg):
        seen["cfg"] = cfg
        return {"timings": {"total": 0.0}}

    monkeypatch.setattr(study_cli, "run_study", fake_run)
    rc = main(["study", "--only", "dimension", "--dims", "2,4,128", "--tv-samples", "300", "--out", str(tmp_path / "o")])
    cfg = seen["cfg"]
    assert rc == 0 and cfg.only == ("dimension",) and cfg.dims == (2, 4, 128) and cfg.tv_samples == 300
    assert cfg.extras["command"].endswith("--only dimension --dims 2,4,128 --tv-samples 300")


def test_study_cli_bad_dims_names_the_flag(tmp_path, capsys):
    from jaxode_diffusion.cli.app import main

    rc = main(["study", "--quick", "--only", "dimension", "--dims", "2,x", "--out", str(tmp_path / "o")])
    assert rc == 2 and "--dims" in capsys.readouterr().err
