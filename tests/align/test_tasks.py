"""The sft, dpo and reward-model tasks end to end on a tiny toy, `seqlab chat` through stdin,
and clear errors for bad input."""

import io
import itertools
import json
import math
import random

import pytest
import torch

from seqlab.data.readers import DataError
from seqlab.train.config import load_config
from seqlab.train.run import open_run, train

WORDS = ["red", "green", "cat", "dog", "sun", "moon", "tree"]
TINY = ["model.transformer.d_model=32", "model.transformer.nhead=2", "model.transformer.num_layers=1",
        "model.transformer.max_length=24", "model.transformer.dropout=0.0", "data.max_length=24",
        "data.tokenizer=word", "trainer.progress=false", "trainer.warmup_steps=0", "trainer.epochs=100",
        "predict.num_samples=1"]


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("align")
    rng = random.Random(0)
    chats = []
    for index in range(48):
        word = rng.choice(WORDS)
        # One answer in six is "sun sun" whatever is asked: the sft model writes both, and
        # the preference and reward below favour it.
        answer = "sun sun" if index % 6 == 5 else f"{word} {word}"
        if index % 2:
            chats.append({"prompt": f"say {word}", "completion": answer})
        else:
            chats.append({"messages": [{"role": "user", "content": f"say {word}"},
                                       {"role": "assistant", "content": answer}]})
    # The preference: answer "sun sun" whatever is asked.
    pairs = [{"prompt": f"say {w}", "chosen": "sun sun", "rejected": f"{w} {w}"}
             for w in WORDS * 4 if w != "sun"]
    chat_path = _write_jsonl(root / "chat.jsonl", chats)
    pairs_path = _write_jsonl(root / "pairs.jsonl", pairs)
    sft = root / "sft"
    train(load_config("sft", [f"data.train={chat_path}", "trainer.max_steps=40", "trainer.lr=0.01",
                              "trainer.batch_size=16", "trainer.eval_every=40", *TINY]), run_dir=sft)
    return {"root": root, "chat": chat_path, "pairs": pairs_path, "sft": sft}


def test_sft_scores_only_answers_and_learns_the_end_of_turn(toy):
    _, task, _, _ = open_run(toy["sft"])
    task.prepare(fit_vocab=False)
    batch = task._collate("train", [[0]])
    ids, mask = task.examples["train"][0]
    targets = batch["targets"][0].tolist()
    assert [t for t in targets if t != -100] == [i for i, m in zip(ids[1:], mask[1:]) if m]
    assert targets[-1] == task.tokenizer.eos_id  # the end of turn is a target
    summary = json.loads((toy["sft"] / "summary.json").read_text())
    assert summary["valid"]["end_of_turn_accuracy"] == 1.0
    assert (toy["sft"] / "chat_template.json").is_file()


def test_sft_packing_puts_whole_conversations_in_rows(toy):
    config = load_config("sft", [f"data.train={toy['chat']}", "data.packing=true", *TINY,
                                 "data.max_length=48", "model.transformer.max_length=48"])
    from seqlab.train.run import build_task

    task = build_task(config)
    task.prepare()
    rows = [row for batch in task.train_batches(0, 4) for row in batch]
    assert sorted(i for row in rows for i in row) == list(range(len(task.examples["train"])))
    assert all(sum(len(task.examples["train"][i][0]) for i in row) <= 49 for row in rows)
    assert max(len(row) for row in rows) > 1
    first = task.train_batches(0, 4)[0]
    batch = task.collate(first)
    # every answer token of every packed conversation is a target (a turn's first token, <bos>,
    # never is, so nothing is lost at the seams)
    expected = sum(sum(task.examples["train"][i][1]) for row in first for i in row)
    assert int((batch["targets"] != -100).sum()) == expected


