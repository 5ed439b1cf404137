"""Tiny runs served in the API tests: a classifier, a GPT, a chat model, the ONNX exports of
both language models, a recurrent seq2seq model and a Transformer one."""

import json

import pytest

pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn, httpx) is not installed")
pytest.importorskip("httpx", reason="the serve extra (fastapi, uvicorn, httpx) is not installed")

TRAINER = ["trainer.max_steps=2", "trainer.progress=false", "trainer.batch_size=4"]


def _make_run(recipe, overrides, run_dir):
    """A run directory (config, tokenizer / labels, weights) with the model's initial weights."""
    import yaml

    from seqlab.train.checkpoint import save_weights
    from seqlab.train.config import load_config
    from seqlab.train.run import build_task, seed_everything

    config = load_config(recipe, overrides + TRAINER)
    seed_everything(config.trainer.seed)
    task = build_task(config)
    task.prepare()
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    task.save_artifacts(run_dir)
    save_weights(run_dir / "model.safetensors", task.build_model())
    return run_dir


@pytest.fixture(scope="session")
def served_runs(tmp_path_factory):
    """{"classify", "gpt", "reverse": run dirs, "gpt-onnx": export dir (None without onnx)}."""
    root = tmp_path_factory.mktemp("serve-runs")
    csv = root / "train.csv"
    rows = [f"the film was {word} and long,{label}" for word, label in
            [("good", "pos"), ("bad", "neg"), ("great", "pos"), ("dull", "neg")] * 6]
    csv.write_text("text,label\n" + "\n".join(rows) + "\n")
    runs = {
        "classify": _make_run("classify-bilstm", [f"data.train={csv}", "model.hidden_size=4",
                                                  "model.embedding_dim=4"], root / "classify"),
        "gpt": _make_run("gpt-charlm", ["model.d_model=8", "model.nhead=2", "model.num_layers=1",
                                        "model.dim_feedforward=16", "data.max_chars=2000",
                                        "data.bptt=16", "model.max_length=16",
                                        "predict.max_new_tokens=20"], root / "gpt"),
        "reverse": _make_run("reverse-gru", ["model.hidden_size=8", "model.embedding_dim=4",
                                             "data.train_size=64", "data.valid_size=8",
                                             "data.test_size=8"], root / "reverse"),
    }
    chats = root / "chats.jsonl"
    chats.write_text("".join(
        json.dumps({"prompt": f"say {word}", "completion": f"{word} {word}"}) + "\n"
        for word in ["red", "green", "cat", "dog", "sun", "moon"] * 2))
    # Greedy replies (temperature 0): an exported graph must give the very same ones.
    runs["chat"] = _make_run("sft", [f"data.train={chats}", "data.tokenizer=word",
                                     "data.max_length=24", "model.transformer.max_length=24",
                                     "model.transformer.d_model=8", "model.transformer.nhead=2",
                                     "model.transformer.num_layers=1",
                                     "model.transformer.dim_feedforward=16",
                                     "predict.temperature=0", "predict.max_new_tokens=6"],
                             root / "chat")
    runs["transformer"] = _make_run("translate-transformer", [
        "data.corpus=reversal", "data.train_size=64", "data.valid_size=8", "data.test_size=8",
        "model.d_model=8", "model.nhead=2", "model.num_layers=2", "model.dim_feedforward=16"],
        root / "transformer")
    try:
        from seqlab.export import export_onnx

        for name in ("gpt", "chat"):
            export_onnx(runs[name], root / f"{name}-onnx")
            runs[f"{name}-onnx"] = root / f"{name}-onnx"
    except ImportError:
        runs["gpt-onnx"] = runs["chat-onnx"] = None
    return runs
