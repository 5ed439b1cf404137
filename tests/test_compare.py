"""seqlab compare: grid parsing, thresholds, the table's numbers, resuming an interrupted grid."""

import csv
import json

import pytest

from seqlab.compare import (
    command_line,
    compare,
    parse_threshold,
    parse_variant,
    resume_comparison,
    run_name,
    split_overrides,
)
from seqlab.train.config import ConfigError, load_config
from seqlab.train.run import RunDirError, train

TINY = ["data.length=4", "data.train_size=32", "data.valid_size=16", "data.test_size=16",
        "model.hidden_size=3", "trainer.epochs=2", "trainer.batch_size=16", "trainer.eval_every=1",
        "trainer.progress=false", "trainer.log_every=1", "trainer.scheduler=constant", "trainer.warmup_steps=0"]


def test_split_overrides_makes_axes_of_comma_lists():
    axes, fixed = split_overrides(["model.cell=rnn,lstm, gru", "trainer.lr=3e-3", "data.x=[1,2]"])
    assert axes == [("model.cell", ["rnn", "lstm", "gru"])]
    assert fixed == ["trainer.lr=3e-3", "data.x=[1,2]"]
    with pytest.raises(ConfigError, match="given twice"):
        split_overrides(["model.cell=rnn", "model.cell=lstm,gru"])
    with pytest.raises(ConfigError, match="empty value"):
        split_overrides(["model.cell=rnn,,gru"])
    with pytest.raises(ConfigError, match="key.sub=value"):
        split_overrides(["model.cell"])


def test_threshold_parsing_and_comparison():
    t = parse_threshold("mse<0.01")
    assert (t.metric, t.op, t.value) == ("mse", "<", 0.01)
    assert t.reached(0.005) and not t.reached(0.01) and not t.reached(None) and not t.reached(float("nan"))
    assert parse_threshold("accuracy >= 0.9").reached(0.9)
    assert str(parse_threshold("loss<=1e-3")) == "loss<=0.001"
    with pytest.raises(ConfigError, match="METRIC<VALUE"):
        parse_threshold("mse 0.01")


def test_run_names_use_short_keys_unless_they_clash():
    assert run_name({"model.cell": "lstm", "trainer.seed": "1"}) == "cell=lstm_seed=1"
    assert run_name({"data.length": "5", "model.length": "6"}) == "data.length=5_model.length=6"
    assert run_name({}) == "run"