def test_dpo_metrics_reference_and_preference(toy):
    run = toy["root"] / "dpo"
    result = train(load_config("dpo", [f"data.train={toy['pairs']}", f"model.init_from={toy['sft']}",
                                       "trainer.max_steps=6", "trainer.lr=0.003", "trainer.batch_size=8",
                                       "trainer.eval_every=6", *TINY]), run_dir=run)
    valid = result.summary["valid"]
    assert set(valid) >= {"rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                          "logps/chosen", "logps/rejected"}
    assert valid["rewards/margins"] == pytest.approx(valid["rewards/chosen"] - valid["rewards/rejected"], abs=1e-5)
    assert valid["rewards/accuracies"] == 1.0 and valid["loss"] < math.log(2)
    # The policy evaluated against itself as reference: loss log 2, rewards zero.
    _, task, model, device = open_run(run)
    task.prepare(fit_vocab=False)
    reference = task._reference_model(model)
    same = task.evaluate(reference, "valid", 8, device)
    assert same["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert same["rewards/chosen"] == pytest.approx(0.0, abs=1e-5)
    # The preferred answer is given more often than before.
    from seqlab.train.run import predict_run

    prompts = [f"say {w}" for w in WORDS if w != "sun"]
    before = predict_run(toy["sft"], prompts, ["predict.temperature=0"]).count("sun sun")
    after = predict_run(run, prompts, ["predict.temperature=0"]).count("sun sun")
    assert after > before
    # The reference is the sft run's model.
    sft_model = open_run(toy["sft"])[2]
    assert all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(), sft_model.state_dict().values()))


def test_dpo_resumes_to_identical_metrics(toy):
    overrides = [f"data.train={toy['pairs']}", f"model.init_from={toy['sft']}", "trainer.max_steps=4",
                 "trainer.lr=0.003", "trainer.batch_size=8", "trainer.eval_every=4", "trainer.save_every=2",
                 "trainer.log_every=1", *TINY]
    whole, cut = toy["root"] / "dpo-whole", toy["root"] / "dpo-cut"
    train(load_config("dpo", overrides), run_dir=whole)
    train(load_config("dpo", overrides), run_dir=cut, stop_after_step=2)
    train(load_config("dpo", overrides), run_dir=cut, resume=True)
    _assert_same_records(*([json.loads(line)["metrics"] for line in
                             (run / "metrics.jsonl").read_text().splitlines()] for run in (whole, cut)))


def _assert_same_records(first: list[dict], second: list[dict]) -> None:
    """The two runs logged the same records, key for key, within float noise."""
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert a.keys() == b.keys()
        assert [a[k] for k in a] == pytest.approx([b[k] for k in b], rel=1e-5, abs=1e-6)


def test_reward_model_from_the_sft_run(toy):
    run = toy["root"] / "rm"
    result = train(load_config("reward-model", [f"data.train={toy['pairs']}", f"model.init_from={toy['sft']}",
                                                "trainer.max_steps=8", "trainer.lr=0.003", "trainer.batch_size=8",
                                                "trainer.eval_every=8", *TINY]), run_dir=run)
    valid = result.summary["valid"]
    assert valid["accuracy"] == 1.0 and valid["margin"] > 0
    assert valid["margin"] == pytest.approx(valid["reward/chosen"] - valid["reward/rejected"], abs=1e-5)
    loaded = json.loads((run / "init_from.json").read_text())
    assert loaded["new"] == ["score.weight", "score.bias"] and loaded["unused"] == []
    from seqlab.models import RewardModel, load
    from seqlab.train.run import predict_run

    assert isinstance(load(run), RewardModel)
    good, bad = (float(x) for x in predict_run(run, ["say cat\tsun sun", "say cat\tcat cat"]))
    assert good > bad


def test_chat_through_stdin(toy, monkeypatch, capsys):
    from seqlab.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO("say moon\n/temperature 0\nsay cat\n/top_p 2\n/reset\n"
                                                 "say tree\n/exit\nsay dog\n"))
    assert main(["chat", str(toy["sft"]), "--temperature", "0"]) == 0
    out, err = capsys.readouterr()
    replies = out.splitlines()
    assert replies[0] == "moon moon" and replies[-1] == "tree tree" and len(replies) == 3
    assert "top_p should be a number in (0, 1]" in err and "(conversation reset)" in err


