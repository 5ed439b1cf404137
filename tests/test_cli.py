"""The `seqlab` command: recipes, train, eval, predict, and one-line user errors with exit codes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from seqlab.cli import main

TINY = ["model.hidden_size=4", "data.length=4", "data.train_size=16", "data.valid_size=8",
        "data.test_size=8", "trainer.batch_size=4", "trainer.progress=false"]


def run_cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code, err, *fragments):
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("seqlab: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cli") / "adding"
    assert main(["train", "adding-lstm", *TINY, "trainer.max_steps=3", "--run-dir", str(run_dir)]) == 0
    return run_dir


def test_recipes_lists_one_line_each(capsys):
    code, out, _ = run_cli(capsys, "recipes")
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()]
    assert {"classify-bilstm", "tag-bilstm", "charlm-lstm", "adding-lstm", "copy-lstm", "digits-gru",
            "forecast-gru"} <= set(names)
    assert all(len(line.split(None, 1)) == 2 for line in out.splitlines())


def test_train_prints_where_things_are(trained_run, capsys):
    for name in ("config.yaml", "model.safetensors", "metrics.jsonl", "summary.json", "checkpoint"):
        assert (trained_run / name).exists(), name
    assert any((trained_run / "plots").glob("*.png"))


def test_eval_reproduces_summary(trained_run, capsys):
    code, out, _ = run_cli(capsys, "eval", str(trained_run))
    assert code == 0
    results = json.loads(out.strip().splitlines()[-1])
    summary = json.loads((trained_run / "summary.json").read_text())
    assert results["valid"] == pytest.approx(summary["valid"], rel=1e-6)


def test_predict_from_args_and_stdin(trained_run, capsys, monkeypatch):
    import io

    code, out, _ = run_cli(capsys, "predict", str(trained_run), "0.5 0.2 0.3 0.9 | 0 3", "0.1 0.1 | 0 1")
    assert code == 0 and len(out.splitlines()) == 2
    first = float(out.splitlines()[0])
    monkeypatch.setattr(sys, "stdin", io.StringIO("0.5 0.2 0.3 0.9 | 0 3\n\n"))
    code, out, _ = run_cli(capsys, "predict", str(trained_run))
    assert code == 0 and float(out.strip()) == first


def test_unknown_key(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "adding-lstm", "trainer.lrr=1", "--run-dir", str(tmp_path / "r"))
    assert_user_error(code, err, "'trainer.lrr'", "did you mean 'trainer.lr'")
    assert not (tmp_path / "r").exists()


def test_wrong_type(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "adding-lstm", "trainer.epochs=many", "--run-dir", str(tmp_path / "r"))
    assert_user_error(code, err, "'trainer.epochs'", "'many'", "integer")


def test_missing_training_file_shows_the_override(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "classify-bilstm", "--run-dir", str(tmp_path / "r"))
    assert_user_error(code, err, "seqlab train classify-bilstm data.train=PATH")
    code, _, err = run_cli(capsys, "train", "classify-bilstm", f"data.train={tmp_path / 'none.csv'}",
                           "--run-dir", str(tmp_path / "r"))
    assert_user_error(code, err, "none.csv", "does not exist")
    assert not (tmp_path / "r").exists()


def test_malformed_and_empty_data_files(capsys, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "label": "a"}\n{"text": oops\n')
    code, _, err = run_cli(capsys, "train", "classify-bilstm", f"data.train={bad}", "--run-dir", str(tmp_path / "r"))
    assert_user_error(code, err, "bad.jsonl", "line 2")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    code, _, err = run_cli(capsys, "train", "classify-bilstm", f"data.train={empty}", "--run-dir", str(tmp_path / "r"))
    assert_user_error(code, err, "empty.csv")
    assert not (tmp_path / "r").exists()


def test_missing_label_column_lists_columns(capsys, tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("review,stars\ngood,5\nbad,1\n")
    code, _, err = run_cli(capsys, "train", "classify-bilstm", f"data.train={data}", "data.text_column=review",
                           "--run-dir", str(tmp_path / "r"))
    assert_user_error(code, err, "'label'", "review", "stars")


def test_not_a_run_dir(capsys, tmp_path):
    for command in (["eval", str(tmp_path)], ["predict", str(tmp_path), "x"],
                    ["train", "--resume", str(tmp_path)]):
        code, _, err = run_cli(capsys, *command)
        assert_user_error(code, err, "not a seqlab run directory")
    code, _, err = run_cli(capsys, "eval", str(tmp_path / "missing"))
    assert_user_error(code, err, "does not exist")


def test_corrupt_checkpoint_on_resume(capsys, tmp_path):
    run_dir = tmp_path / "run"
    assert main(["train", "adding-lstm", *TINY, "trainer.max_steps=2", "--run-dir", str(run_dir)]) == 0
    capsys.readouterr()
    tensors = next((run_dir / "checkpoint").glob("state-*.safetensors"))
    tensors.write_bytes(tensors.read_bytes()[:-10])
    code, _, err = run_cli(capsys, "train", "--resume", str(run_dir))
    assert_user_error(code, err, "corrupt checkpoint")
    (run_dir / "model.safetensors").write_bytes(b"\x00" * 20)
    code, _, err = run_cli(capsys, "predict", str(run_dir), "0.1 0.2 | 0 1")
    assert_user_error(code, err, "corrupt weights")


def test_nan_exits_with_status_1(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "adding-lstm", *TINY, "trainer.lr=1e30", "trainer.save_every=1",
                           "--run-dir", str(tmp_path / "r"))
    assert code == 1 and "last good checkpoint" in err and "Traceback" not in err


def test_unknown_command_and_usage(capsys):
    code, _, err = run_cli(capsys, "fly")
    assert code == 2 and "unknown command 'fly'" in err
    assert main([]) == 2


def test_console_script_runs_as_a_process(tmp_path):
    result = subprocess.run([sys.executable, "-m", "seqlab", "train", "adding-lstm", "trainer.lrr=1"],
                            capture_output=True, text=True, cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("seqlab: error: unknown config key 'trainer.lrr'")
    assert not (Path(tmp_path) / "runs").exists()


def test_ctrl_c_names_the_run_to_resume(capsys, tmp_path, monkeypatch):
    from seqlab.tasks.adding import AddingTask

    original = AddingTask.training_step
    calls = {"n": 0}

    def interrupted(self, model, batch, carry):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(self, model, batch, carry)

    monkeypatch.setattr(AddingTask, "training_step", interrupted)
    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "adding-lstm", *TINY, "trainer.save_every=2", "--run-dir", str(run_dir))
    assert code == 130 and f"seqlab train --resume {run_dir}" in err
    monkeypatch.undo()
    code, out, _ = run_cli(capsys, "train", "--resume", str(run_dir))
    assert code == 0 and "finished after" in out
