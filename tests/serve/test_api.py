"""The HTTP API through FastAPI's test client: every endpoint, streaming, batching, every limit."""

import json
import threading
import time

import pytest
import torch
from fastapi.testclient import TestClient

from seqlab.serve import ServeSettings, create_app, load_model, stream_tokens
from seqlab.train.run import open_run, predict_run

TEXTS = ["the film was good", "bad", "the film was long and dull", "great", "dull dull"]


@pytest.fixture(scope="module")
def models(served_runs):
    names = ["classify", "gpt"] + (["gpt-onnx"] if served_runs["gpt-onnx"] else [])
    return {name: load_model(f"{name}={served_runs[name]}") for name in names}


@pytest.fixture
def client(models):
    settings = ServeSettings(max_batch_size=8, max_input_chars=200, max_new_tokens=50,
                             max_body_bytes=4000)
    with TestClient(create_app(list(models.values()), settings)) as test_client:
        yield test_client


def assert_error(reply, status, kind, *fragments):
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["type"] == kind
    assert "Traceback" not in reply.text
    for fragment in fragments:
        assert fragment in error["message"], (fragment, error["message"])


def test_health_models_docs_and_page(client, models):
    assert client.get("/health").json() == {"status": "ok", "models": list(models)}
    described = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert described["classify"]["kind"] == "classify"
    assert set(described["classify"]["labels"]) == {"neg", "pos"}
    assert described["gpt"]["kind"] == "generate" and described["gpt"]["source"] == "run"
    schema = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/generate", "/v1/models", "/health"} <= set(schema["paths"])
    assert client.get("/docs").status_code == 200
    page = client.get("/").text
    assert '<select id="model">' in page and "/v1/generate" in page and "<script src" not in page


def test_predict_gives_the_lines_of_seqlab_predict(client, served_runs):
    reply = client.post("/v1/predict", json={"model": "classify", "inputs": TEXTS})
    assert reply.status_code == 200
    assert reply.json() == {"model": "classify", "outputs": predict_run(served_runs["classify"], TEXTS)}


def test_model_may_be_left_out_when_one_is_served(models, served_runs):
    with TestClient(create_app([models["classify"]])) as one:
        reply = one.post("/v1/predict", json={"inputs": TEXTS[:2]})
    assert reply.json()["outputs"] == predict_run(served_runs["classify"], TEXTS[:2])


def test_classifier_probabilities(client):
    body = client.post("/v1/predict", json={"model": "classify", "inputs": TEXTS,
                                            "probabilities": True}).json()
    for line, probabilities in zip(body["outputs"], body["probabilities"]):
        label, probability = line.split("\t")
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert max(probabilities, key=probabilities.get) == label
        assert probabilities[label] == pytest.approx(float(probability), abs=5e-4)


@pytest.mark.parametrize("name", ["gpt", "gpt-onnx"])
def test_generate_matches_seqlab_predict_and_streams_the_same_text(client, models, served_runs,
                                                                    name):
    if name not in models:
        pytest.skip("the onnx extra is not installed")
    expected = predict_run(served_runs["gpt"], ["The "])[0]  # 20 new tokens, seed 0
    body = {"model": name, "prompt": "The ", "max_new_tokens": 20}
    whole = client.post("/v1/generate", json={**body, "stream": False}).json()
    assert whole["text"] == expected and whole["completion"] == expected[len("The "):]
    reply = client.post("/v1/generate", json=body)
    assert reply.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(chunk.removeprefix("data: ")) for chunk in reply.text.split("\n\n")
              if chunk]
    tokens = [event["token"] for event in events[:-1]]
    assert len(tokens) == 20 and events[-1] == {"done": True, "text": expected}
    assert "The " + "".join(tokens) == expected


def test_streamed_tokens_are_the_models_own_draws(served_runs):
    _, _, model, _ = open_run(served_runs["gpt"], ["trainer.device=cpu"])
    prompt = torch.tensor([[5, 6, 7]])
    # 40 tokens: past max_length=16, so the cache gives way to the sliding window.
    expected = model.generate(prompt, 40, temperature=0.9, generator=torch.Generator().manual_seed(3))
    drawn = list(stream_tokens(model, prompt, 40, 0.9, None, None,
                               torch.Generator().manual_seed(3)))
    assert torch.cat([prompt[0], torch.cat(drawn)]).tolist() == expected[0].tolist()


