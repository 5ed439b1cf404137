"""The HTTP API: predict, generate (server-sent events), models, health, and the page at `/`.

==================== ====================================================================
GET  /               a page to try each model (text in, answer out, tokens streamed)
GET  /health         {"status": "ok", "models": [names]}
GET  /v1/models      {"models": [{"name", "task", "kind", "source", "labels", ...}]}
POST /v1/predict     {"model"?, "inputs": [str], "probabilities"?, "attention"?}
                     -> {"model", "outputs"[, "probabilities"][, "attention"]}
POST /v1/generate    {"model"?, "prompt", "max_new_tokens"?, "temperature"?, "top_k"?,
                      "top_p"?, "seed"?, "stream"?} -> events {"token"} ... {"done", "text"},
                      or {"model", "prompt", "completion", "text"} with "stream": false
POST /v1/chat        {"model"?, "messages": [{"role", "content"}], "max_new_tokens"?, ...,
                      "stream"?} -> events {"token"} ... {"done", "message"}, or
                      {"model", "message": {"role": "assistant", "content"}} with "stream": false
GET  /docs           the OpenAPI page (schema at /openapi.json)
==================== ====================================================================

Every output line is what ``seqlab predict`` prints for that input. `model` may be left out
when one model is served. A client's mistake is answered with a 4xx and
``{"error": {"type", "message"}}``, never with a traceback: 400 unreadable body (not JSON, not
UTF-8), 404 unknown model or path, 413 body / batch / input too large, 422 wrong or missing
fields (unknown ones included), 504 a request that ran past its time (it is dropped, not left
running). Predictions from concurrent requests are batched on the fly (:mod:`.batching`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from starlette.exceptions import HTTPException as StarletteHTTPException

from seqlab.serve.batching import Batcher
from seqlab.serve.models import ServedModel

__all__ = ["ApiError", "ServeSettings", "create_app"]

logger = logging.getLogger("seqlab.serve")


@dataclass
class ServeSettings:
    """Batching and the limits every request is held to."""

    max_batch_size: int = 32  # inputs per forward pass, and per request
    batch_window_ms: float = 5.0
    max_input_chars: int = 4096
    max_new_tokens: int = 512
    max_body_bytes: int = 1_000_000
    request_timeout_s: float = 60.0


class ApiError(Exception):
    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def _error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status)


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: StrictStr | None = Field(None, description="a served model's name; optional with one")
    inputs: list[StrictStr] = Field(description="one text per output line")
    probabilities: StrictBool = Field(False, description="classifiers: every label's probability")
    attention: StrictBool = Field(False, description="seq2seq: greedy decoding's attention")


class SamplingRequest(BaseModel):
    """The keys /v1/generate and /v1/chat share: which model, how to sample, whether to stream."""

    model_config = ConfigDict(extra="forbid")

    model: StrictStr | None = None
    max_new_tokens: StrictInt | None = Field(
        None, ge=0, description="default: the run's predict.max_new_tokens, within the limit")
    temperature: float | None = Field(None, ge=0, description="default: the run's predict.temperature")
    top_k: StrictInt | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: StrictInt | None = None
    stream: StrictBool = True


class GenerateRequest(SamplingRequest):
    prompt: StrictStr


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: StrictStr


class ChatRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(
        description="the conversation so far, oldest first, ending with the user's message; "
                    "a system message may open it")


class _BodyLimit:
    """Refuse a request body over `limit` bytes with 413, before the app reads it whole."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        message = f"the request body is larger than the limit of {self.limit} bytes"
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _error(413, "body_too_large", message)(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            event = await receive()
            received += len(event.get("body", b""))
            if received > self.limit:
                raise ApiError(413, "body_too_large", message)
            return event

        try:
            await self.app(scope, limited_receive, send)
        except ApiError as exc:
            await _error(exc.status, exc.kind, exc.message)(scope, receive, send)


def _validation_message(errors: list[dict]) -> tuple[int, str, str]:
    parts = []
    for error in errors:
        kind = error.get("type", "")
        if kind == "json_invalid":
            detail = error.get("ctx", {}).get("error", "")
            return 400, "invalid_json", f"the request body is not valid JSON ({detail})"
        location = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        if kind == "missing" and not location:
            return 400, "empty_body", "the request body is empty; send a JSON object"
        if kind == "extra_forbidden":
            parts.append(f"unknown field {location!r}")
        elif kind == "missing":
            parts.append(f"{location} is required")
        else:
            parts.append(f"{location or 'body'}: {error.get('msg', kind)}")
    return 422, "invalid_request", "; ".join(parts)


def create_app(models: list[ServedModel], settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI app serving `models` (names must differ)."""
    from seqlab.serve.page import PAGE

    settings = settings or ServeSettings()
    by_name = {model.name: model for model in models}
    if len(by_name) != len(models):
        raise ValueError(f"two served models share a name: {[m.name for m in models]}; "
                         "name them with NAME=DIR")
    batchers = {name: Batcher(model.predict, settings.max_batch_size,
                              settings.batch_window_ms / 1000) for name, model in by_name.items()}
    app = FastAPI(title="seqlab serve", version="1",
                  description="Predictions and generation from seqlab runs and exports.")
    app.state.models, app.state.batchers, app.state.settings = by_name, batchers, settings

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return _error(exc.status, exc.kind, exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        status, kind, message = _validation_message(exc.errors())
        return _error(status, kind, message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 400:  # a body FastAPI could not decode (e.g. invalid UTF-8)
            return _error(400, "unreadable_body", "the request body could not be read as "
                          "UTF-8 JSON; send a JSON object encoded in UTF-8")
        if exc.status_code == 404:
            return _error(404, "not_found", f"no such path: {request.url.path}; see /docs")
        if exc.status_code == 405:
            return _error(405, "method_not_allowed",
                          f"{request.method} is not allowed on {request.url.path}; see /docs")
        return _error(exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        logger.exception("request to %s failed", request.url.path)
        return _error(500, "internal", "the server failed on this request; its log says why")

    def resolve(name: str | None) -> tuple[ServedModel, Batcher]:
        if name is None:
            if len(by_name) != 1:
                raise ApiError(422, "model_required",
                               f"several models are served; name one in \"model\": "
                               f"{', '.join(by_name)}")
            name = next(iter(by_name))
        if name not in by_name:
            raise ApiError(404, "unknown_model",
                           f"no model named {name!r}; served: {', '.join(by_name)}")
        return by_name[name], batchers[name]

    def check_text(served: ServedModel, text: str, what: str) -> None:
        if len(text) > settings.max_input_chars:
            raise ApiError(413, "input_too_long", f"{what} has {len(text)} characters, more than "
                           f"the limit of {settings.max_input_chars}")
        limit = served.max_input_tokens
        if limit is not None and served.count_tokens(text) > limit:
            raise ApiError(413, "input_too_long", f"{what} has {served.count_tokens(text)} tokens, "
                           f"more than model {served.name!r} reads ({limit})")

    async def within_time(awaitable):
        try:
            return await asyncio.wait_for(awaitable, settings.request_timeout_s)
        except TimeoutError:
            raise ApiError(504, "timeout", f"the request took longer than "
                           f"{settings.request_timeout_s:g} s and was cancelled") from None

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return PAGE

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": list(by_name)}

    @app.get("/v1/models")
    async def list_models():
        return {"models": [model.describe() for model in by_name.values()]}

    @app.post("/v1/predict")
    async def predict(body: PredictRequest):
        served, batcher = resolve(body.model)
        if not body.inputs:
            raise ApiError(422, "invalid_request", "inputs is empty; give at least one text")
        if len(body.inputs) > settings.max_batch_size:
            raise ApiError(413, "batch_too_large", f"{len(body.inputs)} inputs, more than the "
                           f"limit of {settings.max_batch_size} per request")
        for index, text in enumerate(body.inputs):
            check_text(served, text, f"inputs[{index}]")
        if body.probabilities and served.kind != "classify":
            raise ApiError(422, "invalid_request", f"probabilities are for classifiers; model "
                           f"{served.name!r} is a {served.kind} model")
        if body.attention and served.kind != "translate":
            raise ApiError(422, "invalid_request", f"attention is for seq2seq models; model "
                           f"{served.name!r} is a {served.kind} model")
        try:
            if served.kind in ("generate", "chat"):
                # Sampling draws from one seeded generator per call: batching other requests'
                # prompts into it would change this request's text.
                outputs = await within_time(batcher.call(served.predict, body.inputs))
            else:
                outputs = await within_time(batcher.submit(body.inputs))
            result = {"model": served.name, "outputs": outputs}
            if body.probabilities:
                result["probabilities"] = await within_time(
                    batcher.call(served.probabilities, body.inputs))
            if body.attention:
                result["attention"] = [await within_time(batcher.call(served.attention, text))
                                       for text in body.inputs]
        except ValueError as exc:  # the task refused an input (DataError included)
            raise ApiError(422, "invalid_input", str(exc)) from None
        return result

    def sampling(served: ServedModel, body: SamplingRequest) -> tuple:
        """(max_new_tokens, temperature, top_k, top_p, seed): the request's, else the run's."""
        defaults = served.task.predict_config
        max_new_tokens = body.max_new_tokens
        if max_new_tokens is None:
            max_new_tokens = min(defaults.max_new_tokens, settings.max_new_tokens)
        if max_new_tokens > settings.max_new_tokens:
            raise ApiError(422, "max_new_tokens_too_large", f"max_new_tokens={body.max_new_tokens} "
                           f"is more than the limit of {settings.max_new_tokens}")
        return (max_new_tokens,
                defaults.temperature if body.temperature is None else body.temperature,
                defaults.top_k if body.top_k is None else body.top_k,
                defaults.top_p if body.top_p is None else body.top_p,
                defaults.seed if body.seed is None else body.seed)

    def served_of_kind(name: str | None, kind: str, endpoint: str, what: str, error: str) -> tuple:
        served, batcher = resolve(name)
        if served.kind != kind:
            offered = ", ".join(m.name for m in by_name.values() if m.kind == kind) or "none served"
            raise ApiError(422, error,
                           f"model {served.name!r} is a {served.kind} model; {endpoint} serves "
                           f"{what}; served here: {offered}")
        return served, batcher

    async def first_piece(batcher: Batcher, pieces) -> str | None:
        """The first piece, drawn before any answer is sent: an input the model refuses
        (ValueError) is then still a 413 rather than an error event inside a 200."""
        try:
            return await within_time(batcher.call(next, pieces, None))
        except ValueError as exc:
            await batcher.call(pieces.close)
            raise ApiError(413, "input_too_long", str(exc)) from None

    def events(batcher: Batcher, pieces, first: str | None, done) -> StreamingResponse:
        """Server-sent events: {"token"} per piece, then done(text) or {"error"}."""
        async def stream():
            text = ""
            try:
                piece = first
                while piece is not None:
                    text += piece
                    yield f"data: {json.dumps({'token': piece})}\n\n"
                    piece = await within_time(batcher.call(next, pieces, None))
                yield f"data: {json.dumps({'done': True, **done(text)})}\n\n"
            except ApiError as exc:
                yield f"data: {json.dumps({'error': {'type': exc.kind, 'message': exc.message}})}\n\n"
            finally:
                await batcher.call(pieces.close)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    async def whole(batcher: Batcher, pieces, first: str | None) -> str:
        try:
            rest = await within_time(batcher.call(lambda: "".join(pieces)))
        finally:
            await batcher.call(pieces.close)
        return (first or "") + rest

    @app.post("/v1/generate")
    async def generate(body: GenerateRequest):
        served, batcher = served_of_kind(body.model, "generate", "/v1/generate", "language models",
                                         "not_a_language_model")
        options = sampling(served, body)
        check_text(served, body.prompt, "prompt")
        pieces = served.stream(body.prompt, *options)
        first = await first_piece(batcher, pieces)
        if body.stream:
            return events(batcher, pieces, first, lambda text: {"text": body.prompt + text})
        completion = await whole(batcher, pieces, first)
        return {"model": served.name, "prompt": body.prompt, "completion": completion,
                "text": body.prompt + completion}

    @app.post("/v1/chat")
    async def chat(body: ChatRequest):
        served, batcher = served_of_kind(body.model, "chat", "/v1/chat",
                                         "chat-tuned runs (sft, dpo, ppo, grpo)", "not_a_chat_model")
        options = sampling(served, body)
        messages = [message.model_dump() for message in body.messages]
        if not messages:
            raise ApiError(422, "invalid_request", "messages is empty; send the conversation, "
                           "ending with the user's message")
        if messages[-1]["role"] != "user":
            raise ApiError(422, "invalid_request", "messages should end with the user's message "
                           "({\"role\": \"user\", \"content\": ...}), which the reply answers")
        if any(m["role"] == "system" for m in messages[1:]):
            raise ApiError(422, "invalid_request", "a system message may only open the "
                           "conversation (messages[0])")
        for index, message in enumerate(messages):
            check_text(served, message["content"], f"messages[{index}].content")
        pieces = served.chat(messages, *options)
        first = await first_piece(batcher, pieces)
        if body.stream:
            return events(batcher, pieces, first,
                          lambda text: {"message": {"role": "assistant", "content": text}})
        reply = await whole(batcher, pieces, first)
        return {"model": served.name, "message": {"role": "assistant", "content": reply}}

    app.add_middleware(_BodyLimit, limit=settings.max_body_bytes)
    return app
