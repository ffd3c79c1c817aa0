"""A Hugging Face-style dataset of chat messages through the processor.

    .venv/bin/python examples/chat_messages.py

Rows carry `messages` (a list of {"role", "content"}), as chat datasets do. A model with a chat template
decodes them as they are; the embedded model has none, so `preprocess` turns each conversation into a
prompt (its last user turn) and `postprocess` keeps what the caller wants. Rows that still cannot be
decoded come back with their `error` set, and the job goes on.
"""
import ray

import dllm

conversations = [
    {"conversation_id": i, "messages": [{"role": "system", "content": "answer tersely"},
                                        {"role": "user", "content": f"{task}:{word}="}]}
    for i, (task, word) in enumerate([("copy", "river"), ("rev", "stone"), ("sort", "dcba"), ("next", "abc")])
] + [{"conversation_id": 99, "messages": [{"role": "system", "content": "no user turn"}]}]


def last_user_turn(row: dict) -> dict:
    """The conversation as a prompt: its last user turn (`messages` itself would go to the chat template)."""
    users = [m["content"] for m in row["messages"] if m["role"] == "user"]
    return {"conversation_id": row["conversation_id"], "prompt": users[-1] if users else ""}


def answer_only(row: dict) -> dict:
    return {"conversation_id": row["conversation_id"], "answer": row["output"], "error": row["error"]}


ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
processor = dllm.build_processor(overrides=["decode.trace=off"], preprocess=last_user_turn,
                                 postprocess=answer_only, concurrency=1)
for row in sorted(processor(ray.data.from_items(conversations)).take_all(), key=lambda r: r["conversation_id"]):
    print(row)