def test_concurrent_requests_share_forward_passes(models, served_runs):
    served = models["classify"]
    settings = ServeSettings(max_batch_size=16, batch_window_ms=300)
    expected = dict(zip(TEXTS, predict_run(served_runs["classify"], TEXTS)))
    requests = [TEXTS[i % len(TEXTS)] for i in range(10)]
    answers = {}
    with TestClient(create_app([served], settings)) as client:
        before = served.forward_passes

        def ask(index):
            reply = client.post("/v1/predict", json={"inputs": [requests[index]]})
            answers[index] = reply.json()["outputs"]

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(requests))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        passes = served.forward_passes - before
    assert all(answers[i] == [expected[text]] for i, text in enumerate(requests))
    assert 1 <= passes < len(requests)


def test_a_request_past_its_time_is_cancelled_and_never_run(models):
    served = models["classify"]
    settings = ServeSettings(batch_window_ms=400, request_timeout_s=0.05)
    with TestClient(create_app([served], settings)) as client:
        before = served.forward_passes
        reply = client.post("/v1/predict", json={"inputs": ["good"]})
        assert_error(reply, 504, "timeout", "cancelled")
        time.sleep(0.6)  # past the batching window: the dropped request found no pass
        assert served.forward_passes == before


def test_limits_and_client_mistakes_are_4xx_with_a_message(client):
    cases = [
        (b"", 400, "empty_body", "empty"),
        (b'{"inputs": [', 400, "invalid_json", "not valid JSON"),
        (b'{"model": "classify", "inputs": ["\xff\xfe"]}', 400, "unreadable_body", "UTF-8"),
        (b'[1, 2]', 422, "invalid_request", "dictionary"),
        (b'{"model": "classify", "inputs": "good"}', 422, "invalid_request", "inputs", "list"),
        (b'{"model": "classify", "inputs": [1]}', 422, "invalid_request", "inputs.0", "string"),
        (b'{"model": "classify", "inputs": ["a"], "top": 1}', 422, "invalid_request", "'top'"),
        (b'{"model": "classify"}', 422, "invalid_request", "inputs is required"),
        (b'{"model": "classify", "inputs": []}', 422, "invalid_request", "empty"),
        (b'{"inputs": ["a"]}', 422, "model_required", "classify, gpt"),
        (b'{"model": "nope", "inputs": ["a"]}', 404, "unknown_model", "'nope'", "classify"),
        (json.dumps({"model": "classify", "inputs": ["a"] * 9}).encode(), 413, "batch_too_large",
         "9 inputs", "8"),
        (json.dumps({"model": "classify", "inputs": ["x" * 201]}).encode(), 413,
         "input_too_long", "201 characters", "200"),
        (json.dumps({"model": "classify", "inputs": ["x" * 4100]}).encode(), 413,
         "body_too_large", "4000 bytes"),
        (json.dumps({"model": "gpt", "inputs": ["a"], "probabilities": True}).encode(), 422,
         "invalid_request", "classifiers"),
    ]
    for body, status, kind, *fragments in cases:
        reply = client.post("/v1/predict", content=body,
                            headers={"content-type": "application/json"})
        assert_error(reply, status, kind, *fragments)
    generate = [
        ({"model": "gpt", "prompt": "a", "max_new_tokens": 51}, 422, "max_new_tokens_too_large",
         "51", "50"),
        ({"model": "gpt", "prompt": "a", "max_new_tokens": -1}, 422, "invalid_request",
         "max_new_tokens"),
        ({"model": "gpt", "prompt": 3}, 422, "invalid_request", "prompt"),
        ({"model": "gpt", "prompt": "a", "temperature": "hot"}, 422, "invalid_request",
         "temperature"),
        ({"model": "gpt", "prompt": "a" * 201}, 413, "input_too_long", "201"),
        ({"model": "classify", "prompt": "a"}, 422, "not_a_language_model", "gpt"),
    ]
    for body, status, kind, *fragments in generate:
        assert_error(client.post("/v1/generate", json=body), status, kind, *fragments)
    assert_error(client.get("/v1/nothing"), 404, "not_found", "/v1/nothing")
    assert_error(client.get("/v1/predict"), 405, "method_not_allowed", "GET")


