"""Conversations for the parity tests: OpenAI message schema, ids that every template accepts (Mistral: 9 chars)."""

from __future__ import annotations

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def call(name: str, arguments: dict, call_id: str) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def user(content: str) -> dict:
    return {"role": "user", "content": content}


def assistant(content: str | None, **fields) -> dict:
    return {"role": "assistant", "content": content, **fields}


def system(content: str) -> dict:
    return {"role": "system", "content": content}


def tool(content: str, call_id: str = "call00001") -> dict:
    return {"role": "tool", "name": "get_weather", "tool_call_id": call_id, "content": content}


def _weather(city: str, call_id: str = "call00001") -> dict:
    return call("get_weather", {"city": city}, call_id)


# name -> (messages, tools)
CASES: dict[str, tuple[list[dict], list[dict] | None]] = {
    "single": ([user("Give me a synonym for fast."), assistant("Quick.")], None),
    "system_single": ([system("You are terse."), user("Capital of France?"), assistant("Paris.")], None),
    "multi": ([user("What is 2+2?"), assistant("Four."), user("And 3+3?"), assistant("Six.")], None),
    "system_multi": ([system("Answer in words."), user("What is 2+2?"), assistant("Four."), user("And 3+3?"),
                      assistant("Six."), user("And 4+4?"), assistant("Eight.")], None),
    "generation": ([user("Say hi.")], None),
    "generation_multi": ([system("Be kind."), user("Hello there."), assistant("Hi! How can I help?"),
                          user("Tell me a joke.")], None),
    "unicode": ([user("Wie heißt du? 你好 🌍 — ça va?"), assistant("Ich heiße Ünïcødé. 你好！🌍 Ça va très bien.")], None),
    "code": ([user("Fix this:\n```py\ndef f( x ):\n\treturn  x\n```"),
              assistant("```python\ndef f(x):\n    return x\n```\n\nIndentation   matters.")], None),
    "whitespace": ([user("  spaced question  "), assistant("\n  spaced answer\n\n")], None),
    "tools": ([user("Weather in Paris?"), assistant("", tool_calls=[_weather("Paris")]), tool("18 C, sunny"),
               assistant("It is 18 C and sunny in Paris.")], [WEATHER]),
    "tools_with_content": ([user("Weather in Rome?"), assistant("Let me check.", tool_calls=[_weather("Rome")]),
                            tool("25 C"), assistant("Rome is at 25 C.")], [WEATHER]),
    "tools_two_calls": ([user("Weather in Oslo and Lima?"),
                         assistant("", tool_calls=[_weather("Oslo"), _weather("Lima", "call00002")]),
                         tool("2 C"), tool("20 C", "call00002"), assistant("Oslo has 2 C, Lima 20 C.")], [WEATHER]),
    "tools_then_chat": ([user("Weather in Paris?"), assistant("", tool_calls=[_weather("Paris")]), tool("18 C"),
                         assistant("18 C in Paris."), user("Thanks! Any tip?"), assistant("Bring sunglasses.")],
                        [WEATHER]),
    "system_tools": ([system("You are a weather bot."), user("Weather in Berlin?"),
                      assistant("", tool_calls=[_weather("Berlin")]), tool("10 C"), assistant("Berlin: 10 C.")],
                     [WEATHER]),
    "tools_unused": ([user("What is 2+2?"), assistant("Four, no tool needed.")], [WEATHER]),
    "tools_generation": ([user("Weather in Paris?"), assistant("", tool_calls=[_weather("Paris")]), tool("18 C")],
                         [WEATHER]),
    "tool_call_last": ([user("Weather in Lima?"), assistant("", tool_calls=[_weather("Lima")])], [WEATHER]),
    "tool_call_null_content": ([user("Weather in Oslo?"), assistant(None, tool_calls=[_weather("Oslo")]),
                                tool("2 C"), assistant("Cold: 2 C in Oslo.")], [WEATHER]),
    "reasoning": ([user("Is 15 even?"), assistant("No.", reasoning_content="15 = 2*7 + 1, odd.")], None),
    "reasoning_multi": ([user("Is 15 even?"), assistant("No, it is odd.", reasoning_content="15 = 2*7 + 1."),
                         user("Is 16 even?"), assistant("Yes, it is even.", reasoning_content="16 = 2*8.")], None),
    "reasoning_tools": ([user("Weather in Paris?"),
                         assistant("", reasoning_content="I should call the tool.", tool_calls=[_weather("Paris")]),
                         tool("18 C"), assistant("It is 18 C.", reasoning_content="The tool said 18 C.")], [WEATHER]),
    "long": ([system("Count."), *[m for k in range(1, 7) for m in (user(f"Next after {k}?"),
                                                                    assistant(f"It is {k + 1}."))]], None),
    "empty_answer": ([user("Say nothing at all."), assistant("")], None),
}


_PIECES = ["hello", "  spaced  ", "\n", "\n\n", "ü", "你好", "🌍", "x=1", "```py\n\tcode\n```", '{"a": 1}', "<b>", "end.",
           " ", "Ĝ", "\t"]


def random_conversation(rng, number: int) -> tuple[list[dict], list[dict] | None]:
    """A random but valid conversation; every content carries a unique tag: #s/#u/#t/#a/#r<number>.<k>#."""
    counter = iter(range(1000))

    def text(kind: str) -> str:
        parts = [rng.choice(_PIECES) for _ in range(rng.randint(0, 5))]
        parts.insert(rng.randint(0, len(parts)), f"#{kind}{number}.{next(counter)}#")
        return "".join(parts)

    tools = [WEATHER] if rng.random() < 0.3 else None
    messages = [system(text("s"))] if rng.random() < 0.4 else []
    for k in range(rng.randint(1, 4)):
        messages.append(user(text("u")))
        if tools and rng.random() < 0.5:
            messages.append(assistant("", tool_calls=[_weather(text("c"), f"call{k:05d}")]))
            messages.append(tool(text("t"), f"call{k:05d}"))
        answer = assistant(text("a"))
        if rng.random() < 0.3:
            answer["reasoning_content"] = text("r")
        messages.append(answer)
    if rng.random() < 0.2:
        messages.pop()
    return messages, tools
