"""`seqlab chat RUN`: talk to a chat model (an `sft` or `dpo` run) in the terminal.

Each line typed is a user message; the reply is streamed token by token and stops at the
end-of-turn token. The conversation so far is kept and sent with every message; when it no
longer fits in the model's context, the oldest turns are dropped (a system message stays).
Commands: ``/reset`` forgets the conversation, ``/temperature T`` and ``/top_p P`` change the
sampling, ``/exit`` (or end of input) quits, ``/help`` lists them.

When the input is not a terminal (``seqlab chat RUN < conversation.txt``) every line is read
as a message or command in turn and only the replies are written, one line each, so a
conversation can be scripted and its output compared.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TextIO

import torch

__all__ = ["ChatSession", "open_chat", "run_chat"]

HELP = ("commands: /reset (forget the conversation), /temperature T, /top_p P (0 < P <= 1), "
        "/exit")


@dataclass
class ChatSession:
    """A conversation with one model: the history and the sampling settings."""

    task: object
    model: torch.nn.Module
    device: torch.device
    system: str | None = None
    seed: int = 0
    messages: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed)
        self.reset()

    def reset(self) -> None:
        self.messages = [{"role": "system", "content": self.system}] if self.system else []

    @property
    def settings(self):
        return self.task.predict_config

    def set_temperature(self, value: float) -> None:
        if value < 0:
            raise ValueError(f"temperature should be a number >= 0 (0 is greedy), got {value}")
        self.settings.temperature = value

    def set_top_p(self, value: float) -> None:
        if not 0 < value <= 1:
            raise ValueError(f"top_p should be a number in (0, 1], got {value}")
        self.settings.top_p = value

    def stream(self, text: str):
        """Yield the reply to ``text`` piece by piece; the turn is added to the history."""
        messages = self.messages + [{"role": "user", "content": text}]
        pieces = []
        for piece in self.task.reply_pieces(self.model, messages, self.generator):
            pieces.append(piece)
            yield piece
        self.messages = messages + [{"role": "assistant", "content": "".join(pieces)}]

    def command(self, line: str) -> tuple[bool, str]:
        """(keep going, message) for a /command line."""
        name, _, value = line.strip().partition(" ")
        try:
            if name == "/exit":
                return False, ""
            if name == "/reset":
                self.reset()
                return True, "(conversation reset)"
            if name == "/help":
                return True, HELP
            if name in ("/temperature", "/top_p"):
                number = float(value)
                (self.set_temperature if name == "/temperature" else self.set_top_p)(number)
                return True, f"({name[1:]} = {number})"
        except ValueError as exc:
            message = str(exc) if value.strip() else f"{name} needs a value"
            return True, f"({message})"
        return True, f"(unknown command {name}; {HELP})"


def open_chat(run_dir, system: str | None = None, seed: int = 0, overrides: list[str] | None = None
              ) -> ChatSession:
    """A session with the model of a chat run or of its export (onnxruntime); RunDirError for
    a run that is not one."""
    from seqlab.export import is_export_dir, open_export
    from seqlab.tasks.sft import read_chat_template
    from seqlab.train.run import RunDirError, open_run

    try:
        read_chat_template(run_dir)
    except ValueError as exc:
        raise RunDirError(str(exc)) from None
    if is_export_dir(run_dir):
        _, task, model = open_export(run_dir, overrides)
        device = torch.device("cpu")
    else:
        _, task, model, device = open_run(run_dir, overrides)
    if not getattr(task, "chats", False):
        raise RunDirError(f"{run_dir} is a {task.name} run, which does not write replies; chat with "
                          f"an sft or dpo run")
    model = getattr(model, "language_model", model)  # a PPO run's policy holds a value head
    return ChatSession(task, model, device, system=system or task.data.system, seed=seed)


def run_chat(session: ChatSession, input: TextIO | None = None, output: TextIO | None = None,
             interactive: bool | None = None) -> int:
    """Read messages until /exit or the end of input (stdin unless given); stream each reply
    to ``output`` (stdout unless given)."""
    input = sys.stdin if input is None else input  # looked up now: a test may replace them
    output = sys.stdout if output is None else output
    if interactive is None:
        interactive = input.isatty()
    if interactive:
        print(f"seqlab chat: type a message; {HELP}", file=output, flush=True)
    while True:
        if interactive:
            print("you> ", end="", file=output, flush=True)
        line = input.readline()
        if not line:
            break
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            going, message = session.command(line)
            if message:
                print(message, file=output if interactive else sys.stderr, flush=True)
            if not going:
                break
            continue
        if interactive:
            print("bot> ", end="", file=output, flush=True)
        try:
            for piece in session.stream(line):
                print(piece, end="", file=output, flush=True)
        except ValueError as exc:
            print(f"({exc})", end="", file=output if interactive else sys.stderr, flush=True)
        print(file=output, flush=True)
    return 0