def test_a_server_fault_is_a_500_without_traceback(models, monkeypatch):
    served = models["classify"]

    def broken(inputs):
        raise RuntimeError("boom in the model")

    with TestClient(create_app([served]), raise_server_exceptions=False) as client:
        monkeypatch.setattr(served, "predict", broken)
        monkeypatch.setattr(client.app.state.batchers["classify"], "run", broken)
        reply = client.post("/v1/predict", json={"inputs": ["good"]})
    assert_error(reply, 500, "internal", "log")
    assert "boom" not in reply.text


def test_a_corrupted_export_is_refused_when_served(served_runs, tmp_path):
    import shutil

    from seqlab.export import ExportError

    if served_runs["gpt-onnx"] is None:
        pytest.skip("the onnx extra is not installed")
    copy = tmp_path / "copy"
    shutil.copytree(served_runs["gpt-onnx"], copy)
    (copy / "tokenizer.json").write_text((copy / "tokenizer.json").read_text() + " ")
    with pytest.raises(ExportError, match="tokenizer.json does not match its sha256"):
        load_model(str(copy))


def test_seq2seq_attention_map(served_runs):
    served = load_model(f"reverse={served_runs['reverse']}")
    with TestClient(create_app([served])) as client:
        body = client.post("/v1/predict", json={"inputs": ["a b c d"], "attention": True}).json()
        refused = client.post("/v1/predict", json={"inputs": ["a"], "probabilities": True})
    assert body["outputs"] == predict_run(served_runs["reverse"], ["a b c d"])
    (attention,) = body["attention"]
    assert attention["source"] == ["a", "b", "c", "d"]
    assert len(attention["weights"]) == len(attention["output"]) >= 1
    for row in attention["weights"]:  # a distribution over the source tokens
        assert len(row) == 4 and sum(row) == pytest.approx(1.0, abs=1e-3)
    assert_error(refused, 422, "invalid_request", "classifiers")


def test_non_finite_run_weights_are_refused(served_runs, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from seqlab.export import ExportError

    copy = tmp_path / "copy"
    shutil.copytree(served_runs["classify"], copy)
    tensors = load_file(str(copy / "model.safetensors"))
    name = next(n for n, t in tensors.items() if t.is_floating_point())
    tensors[name][0] = float("nan")
    save_file(tensors, str(copy / "model.safetensors"))
    with pytest.raises(ExportError, match="non-finite weights"):
        load_model(str(copy))


@pytest.fixture(scope="module")
def chat_client(served_runs):
    names = ["chat", "classify"] + (["chat-onnx"] if served_runs["chat-onnx"] else [])
    served = [load_model(f"{name}={served_runs[name]}") for name in names]
    settings = ServeSettings(max_input_chars=200, max_new_tokens=50)
    with TestClient(create_app(served, settings)) as test_client:
        yield test_client


def _events(reply):
    return [json.loads(line[len("data: "):]) for line in reply.text.split("\n\n") if line]


@pytest.mark.parametrize("name", ["chat", "chat-onnx"])
def test_chat_replies_as_seqlab_predict_streamed_or_whole(chat_client, served_runs, name):
    if served_runs[name] is None:
        pytest.skip("the onnx extra is not installed")
    described = {m["name"]: m for m in chat_client.get("/v1/models").json()["models"]}
    assert described[name]["kind"] == "chat"
    expected = predict_run(served_runs["chat"], ["say dog"])[0]  # the run itself, in torch
    user = [{"role": "user", "content": "say dog"}]
    whole = chat_client.post("/v1/chat", json={"model": name, "messages": user, "stream": False})
    assert whole.status_code == 200, whole.text
    assert whole.json() == {"model": name, "message": {"role": "assistant", "content": expected}}
    events = _events(chat_client.post("/v1/chat", json={"model": name, "messages": user}))
    assert events[-1] == {"done": True, "message": {"role": "assistant", "content": expected}}
    assert "".join(e["token"] for e in events[:-1]) == expected
    predicted = chat_client.post("/v1/predict", json={"model": name, "inputs": ["say dog"]})
    assert predicted.json()["outputs"] == [expected]


def test_chat_reads_the_whole_conversation(served_runs):
    served = load_model(f"chat={served_runs['chat']}")
    seen = []
    reply_pieces = served.task.reply_pieces

    def recording(model, messages, *args, **kwargs):
        seen.append(messages)
        return reply_pieces(model, messages, *args, **kwargs)

    served.task.reply_pieces = recording
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say sun"},
                {"role": "assistant", "content": "sun sun"}, {"role": "user", "content": "say cat"}]
    with TestClient(create_app([served])) as client:
        reply = client.post("/v1/chat", json={"messages": messages, "stream": False})
    assert seen == [messages]  # every turn, in order, reaches the model
    _, task, model, device = open_run(served_runs["chat"])
    assert reply.json()["message"]["content"] == task.reply(model, messages, device)