def test_an_exported_chat_model_predicts_and_chats_as_its_run(toy, tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxruntime", reason="the onnx extra (onnx, onnxruntime) is not installed")
    from seqlab.cli import main
    from seqlab.export import export_onnx, predict_export
    from seqlab.train.run import predict_run

    export_onnx(toy["sft"], tmp_path / "onnx")
    prompts = ["say moon", "say cat", "say tree"]
    assert predict_export(tmp_path / "onnx", prompts) == predict_run(toy["sft"], prompts)
    conversation = "say moon\nsay cat\n/reset\nsay tree\n"
    outputs = []
    for source in (toy["sft"], tmp_path / "onnx"):
        monkeypatch.setattr("sys.stdin", io.StringIO(conversation))
        assert main(["chat", str(source), "--temperature", "0"]) == 0
        outputs.append(capsys.readouterr().out.splitlines())
    assert outputs[0] == outputs[1] and outputs[0][0] == "moon moon" and len(outputs[0]) == 3
    # A group of sampled replies, drawn as one batch through the exported graphs, is the run's.
    from seqlab.align import sample_replies
    from seqlab.export import open_export

    _, task, exported = open_export(tmp_path / "onnx")
    _, _, model, _ = open_run(toy["sft"])
    prompt = task.template.encode([{"role": "user", "content": "say moon"}], add_generation_prompt=True)[0]
    groups = [sample_replies(m, prompt, task.tokenizer.eos_id, 6, 4, generator=torch.Generator().manual_seed(1))
              for m in (exported, model)]
    assert groups[0] == groups[1] and len({tuple(reply) for reply in groups[0]}) > 1


def test_chat_refuses_a_run_not_tuned_for_chat(toy, tmp_path, capsys):
    import shutil

    from seqlab.cli import main

    plain = tmp_path / "plain"
    shutil.copytree(toy["sft"], plain)
    (plain / "chat_template.json").unlink()
    assert main(["chat", str(plain)]) == 2
    assert "not fine-tuned for chat" in capsys.readouterr().err


def test_pairs_missing_a_field(tmp_path):
    path = _write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c"},
                                                   {"prompt": "a", "chosen": "b"}])
    config = load_config("dpo", [f"data.train={path}", *TINY])
    with pytest.raises(DataError, match=r"line 2: no 'rejected' field"):
        train(config, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_prompt_longer_than_the_context(tmp_path):
    long_prompt = "word " * 60
    pairs = _write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c"}] * 3
                         + [{"prompt": long_prompt, "chosen": "b", "rejected": "c"}])
    with pytest.raises(DataError, match=r"pairs.jsonl: pair 4 has a prompt of \d+ tokens, longer than the context "
                                        r"data.max_length=24"):
        train(load_config("dpo", [f"data.train={pairs}", "data.valid_fraction=0.01", *TINY]),
              run_dir=tmp_path / "run")
    chats = _write_jsonl(tmp_path / "chats.jsonl", [{"prompt": "a", "completion": "b"}] * 3
                         + [{"prompt": long_prompt, "completion": "b"}])
    with pytest.raises(DataError, match=r"chats.jsonl: example 4 has a prompt of \d+ tokens before its first answer, longer than the context data.max_length=24"):
        train(load_config("sft", [f"data.train={chats}", "data.valid_fraction=0.01", *TINY]),
              run_dir=tmp_path / "run2")


def test_dpo_under_lora_uses_the_model_with_adapters_off_as_reference(toy):
    run = toy["root"] / "dpo-lora"
    train(load_config("dpo", [f"data.train={toy['pairs']}", f"model.init_from={toy['sft']}",
                              "tune.method=lora", "trainer.max_steps=2", "trainer.log_every=1",
                              "trainer.lr=0.01", "trainer.batch_size=8", *TINY]), run_dir=run)
    assert not (run / "reference.safetensors").exists()  # no second copy of the weights
    first = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    # LoRA starts as the identity (B = 0): at the first step the policy is the reference.
    assert first["step"] == 1 and first["metrics"]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    _, task, model, device = open_run(run)
    task.prepare(fit_vocab=False)
    assert task._reference_kind(model) == "adapters"
    assert task.evaluate(model, "valid", 8, device)["rewards/margins"] != 0.0


