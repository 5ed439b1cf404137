"""Export directories through the command line: predict, eval, quantize, checksums, errors."""

import json

import numpy as np
import pytest
import torch

from seqlab.cli import main
from seqlab.export import ExportError, export_onnx, open_export, predict_export, read_manifest
from seqlab.train.run import evaluate_run, predict_run

TOLERANCE = 1e-4
INPUTS = {"classifier": ["the film was good", "awful", "the film was long and dull"],
          "classifier-transformer": ["the film was good", "awful"],
          "tagger": ["the dog runs", "the cat"], "lm": ["The ", "def f"],
          "lm-transformer": ["The "], "seq2seq": ["a b c d", "e"], "seq2seq-concat": ["a b c d", "e"],
          "seq2seq-transformer": ["a b c d", "e f"]}


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_predict_on_an_export_prints_the_runs_lines(runs, name, capsys):
    run_dir, onnx_dir = runs[name]
    expected = predict_run(run_dir, INPUTS[name])
    assert predict_export(onnx_dir, INPUTS[name]) == expected
    assert main(["predict", str(onnx_dir), *INPUTS[name]]) == 0
    assert capsys.readouterr().out == "".join(line + "\n" for line in expected)


def test_eval_on_an_export_reproduces_the_runs_metrics(runs, capsys):
    run_dir, onnx_dir = runs["classifier"]
    assert main(["eval", str(onnx_dir)]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert got["valid"] == pytest.approx(evaluate_run(run_dir)["valid"], abs=1e-5)


def test_manifest_lists_graphs_files_and_differences(runs):
    _, onnx_dir = runs["seq2seq"]
    manifest = read_manifest(onnx_dir)
    assert manifest["family"] == "seq2seq" and set(manifest["graphs"]) == {"encoder", "decoder"}
    assert {"config.yaml", "tokenizer.json"} <= set(manifest["files"])
    assert all(graph["max_abs_difference"] <= TOLERANCE for graph in manifest["graphs"].values())


def test_a_corrupted_graph_is_refused(runs, tmp_path, capsys):
    import shutil

    _, onnx_dir = runs["tagger"]
    copy = tmp_path / "copy"
    shutil.copytree(onnx_dir, copy)
    data = bytearray((copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ExportError, match="does not match its sha256"):
        predict_export(copy, ["the dog runs"])
    assert main(["predict", str(copy), "the dog runs"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "corrupt" in err and "Traceback" not in err


def test_export_refuses_a_directory_with_other_files(runs, tmp_path, capsys):
    run_dir, _ = runs["tagger"]
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not an export directory"):
        export_onnx(run_dir, tmp_path)
    assert main(["export", str(run_dir), "--out", str(tmp_path)]) == 2


def test_quantized_export_predicts_and_evaluates(runs, tmp_path, capsys):
    run_dir, _ = runs["classifier"]
    assert main(["quantize", str(run_dir), "--out", str(tmp_path / "int8")]) == 0
    manifest = read_manifest(tmp_path / "int8")
    assert manifest["quantized"] and manifest["graphs"]["model"]["bytes"] > 0
    lines = predict_export(tmp_path / "int8", INPUTS["classifier"])
    labels = [line.split("\t")[0] for line in predict_run(run_dir, INPUTS["classifier"])]
    assert [line.split("\t")[0] for line in lines] == labels  # a tiny model keeps its choices
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "int8")]) == 0
    assert "accuracy" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["valid"]


def test_train_export_predict_through_the_command_line(tmp_path, capsys):
    run_dir, onnx_dir = tmp_path / "run", tmp_path / "onnx"
    data = tmp_path / "train.conll"
    data.write_text("\n".join(f"the DT\n{noun} NN\nruns VB\n" for noun in ["cat", "dog"] * 6))
    assert main(["train", "tag-bilstm", f"data.train={data}", "model.hidden_size=4",
                 "model.embedding_dim=4", "trainer.max_steps=2", "trainer.progress=false",
                 "trainer.batch_size=4", "--run-dir", str(run_dir)]) == 0
    assert main(["export", str(run_dir), "--format", "onnx", "--out", str(onnx_dir)]) == 0
    capsys.readouterr()
    assert main(["predict", str(run_dir), "the dog runs"]) == 0
    expected = capsys.readouterr().out
    assert main(["predict", str(onnx_dir), "the dog runs"]) == 0
    assert capsys.readouterr().out == expected and expected.startswith("the/")


def test_captioner_export_predicts_the_runs_captions(runs, tmp_path):
    from PIL import Image

    run_dir, onnx_dir = runs["captioner"]
    paths = []
    for index, colour in enumerate([(255, 0, 0), (0, 128, 255)]):
        pixels = np.zeros((16, 16, 3), dtype=np.uint8)
        pixels[4:12, 2 + index * 4:10 + index * 4] = colour
        paths.append(str(tmp_path / f"image{index}.png"))
        Image.fromarray(pixels).save(paths[-1])
    assert predict_export(onnx_dir, paths) == predict_run(run_dir, paths)


def test_int8_keeps_gru_matrices_as_int8_with_a_scale_per_row(runs, tmp_path):
    import onnx
    from onnx import numpy_helper

    from seqlab.export.quantize import quantize_export

    _, onnx_dir = runs["seq2seq"]  # a BiGRU encoder and a GRU decoder
    manifest = quantize_export(onnx_dir, tmp_path / "int8")
    for name, graph in manifest["graphs"].items():
        assert graph["int8_recurrent_matrices"] == 2, name  # W and R of its GRU op
        floats = {t.name: numpy_helper.to_array(t)
                  for t in onnx.load(str(onnx_dir / graph["file"])).graph.initializer}
        quantized = {t.name: numpy_helper.to_array(t)
                     for t in onnx.load(str(tmp_path / "int8" / graph["file"])).graph.initializer}
        for key in [k[: -len("_int8")] for k in quantized if k.endswith("_int8")]:
            q, scale = quantized[f"{key}_int8"], quantized[f"{key}_scale"]
            assert q.dtype == np.int8 and key not in quantized
            w = floats[key]  # (directions, gates x hidden, columns)
            assert np.allclose(scale, np.abs(w).max(axis=(0, 2)) / 127)
            assert np.abs(q * scale[None, :, None] - w).max() <= scale.max() / 2 + 1e-7
    # The int8 graphs decode as the float ones do, up to the rounding of the weights.
    _, task, exported = open_export(onnx_dir)
    _, _, int8 = open_export(tmp_path / "int8")
    src, lengths = torch.tensor([[5, 6, 7, 8]]), torch.tensor([4])
    memory, int8_memory = exported.encode(src, lengths), int8.encode(src, lengths)
    prev = torch.full((1,), task.tokenizer.bos_id)
    log_probs, _, _ = exported.step(prev, exported.init_state(memory), memory)
    int8_log_probs, _, _ = int8.step(prev, int8.init_state(int8_memory), int8_memory)
    assert (int8_log_probs - log_probs).abs().max() < 0.05
