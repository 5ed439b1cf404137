# %% [markdown]
# # Practical session 3 — The life-cycle of a language model in one sitting
#
# The four steps of a modern language model, each one seqlab run that starts from the one
# before (`model.init_from=RUN_DIR`), on a toy world small enough for a CPU:
#
# 1. **pre-training** — next-token prediction on unlabelled text (`pretrain-clm`);
# 2. **tuning** — chat fine-tuning (`sft`) with **LoRA**: a low-rank update of a few frozen
#    weight matrices (`tune.method=lora`), then merged into the weights;
# 3. **alignment** — **DPO** on preference pairs (`dpo`);
# 4. **deployment** — export to ONNX and serve over HTTP (`seqlab.serve`).
#
# Everything goes through seqlab's Python API; each step also names the command line that does
# the same. Two exercises: the LoRA layer and the DPO loss, each checked against seqlab.
#
# The toy world: eight words. The text says things like "say moon : moon moon"; the chat
# model learns to answer `say WORD` with `WORD WORD`; the preference then asks for "sun sun"
# whatever is asked (a stand-in for "answer politely"). See docs/lifecycle/*.md for the full
# story, and the real-data figures.

# %%
import json
import random
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from seqlab import course
from seqlab.train import load_config, predict_run, train
from seqlab.train.tuning import merge_run

torch.set_num_threads(1)  # tiny models: one thread is fastest, and fair on a shared machine
started, started_cpu = time.time(), time.process_time()
root = Path(tempfile.mkdtemp(prefix="seqlab-lifecycle-"))
print("runs go to", root)

WORDS = ["red", "green", "blue", "cat", "dog", "sun", "moon", "tree"]
# Every run below: no progress bar, no warm-up, one thread, tiny models.
COMMON = ["trainer.progress=false", "trainer.warmup_steps=0", "trainer.num_threads=1",
          "trainer.epochs=100"]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path

# %% [markdown]
# ## 1. Pre-training: a causal language model on plain text
#
# $$\mathcal{L} = -\frac{1}{T}\sum_t \log p_\theta(x_t \mid x_{<t})$$
#
# A one-layer GPT-style Transformer (d_model 32) with a word vocabulary, 80 steps.
# Command line: `seqlab train pretrain-clm data.train=corpus.txt data.tokenizer=word ...`

# %%
rng = random.Random(0)
lines = []
for _ in range(400):
    a, b = rng.sample(WORDS, 2)
    lines.append(rng.choice([f"say {a} : {a} {a}", f"the {a} and the {b}", f"{a} {a} {b} {b}",
                             f"say {b} : {b} {b}"]))
corpus = root / "corpus.txt"
corpus.write_text("\n".join(lines) + "\n")
print(lines[:4])

TINY = ["model.transformer.d_model=32", "model.transformer.nhead=2",
        "model.transformer.num_layers=1", "model.transformer.dropout=0.0"]
pretrained = root / "pretrain"
result = train(load_config("pretrain-clm", [
    f"data.train={corpus}", "data.tokenizer=word", "data.bptt=24", "model.transformer.max_length=24",
    "trainer.max_steps=80", "trainer.lr=0.005", "trainer.batch_size=16", "trainer.eval_every=80",
    *TINY, *COMMON]), run_dir=pretrained)
print("valid:", {k: round(v, 3) for k, v in result.summary["valid"].items()})
print(sorted(p.name for p in pretrained.iterdir()))

# %% [markdown]
# ## 2. Tuning with LoRA
#
# LoRA (Hu et al. 2021) freezes a weight W (out, in) and learns a low-rank update beside it:
#
# $$y = x W^\top + b + \frac{\alpha}{r}\, x A^\top B^\top, \qquad A\ (r, \text{in}),\ B\ (\text{out}, r)$$
#
# B starts at zero, so the tuned model starts as the base model; only A and B train (here r = 8
# on the query and value rows of the attention projection). Write the layer's forward pass:

# %%
def lora_linear(x, weight, bias, lora_A, lora_B, alpha, r):
    """x (N, in), weight (out, in), bias (out,), lora_A (r, in), lora_B (out, r) -> y (N, out)."""
    # TODO: the frozen layer F.linear(x, weight, bias) plus (alpha / r) times x A^T B^T
    raise NotImplementedError


course.check_lora_linear(lora_linear)

# %% [markdown]
# Now chat fine-tuning (SFT) of the pre-trained model, through LoRA: the loss counts the
# answer's tokens only (and its end-of-turn token, which teaches the model to stop).
# Command line: `seqlab train sft data.train=chat.jsonl model.init_from=runs/pretrain
# tune.method=lora tune.r=8`

# %%
chat = write_jsonl(root / "chat.jsonl",
                   [{"prompt": f"say {w}", "completion": f"{w} {w}"} for w in WORDS * 6])
tuned = root / "sft-lora"
result = train(load_config("sft", [
    f"data.train={chat}", f"model.init_from={pretrained}", "tune.method=lora", "tune.r=8",
    "trainer.max_steps=40", "trainer.lr=0.03", "trainer.batch_size=16", "trainer.eval_every=40",
    "data.max_length=24", *COMMON]), run_dir=tuned)
record = json.loads((tuned / "tune.json").read_text())
print(f"LoRA trained {record['trainable']:,} of {record['total']:,} parameters; "
      f"adapter file {(tuned / 'adapter.safetensors').stat().st_size / 1024:.1f} kB")
print("valid:", {k: round(v, 3) for k, v in result.summary["valid"].items()})
prompts = ["say moon", "say dog", "say red"]
print("replies:", predict_run(tuned, prompts, ["predict.temperature=0"]))