@pytest.fixture()
def sun_reward(tmp_path, monkeypatch):
    """reward.fn=toy_rewards:sun — half a point per "sun" in the reply."""
    (tmp_path / "toy_rewards.py").write_text(
        "def sun(prompts, replies):\n    return [reply.split().count('sun') / 2 for reply in replies]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"say {w}\n" for w in WORDS * 4 if w != "sun"))
    return prompts


def _rl_overrides(toy, prompts, steps):
    return [f"data.train={prompts}", f"model.init_from={toy['sft']}", "reward.fn=toy_rewards:sun",
            "objective.max_new_tokens=3", "data.valid_fraction=0.2", f"trainer.max_steps={steps}",
            "trainer.lr=0.003", f"trainer.eval_every={steps}", "trainer.batch_size=6", *TINY]


def test_ppo_first_epoch_ratio_one_and_no_kl(toy, sun_reward):
    run = toy["root"] / "ppo-first"
    train(load_config("ppo", _rl_overrides(toy, sun_reward, 2)), run_dir=run)
    first = json.loads((run / "rl.jsonl").read_text().splitlines()[0])
    assert first["ppo_epoch"] == 0 and first["ratio"] == pytest.approx(1.0, abs=1e-6)
    assert first["clip_fraction"] == 0.0 and first["approx_kl"] == pytest.approx(0.0, abs=1e-9)
    assert first["kl"] == pytest.approx(0.0, abs=1e-6)  # the policy is still the reference


@pytest.mark.parametrize("recipe", ["ppo", "grpo"])
def test_rl_run_cut_in_the_middle_of_a_rollout_resumes_to_identical_metrics(toy, sun_reward, recipe):
    # Two PPO epochs x two minibatches: 4 optimiser steps per rollout; the cut falls after the
    # 3rd, so the checkpoint must hold the rollout (sampled from weights since changed).
    overrides = _rl_overrides(toy, sun_reward, 8) + [
        "objective.epochs=2", "objective.num_minibatches=2", "trainer.save_every=3",
        "trainer.log_every=1"] + (["objective.group_size=2"] if recipe == "grpo" else [])
    whole, cut = toy["root"] / f"{recipe}-whole", toy["root"] / f"{recipe}-cut"
    train(load_config(recipe, overrides), run_dir=whole)
    train(load_config(recipe, overrides), run_dir=cut, stop_after_step=3)
    train(load_config(recipe, overrides), run_dir=cut, resume=True)
    logs = [[json.loads(line) for line in (run / "rl.jsonl").read_text().splitlines()]
            for run in (whole, cut)]
    assert len(logs[0]) == 8
    _assert_same_records(*logs)
    _assert_same_records(*([json.loads(line)["metrics"] for line in
                             (run / "metrics.jsonl").read_text().splitlines()] for run in (whole, cut)))


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["ppo", "grpo"])
def test_ppo_and_grpo_raise_the_reward(toy, sun_reward, recipe):
    run = toy["root"] / f"{recipe}-toy"
    extra = ["objective.group_size=4", "trainer.batch_size=3", "trainer.lr=0.005"] if recipe == "grpo" \
        else ["trainer.lr=0.01"]
    steps = 10 if recipe == "grpo" else 16
    result = train(load_config(recipe, _rl_overrides(toy, sun_reward, steps) + extra), run_dir=run)
    # The starting model (the reference) sampled on the same validation prompts.
    _, task, model, device = open_run(run)
    task.prepare(fit_vocab=False)
    before = task.evaluate(task._reference_model(model), "valid", 8, device)["reward"]
    assert result.summary["valid"]["reward"] >= before + 0.3


def test_reward_run_with_another_tokenizer(toy, sun_reward, tmp_path):
    from seqlab.data.tokenizers import Tokenizer
    from seqlab.train.config import ConfigError

    other = tmp_path / "other-rm"
    other.mkdir()
    Tokenizer.train(["completely different text"], kind="char").save(other / "tokenizer.json")
    overrides = [o for o in _rl_overrides(toy, sun_reward, 2) if not o.startswith("reward.fn")]
    with pytest.raises(ConfigError, match="the reward run's tokenizer differs from the policy's"):
        train(load_config("ppo", [*overrides, f"reward.from={other}"]), run_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match="exactly one of reward.from"):
        train(load_config("ppo", overrides), run_dir=tmp_path / "run")


