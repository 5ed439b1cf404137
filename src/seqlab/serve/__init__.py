"""`seqlab serve`: runs and exports behind an HTTP API with on-the-fly batching, and a page."""

from seqlab.serve.app import ApiError, ServeSettings, create_app
from seqlab.serve.batching import Batcher
from seqlab.serve.models import ServedModel, load_model, stream_tokens

__all__ = [
    "ApiError",
    "Batcher",
    "ServeSettings",
    "ServedModel",
    "create_app",
    "load_model",
    "run_server",
    "stream_tokens",
]


def run_server(specs: list[str], host: str = "127.0.0.1", port: int = 8000,
               settings: ServeSettings | None = None, threads: int | None = None) -> None:
    """Load every `DIR` / `NAME=DIR` and serve them with uvicorn until interrupted.

    `threads` sets torch's and onnxruntime's threads per forward pass (None: their defaults).
    On a machine shared with other work, 1 avoids threads waiting on each other.
    """
    import torch
    import uvicorn

    if threads:
        torch.set_num_threads(threads)
    models = [load_model(spec, threads=threads) for spec in specs]
    app = create_app(models, settings)
    names = ", ".join(f"{m.name} ({m.kind}, {m.source})" for m in models)
    print(f"seqlab serve: {names} on http://{host}:{port}/  (API docs: /docs)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
