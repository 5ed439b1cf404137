"""Tiny runs of every exportable family, made once for the export tests."""

import pytest

pytest.importorskip("onnx", reason="the onnx extra (onnx, onnxruntime) is not installed")
pytest.importorskip("onnxruntime", reason="the onnx extra (onnx, onnxruntime) is not installed")

TRAINER = ["trainer.max_steps=2", "trainer.progress=false", "trainer.batch_size=4",
           "trainer.eval_batch_size=8"]
TINY_TRANSFORMER = ["model.d_model=8", "model.nhead=2", "model.num_layers=2",
                    "model.dim_feedforward=16"]
REVERSAL = ["data.corpus=reversal", "data.train_size=64", "data.valid_size=8", "data.test_size=8"]


def write_classification(path, rows=24):
    words = {"pos": ["good", "great", "fine"], "neg": ["bad", "awful", "dull"]}
    lines = ["text,label"]
    for i in range(rows):
        label = "pos" if i % 2 else "neg"
        lines.append(f"the film was {words[label][i % 3]} and long,{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_conll(path, sentences=12):
    nouns = ["cat", "dog", "ball"]
    path.write_text("\n".join(f"the DT\n{nouns[i % 3]} NN\nruns VB\n" for i in range(sentences)))
    return path


def write_wide_source_pairs(path, pairs=48):
    """Pairs whose sources use 60 word types and targets 4: with separate vocabularies the
    source embedding is many times larger than the target one."""
    lines = [f"w{i % 60} w{(7 * i) % 60} w{(13 * i) % 60}\t{'ab'[i % 2]} {'cd'[i % 3 % 2]}"
             for i in range(pairs)]
    path.write_text("\n".join(lines) + "\n")
    return path


def recipes(tmp):
    """name -> (recipe, overrides): one run per exported family."""
    csv = write_classification(tmp / "train.csv")
    return {
        "classifier": ("classify-bilstm", [f"data.train={csv}", "model.hidden_size=4",
                                           "model.embedding_dim=4", "model.num_layers=2"]),
        "classifier-transformer": ("bert-classify", TINY_TRANSFORMER + [
            f"data.train={csv}", "data.max_length=16", "model.max_length=16"]),
        "tagger": ("tag-bilstm", [f"data.train={write_conll(tmp / 'train.conll')}",
                                  "model.hidden_size=4", "model.embedding_dim=4"]),
        "lm": ("charlm-lstm", ["data.max_chars=2000", "data.bptt=8", "model.hidden_size=8",
                               "model.embedding_dim=4", "model.num_layers=2",
                               "predict.max_new_tokens=12"]),
        "lm-transformer": ("gpt-charlm", TINY_TRANSFORMER + [
            "data.max_chars=2000", "data.bptt=16", "model.max_length=16",
            "predict.max_new_tokens=12"]),
        "seq2seq": ("reverse-gru", ["model.hidden_size=8", "model.embedding_dim=4",
                                    "data.train_size=64", "data.valid_size=8",
                                    "data.test_size=8"]),
        "seq2seq-luong": ("translate-lstm-luong", REVERSAL + ["model.hidden_size=8",
                                                              "model.embedding_dim=4"]),
        # translate-gru-attn: separate vocabularies, additive attention after the step, input feeding
        "seq2seq-concat": ("translate-gru-attn", REVERSAL + ["model.hidden_size=8",
                                                             "model.embedding_dim=4"]),
        "seq2seq-transformer": ("translate-transformer", TINY_TRANSFORMER + REVERSAL + [
            "predict.beam_size=2"]),
        # separate vocabularies, the source's 6x the target's
        "seq2seq-transformer-wide-source": ("translate-transformer", TINY_TRANSFORMER + [
            f"data.train={write_wide_source_pairs(tmp / 'wide.tsv')}", "data.min_frequency=1",
            "data.valid_fraction=0.2"]),
        "captioner": ("caption-gru", ["data.train_size=24", "data.valid_size=6",
                                      "data.test_size=5", "model.channels=[4,4]",
                                      "model.hidden_size=8", "model.embedding_dim=4",
                                      "data.image_size=16", "predict.max_length=8"]),
    }


def make_run(recipe, overrides, run_dir):
    """A run directory as `seqlab train` leaves it, with the model's initial weights.

    Everything a run holds for deployment (config.yaml, tokenizer / labels, model.safetensors)
    without the training loop, its plots and evaluations: the export tests compare graphs with
    the same weights, trained or not. One test trains a run for real through the CLI.
    """
    import yaml

    from seqlab.train.checkpoint import save_weights
    from seqlab.train.config import load_config
    from seqlab.train.run import build_task, seed_everything

    config = load_config(recipe, overrides + TRAINER)
    seed_everything(config.trainer.seed)
    task = build_task(config)
    task.prepare()
    model = task.build_model().eval()
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    task.save_artifacts(run_dir)
    save_weights(run_dir / "model.safetensors", model)
    return run_dir


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    """name -> (run directory, ONNX export directory), made and exported on first use."""
    from seqlab.export import export_onnx

    root = tmp_path_factory.mktemp("export-runs")
    made = {}

    class Runs:
        def __getitem__(self, name):
            if name not in made:
                recipe, overrides = recipes(root)[name]
                run_dir = make_run(recipe, overrides, root / name)
                export_onnx(run_dir, root / f"{name}-onnx")
                made[name] = (run_dir, root / f"{name}-onnx")
            return made[name]

    return Runs()