def test_chat_mistakes_are_4xx_with_a_message(chat_client):
    def post(body):
        return chat_client.post("/v1/chat", json={"model": "chat", **body})

    user = {"role": "user", "content": "say dog"}
    assert_error(post({"messages": []}), 422, "invalid_request", "messages is empty")
    assert_error(post({"messages": [user, {"role": "assistant", "content": "x"}]}), 422,
                 "invalid_request", "end with the user's message")
    assert_error(post({"messages": [user, {"role": "system", "content": "x"}, user]}), 422,
                 "invalid_request", "system message may only open")
    assert_error(post({"messages": [{"role": "bot", "content": "x"}]}), 422, "invalid_request",
                 "messages.0.role")
    assert_error(post({"messages": [{"role": "user", "content": 3}]}), 422, "invalid_request",
                 "messages.0.content")
    assert_error(post({"messages": [{"role": "user", "content": "x", "name": "y"}]}), 422,
                 "invalid_request", "unknown field 'messages.0.name'")
    # 20 words do not fit the 24 positions with room for a reply: refused before any event.
    long = {"role": "user", "content": "say " * 20}
    assert_error(post({"messages": [long]}), 413, "input_too_long", "last message alone")
    assert_error(post({"messages": [long], "stream": False}), 413, "input_too_long")
    assert_error(post({"messages": [{"role": "user", "content": "x" * 201}]}), 413,
                 "input_too_long", "messages[0].content has 201 characters")
    assert_error(post({"messages": [user], "max_new_tokens": 51}), 422, "max_new_tokens_too_large")
    assert_error(chat_client.post("/v1/chat", json={"model": "classify", "messages": [user]}),
                 422, "not_a_chat_model", "/v1/chat serves chat-tuned runs", "served here: chat")
    assert_error(chat_client.post("/v1/generate", json={"model": "chat", "prompt": "x"}), 422,
                 "not_a_language_model", "chat model")


def test_transformer_seq2seq_attention_map(served_runs):
    served = load_model(f"transformer={served_runs['transformer']}")
    with TestClient(create_app([served])) as client:
        body = client.post("/v1/predict", json={"inputs": ["a b c d"], "attention": True}).json()
    (attention,) = body["attention"]
    assert attention["source"] == ["a", "b", "c", "d"]
    assert "cross-attention" in attention["note"]
    weights = torch.tensor(attention["weights"])  # (T, S): a row per output token
    assert weights.shape == (len(attention["output"]), 4)
    # The same numbers as the model's own maps of the greedy output, read teacher-forced.
    _, task, model, _ = open_run(served_runs["transformer"])
    tokenizer = task.tokenizer
    output = [t for t in attention["output"] if t != "</s>"]
    tgt = ([tokenizer.bos_id] + [tokenizer.token_to_id(t) for t in output]
           + ([tokenizer.eos_id] if len(output) < len(attention["output"]) else []))
    src = torch.tensor([task.source_ids("a b c d")])
    maps = model.eval().attention_maps(src, torch.tensor([4]), torch.tensor([tgt]))
    expected = maps.decoder_cross[-1][0].mean(dim=0)  # last decoder layer, heads averaged
    assert torch.allclose(weights, expected, atol=1e-4)
    assert torch.allclose(weights.sum(-1), torch.ones(len(weights)), atol=1e-3)


def test_with_no_window_the_requests_already_waiting_share_a_pass():
    import asyncio

    from seqlab.serve.batching import Batcher

    calls = []

    def run(inputs):  # a slow pass: the other requests arrive while it runs
        calls.append(list(inputs))
        time.sleep(0.2)
        return [text.upper() for text in inputs]

    async def scenario():
        batcher = Batcher(run, max_batch_size=8, window=0.0)
        first = asyncio.ensure_future(batcher.submit(["a"]))
        await asyncio.sleep(0.05)  # the first pass is running
        rest = [asyncio.ensure_future(batcher.submit([text])) for text in "bcd"]
        return await first, await asyncio.gather(*rest)

    first, rest = asyncio.run(scenario())
    assert first == ["A"] and rest == [["B"], ["C"], ["D"]]
    assert calls == [["a"], ["b", "c", "d"]]  # not one pass each