def read_csv(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_compare_grid_table_curves_and_diagnostics(tmp_path):
    out = tmp_path / "cmp"
    result = compare("adding-lstm", TINY + ["model.cell=rnn,gru"], seeds=2, threshold="mse<100",
                     out_dir=out)
    names = [row.name for row in result.rows]
    assert names == ["cell=rnn_seed=0", "cell=rnn_seed=1", "cell=gru_seed=0", "cell=gru_seed=1"]
    table = read_csv(out / "table.csv")
    assert [line["cell"] for line in table] == ["rnn", "rnn", "gru", "gru"]
    for line, name in zip(table, names):
        summary = json.loads((out / "runs" / name / "summary.json").read_text())
        config = load_config(str(out / "runs" / name / "config.yaml"))
        assert config.trainer.seed == int(line["seed"]) and config.trainer.diagnostics
        assert float(line["test mse"]) == pytest.approx(summary["test"]["mse"], rel=1e-6)
        assert int(line["parameters"]) == summary["run"]["num_parameters"]
        assert float(line["wall s"]) == pytest.approx(summary["run"]["elapsed_seconds"])
        # Any first evaluation beats MSE 100: reached at the first validation step.
        first_valid = next(json.loads(x) for x in (out / "runs" / name / "metrics.jsonl").open()
                           if json.loads(x)["split"] == "valid")
        assert int(line["steps to mse<100"]) == first_valid["step"] == 1
        assert line["status"] == "done"
    # The GRU has three gate blocks where the RNN has one (same everything else).
    rnn, gru = int(table[0]["parameters"]), int(table[2]["parameters"])
    assert gru - rnn == 2 * (3 * 2 + 3 * 3 + 2 * 3)
    text = (out / "table.md").read_text()
    assert "Mean ± standard deviation over 2 seeds" in text and "2/2" in text
    for name in ("curves.png", "gradient_flow.png", "gradient_flow_init.png", "grad_norm.png"):
        assert (out / name).stat().st_size > 1000
    assert json.loads((out / "compare.json").read_text())["axes"] == [
        ["model.cell", ["rnn", "gru"]], ["trainer.seed", ["0", "1"]]]


def test_compare_resumes_where_it_stopped(tmp_path):
    out = tmp_path / "cmp"
    overrides = TINY + ["model.cell=rnn,gru"]
    first = compare("adding-lstm", overrides, out_dir=out, diagnostics=False)
    done_summary = out / "runs" / "cell=rnn" / "summary.json"
    stamp = done_summary.stat().st_mtime_ns
    reference = json.loads((out / "runs" / "cell=gru" / "summary.json").read_text())
    # Interrupt the GRU run after its first step, as Ctrl-C would leave it.
    gru_dir = out / "runs" / "cell=gru"
    for path in sorted(gru_dir.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    gru_dir.rmdir()
    config = load_config("adding-lstm", TINY + ["model.cell=gru"])
    train(config, run_dir=gru_dir, stop_after_step=1)
    assert not (gru_dir / "summary.json").exists()

    again = resume_comparison(out)
    assert done_summary.stat().st_mtime_ns == stamp  # the finished run was skipped
    resumed = json.loads((gru_dir / "summary.json").read_text())
    assert resumed["test"] == pytest.approx(reference["test"], rel=1e-5)  # same numbers as uninterrupted
    assert [row.status for row in again.rows] == ["done", "done"] == [row.status for row in first.rows]


def test_an_out_dir_holding_another_comparison_is_refused(tmp_path):
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "compare.json").write_text(json.dumps(
        {"source": "copy-lstm", "axes": [["model.cell", ["rnn", "gru"]]], "fixed": [],
         "threshold": None, "diagnostics": True}))
    with pytest.raises(RunDirError, match="holds another comparison"):
        compare("adding-lstm", TINY + ["model.cell=rnn,gru"], out_dir=out)
    with pytest.raises(ConfigError, match="--seeds"):
        compare("adding-lstm", TINY + ["trainer.seed=1,2"], seeds=2, out_dir=tmp_path / "x")
    with pytest.raises(ConfigError, match="unknown config key"):
        compare("adding-lstm", TINY + ["model.cel=rnn,gru"], out_dir=tmp_path / "y")
    assert not (tmp_path / "y").exists()


def test_variants_set_several_keys_and_the_command_line_prints_the_table(tmp_path, capsys):
    assert parse_variant("irnn: model.cell=rnn model.init=identity") == (
        "irnn", ["model.cell=rnn", "model.init=identity"])
    with pytest.raises(ConfigError, match="NAME: key=value"):
        parse_variant("no colon here")
    out = tmp_path / "cmp"
    code = command_line(["adding-lstm", *TINY, "--no-diagnostics", "--out", str(out),
                         "--variant", "irnn: model.cell=rnn model.nonlinearity=relu model.init=identity",
                         "--variant", "lstm: model.cell=lstm"])
    assert code == 0
    irnn = load_config(str(out / "runs" / "variant=irnn" / "config.yaml")).section("model")
    assert (irnn.cell, irnn.nonlinearity, irnn.init) == ("rnn", "relu", "identity")
    printed = capsys.readouterr().out
    assert "| variant |" in printed and "| irnn |" in printed and "| lstm |" in printed
    assert "--variant 'irnn: model.cell=rnn model.nonlinearity=relu model.init=identity'" in printed
    assert not (out / "gradient_flow.png").exists()


def test_every_claim_of_the_benchmark_is_a_valid_grid():
    """benchmarks/claims.py's command lines name recipes and keys that exist."""
    import importlib.util
    import itertools
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "claims.py"
    spec = importlib.util.spec_from_file_location("claims", path)
    claims = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(claims)
    for name in claims.CLAIMS:
        args = claims.command(name)
        if args[0] != "compare":
            load_config(args[1], [a for a in args[2:] if "=" in a and not a.startswith("--")])
            continue
        source, rest = args[1], args[2:]
        variants = [rest[i + 1] for i, a in enumerate(rest) if a == "--variant"]
        flags = {i for i, a in enumerate(rest) if a.startswith("--")}
        overrides = [a for i, a in enumerate(rest) if i not in flags and i - 1 not in flags]
        axes, fixed = split_overrides(overrides)
        named = [parse_variant(v)[1] for v in variants] or [[]]
        for variant, combo in itertools.product(named, itertools.product(*(v for _, v in axes))):
            settings = [f"{key}={value}" for (key, _), value in zip(axes, combo)]
            load_config(source, fixed + variant + settings)


def test_a_diverging_run_is_recorded_as_failed_and_the_grid_goes_on(tmp_path, monkeypatch):
    import seqlab.train.run as run_module
    from seqlab.train.loop import TrainingError

    real_train = run_module.train

    def train_or_diverge(config, run_dir=None, **kwargs):
        if config.section("model").cell == "rnn":
            run_dir.mkdir(parents=True)
            raise TrainingError("the training loss became nan at step 3; try a smaller trainer.lr")
        return real_train(config, run_dir=run_dir, **kwargs)

    monkeypatch.setattr(run_module, "train", train_or_diverge)
    out = tmp_path / "cmp"
    result = compare("adding-lstm", TINY + ["model.cell=rnn,gru"], out_dir=out, diagnostics=False)
    assert [row.status for row in result.rows] == [
        "failed: the training loss became nan at step 3", "done"]
    assert (out / "runs" / "cell=rnn" / "failed.txt").is_file()
    table = read_csv(out / "table.csv")
    assert table[0]["status"].startswith("failed") and table[0]["test mse"] == ""
    # Resuming does not retry a failed run.
    monkeypatch.setattr(run_module, "train", real_train)
    again = resume_comparison(out)
    assert again.rows[0].status == result.rows[0].status
