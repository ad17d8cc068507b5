"""The fixed conversations every chat template is rendered on.

They follow the OpenAI-style message format llama.cpp's server normalizes requests into
(``common/chat.cpp``: ``role``, ``content``, ``reasoning_content``, ``tool_calls`` with
``function.name`` and ``function.arguments`` as a JSON string, ``tool_call_id``), and the
variables llama.cpp passes with them (``bos_token``, ``eos_token``, ``enable_thinking``,
``tools`` when there are tools, ``add_generation_prompt``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

LONG_CONTENT = ("The quick brown fox jumps over the lazy dog. " * 2300).strip()  # ~100 kB

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "the city, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the current time in a time zone",
        "parameters": {
            "type": "object",
            "properties": {"tz": {"type": "string"}},
            "required": ["tz"],
        },
    },
}


@dataclass(frozen=True)
class Conversation:
    name: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _call(i: int, name: str, args: str) -> dict[str, Any]:
    return {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": args}}


CONVERSATIONS: tuple[Conversation, ...] = (
    Conversation(
        "system-user",
        [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
    ),
    Conversation("user-only", [{"role": "user", "content": "Hello!"}]),
    Conversation(
        "multi-turn",
        [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "Name a prime number."},
            {"role": "assistant", "content": "7"},
            {"role": "user", "content": "Another one?"},
            {"role": "assistant", "content": "11"},
            {"role": "user", "content": "And their sum?"},
        ],
    ),
    Conversation(
        "reasoning-inline",
        [
            {"role": "user", "content": "What is 2 + 2?"},
            {
                "role": "assistant",
                "content": "<think>\nSimple arithmetic: 2 + 2 = 4.\n</think>\n\n4",
            },
            {"role": "user", "content": "And 3 + 3?"},
        ],
        extra={"thinking": True},
    ),
    Conversation(
        "reasoning-content",
        [
            {"role": "user", "content": "What is 2 + 2?"},
            {
                "role": "assistant",
                "content": "4",
                "reasoning_content": "Simple arithmetic: 2 + 2 = 4.",
            },
            {"role": "user", "content": "Why?"},
        ],
    ),
    Conversation(
        "tools",
        [
            {"role": "system", "content": "You can call tools."},
            {"role": "user", "content": "Weather in Paris, and the time there?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    _call(0, "get_weather", '{"city": "Paris"}'),
                    _call(1, "get_time", '{"tz": "Europe/Paris"}'),
                ],
            },
            {"role": "tool", "tool_call_id": "call_0", "content": '{"temp_c": 18}'},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"time": "14:05"}'},
            {"role": "assistant", "content": "18 °C in Paris; it is 14:05 there."},
            {"role": "user", "content": "Thanks!"},
        ],
        tools=[WEATHER_TOOL, TIME_TOOL],
    ),
    Conversation(
        "tools-defined-only",
        [{"role": "user", "content": "Weather in Oslo?"}],
        tools=[WEATHER_TOOL],
    ),
    Conversation(
        "empty-content",
        [
            {"role": "user", "content": ""},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": ""},
        ],
    ),
    Conversation(
        "long-content",
        [
            {"role": "system", "content": LONG_CONTENT},
            {"role": "user", "content": LONG_CONTENT},
        ],
    ),
)


def contexts(bos_token: str, eos_token: str) -> list[tuple[str, Conversation, dict[str, Any]]]:
    """Every (name, conversation, template variables) a template is rendered with: each
    conversation with ``add_generation_prompt`` on and off."""
    out = []
    for conv in CONVERSATIONS:
        for gen in (True, False):
            ctx: dict[str, Any] = {
                "messages": copy.deepcopy(conv.messages),
                "bos_token": bos_token,
                "eos_token": eos_token,
                "add_generation_prompt": gen,
                "enable_thinking": True,
            }
            if conv.tools:
                ctx["tools"] = copy.deepcopy(conv.tools)
            ctx.update(copy.deepcopy(conv.extra))
            out.append((f"{conv.name}{'+gen' if gen else ''}", conv, ctx))
    return out