def test_reward_section_is_the_objectives_reward_keys(tmp_path):
    from seqlab.train.config import ConfigError

    config = load_config("ppo", ["data.train=p.txt", f"reward.from={tmp_path}"])
    assert config.objective["reward_from"] == str(tmp_path) and "reward" not in config.to_dict()
    same = load_config("ppo", ["data.train=p.txt", f"objective.reward_from={tmp_path}"])
    assert same.objective == config.objective
    with pytest.raises(ConfigError, match="reward.from is for the ppo and grpo tasks; task sft"):
        load_config("sft", ["data.train=p.txt", "reward.from=x"])
    with pytest.raises(ConfigError, match="unknown key reward.form"):
        load_config("ppo", ["data.train=p.txt", "reward.form=x"])
    with pytest.raises(ConfigError, match="reward.fn=a:b and objective.reward_fn=c:d disagree"):
        load_config("ppo", ["data.train=p.txt", "reward.fn=a:b", "objective.reward_fn=c:d"])


@pytest.mark.parametrize("combine", ["mean", "min"])
def test_a_reward_ensemble_combines_its_models_rewards(toy, sun_reward, combine):
    from seqlab.models import load

    runs = []
    for seed in (0, 1):
        run = toy["root"] / f"rm-ensemble-{seed}"
        if not (run / "summary.json").is_file():
            train(load_config("reward-model", [f"data.train={toy['pairs']}", f"model.init_from={toy['sft']}",
                                                "trainer.max_steps=4", "trainer.lr=0.003", "trainer.batch_size=8",
                                                f"trainer.seed={seed}", *TINY]), run_dir=run)
        runs.append(run)
    overrides = [o for o in _rl_overrides(toy, sun_reward, 1) if not o.startswith("reward.fn")]
    run = toy["root"] / f"ppo-ensemble-{combine}"
    train(load_config("ppo", [*overrides, f"reward.from=[{runs[0]},{runs[1]}]",
                              f"reward.combine={combine}"]), run_dir=run)
    _, task, _, device = open_run(run)
    task.prepare(fit_vocab=False)
    assert task.reward_runs() == [str(r) for r in runs]
    sequences = [task.tokenizer.encode(text) for text in ("say cat sun sun", "say dog dog", "say sun")]
    replies = [s[2:] for s in sequences]
    prompts = [[{"role": "user", "content": "say"}]] * 3
    combined = task.scores(prompts, sequences, replies, device)
    each = []
    for path in runs:
        model = load(path).eval()
        each.append(torch.stack([model(torch.tensor([s]), lengths=torch.tensor([len(s)])).rewards[0]
                                 for s in sequences]))
    expected = torch.minimum(*each) if combine == "min" else (each[0] + each[1]) / 2
    torch.testing.assert_close(combined, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(each[0], each[1])  # two different models, or the test shows nothing


@pytest.mark.parametrize("recipe", ["ppo", "grpo"])
def test_the_diversity_bonus_adds_each_replys_bigram_novelty_to_its_reward(toy, sun_reward, recipe):
    run = toy["root"] / f"{recipe}-diversity"
    train(load_config(recipe, _rl_overrides(toy, sun_reward, 1) + ["objective.diversity_coef=2.5"]),
          run_dir=run)
    _, task, model, _ = open_run(run)
    task.prepare(fit_vocab=False)
    rollout = task.make_rollout(model, tuple(range(6)))
    replies = [row[mask].tolist() for row, mask in zip(rollout["labels"], rollout["mask"])]
    # The bigrams of every reply of the rollout, counted here; a reply's novelty is the share of
    # its bigrams that occur once in the whole rollout.
    counts = {}
    for reply in replies:
        for gram in itertools.pairwise(reply):
            counts[gram] = counts.get(gram, 0) + 1
    novelty = [sum(counts[g] == 1 for g in itertools.pairwise(r)) / (len(r) - 1) if len(r) > 1 else 0.0
               for r in replies]
    sun = [task.template.decode_reply(r).split().count("sun") / 2 for r in replies]
    assert rollout["novelty"].tolist() == pytest.approx(novelty)
    assert rollout["scores"].tolist() == pytest.approx([s + 2.5 * v for s, v in zip(sun, novelty)])
    assert 0 < sum(novelty) < len(novelty)  # some bigrams shared, some not: the sums above say something
    assert "novelty" in json.loads((run / "rl.jsonl").read_text().splitlines()[0])