# %% [markdown]
# Merging folds the update into the weights, W ← W + (α/r) B A, and writes a normal run
# directory: the next steps need no adapter. Command line: `seqlab merge runs/sft-lora --out
# runs/sft`

# %%
merged = root / "sft"
merge_run(tuned, merged)
print("replies of the merged model:", predict_run(merged, prompts, ["predict.temperature=0"]))

# %% [markdown]
# ## 3. Alignment with DPO
#
# Direct preference optimisation (Rafailov et al. 2023) learns from pairs (prompt x, chosen
# y_w, rejected y_l) without a reward model. With π the model being trained and π_ref the
# frozen starting model, and log π(y|x) summed over the answer's tokens:
#
# $$\mathcal{L} = -\log\sigma\Big(\beta\big[(\log\pi(y_w|x) - \log\pi_{ref}(y_w|x))
#   - (\log\pi(y_l|x) - \log\pi_{ref}(y_l|x))\big]\Big)$$
#
# At the start π = π_ref and every loss is log 2. Write it, one loss per pair:

# %%
def dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta):
    """Each argument (N,) summed log-probabilities -> losses (N,)."""
    # TODO: margin = beta * ((policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)); loss = -logsigmoid(margin)
    raise NotImplementedError


course.check_dpo_loss(dpo_loss)

# %% [markdown]
# The preference: "sun sun", whatever is asked. Command line: `seqlab train dpo
# data.train=pairs.jsonl model.init_from=runs/sft`

# %%
pairs = write_jsonl(root / "pairs.jsonl",
                    [{"prompt": f"say {w}", "chosen": "sun sun", "rejected": f"{w} {w}"}
                     for w in WORDS * 3 if w != "sun"])
aligned = root / "dpo"
result = train(load_config("dpo", [
    f"data.train={pairs}", f"model.init_from={merged}", "trainer.max_steps=10",
    "trainer.lr=0.003", "trainer.batch_size=8", "trainer.eval_every=10", "data.max_length=24",
    *COMMON]), run_dir=aligned)
valid = result.summary["valid"]
print(f"DPO valid loss {valid['loss']:.3f} (log 2 = 0.693 at the start), "
      f"rewards/margins {valid['rewards/margins']:.2f}, "
      f"rewards/accuracies {valid['rewards/accuracies']:.2f}")
print("before:", predict_run(merged, prompts, ["predict.temperature=0"]))
print("after: ", predict_run(aligned, prompts, ["predict.temperature=0"]))

# %% [markdown]
# ## 4. Deployment: ONNX, then an HTTP server
#
# The export writes the model as an ONNX graph whose key/value cache is an input and an output,
# checks it against torch and records the checksums (command line: `seqlab export runs/dpo
# --format onnx --out deploy/dpo`). onnxruntime alone then generates the reply, one token at a
# time: the prompt (the chat template's tokens, ending with `<bos> assistant:`) once, then each
# new token with the cache the last call returned, until the end-of-turn token.

# %%
try:
    import numpy as np
    import onnxruntime

    from seqlab.export import export_onnx
except ImportError:
    onnxruntime = None
    print("the onnx extra (onnx, onnxruntime, onnxscript) is not installed: skipping the export")
if onnxruntime is not None:
    from seqlab.train import open_run

    exported = root / "deploy-dpo"
    manifest = export_onnx(aligned, exported)
    graph, sizes = manifest["graphs"]["model"], manifest["model"]
    print(f"{graph['file']}: inputs {graph['inputs']}, largest difference from torch "
          f"{graph['max_abs_difference']:.1e}")

    _, task, _, _ = open_run(aligned)
    task.prepare(fit_vocab=False)
    template = task.template
    session = onnxruntime.InferenceSession(str(exported / graph["file"]))
    replies = []
    for prompt in prompts:
        ids = template.encode([{"role": "user", "content": prompt}],
                              add_generation_prompt=True)[0]
        empty = np.zeros((1, sizes["num_heads"], 0, sizes["head_dim"]), np.float32)  # P = 0
        cache = {f"past_{kind}_{layer}": empty for layer in range(sizes["num_layers"])
                 for kind in ("key", "value")}
        feed, reply = np.array([ids], dtype=np.int64), []
        for _ in range(8):
            logits, *present = session.run(None, {"input_ids": feed, **cache})
            token = int(logits[0, -1].argmax())
            if token == template.end_of_turn_id:
                break
            reply.append(token)
            cache = dict(zip(cache, present))  # present_* become the next call's past_*
            feed = np.array([[token]], dtype=np.int64)
        replies.append(template.decode_reply(reply))
    print("onnxruntime replies:", replies)
    print("torch replies:      ", predict_run(aligned, prompts, ["predict.temperature=0"]))

# %% [markdown]
# `seqlab.serve` builds a FastAPI app; here it runs in-process under FastAPI's `TestClient`,
# which sends real HTTP requests to it without opening a port. One request to `/v1/predict`:

# %%
try:
    from fastapi.testclient import TestClient

    from seqlab.serve import create_app, load_model
except ImportError:
    TestClient = None
    print("the serve extra (fastapi, uvicorn, httpx) is not installed: skipping the server")
if TestClient is not None:
    app = create_app([load_model(f"toy={aligned}", threads=1)])
    with TestClient(app) as client:
        print("GET /v1/models ->", client.get("/v1/models").json()["models"][0])
        response = client.post("/v1/predict", json={"model": "toy", "inputs": ["say tree"]})
        print("POST /v1/predict ->", response.status_code, response.json())
print(f"notebook ran in {time.time() - started:.0f} s "
      f"({time.process_time() - started_cpu:.0f} s of CPU time)")
