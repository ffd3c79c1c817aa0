"""Decoding in this process (a notebook, a test): no Ray, errors per row rather than exceptions.

    .venv/bin/python examples/in_process.py
"""
import dllm

results = dllm.decode(
    ["copy:hello=", "rev:hello=", {"id": "short", "prompt": "sort:dcba=", "max_new_tokens": 4},
     {"id": "sampled", "prompt": "next:abc=", "temperature": 0.7}, {"id": "empty", "prompt": ""}],
    overrides=["decode.policy=[sched]"])
for r in results:
    print(f"{r['id']:<20} {r['output']!r:<14} steps {r['steps_taken']} of {r['step_budget']}  {r['error']}")
