"""Generated text for the corpus: the paper's tell-tale contexts (DNA, base64, ...).

Each generator takes a ``random.Random`` and returns one document, so the corpus is
reproducible from a seed.
"""
from __future__ import annotations

import base64
import json
import random

_WORDS = ("alpha beta gamma delta signal vector matrix token feature model layer neuron "
          "sparse dense weight bias value key query river mountain garden coffee paper "
          "music window city market yellow purple seven eleven").split()


def dna(rng: random.Random) -> str:
    lines = [f">seq{rng.randrange(10**6)} {rng.choice(['chr1', 'chr7', 'chrX', 'mito'])}"]
    for _ in range(rng.randint(2, 8)):
        lines.append("".join(rng.choice("ACGT") for _ in range(rng.choice([60, 70, 80]))))
    return "\n".join(lines)


def b64(rng: random.Random) -> str:
    raw = bytes(rng.randrange(256) for _ in range(rng.randint(24, 180)))
    text = base64.b64encode(raw).decode()
    intro = rng.choice(["data:image/png;base64,", "token = \"", "-----BEGIN KEY-----\n", "b64: ", ""])
    return intro + "\n".join(text[i:i + 76] for i in range(0, len(text), 76))


def http(rng: random.Random) -> str:
    method = rng.choice(["GET", "POST", "PUT", "DELETE"])
    path = "/" + "/".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 3)))
    host = f"{rng.choice(_WORDS)}.{rng.choice(['com', 'org', 'io', 'net'])}"
    lines = [f"{method} {path}?id={rng.randrange(1000)} HTTP/1.1", f"Host: {host}",
             f"User-Agent: Mozilla/5.0 (X11; Linux x86_64) rv:{rng.randint(90, 130)}.0",
             f"Accept: {rng.choice(['*/*', 'application/json', 'text/html'])}",
             f"Accept-Language: {rng.choice(['en-US,en;q=0.9', 'de-DE', 'fr-FR,fr;q=0.8'])}",
             f"Connection: {rng.choice(['keep-alive', 'close'])}"]
    if method in ("POST", "PUT"):
        body = json.dumps({rng.choice(_WORDS): rng.randrange(100) for _ in range(3)})
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}", "", body]
    reply = [f"HTTP/1.1 {rng.choice(['200 OK', '404 Not Found', '301 Moved Permanently', '500 Internal Server Error'])}",
             f"Content-Length: {rng.randrange(20, 5000)}", "Server: nginx"]
    return "\n".join(lines) + "\n\n" + "\n".join(reply)


def json_record(rng: random.Random) -> str:
    rec = {"id": rng.randrange(10**6), "name": rng.choice(_WORDS).title() + " " + rng.choice(_WORDS).title(),
           "active": rng.random() < 0.5, "score": round(rng.uniform(0, 100), 2),
           "tags": rng.sample(_WORDS, rng.randint(1, 4)),
           "address": {"city": rng.choice(_WORDS).title(), "zip": f"{rng.randrange(10**5):05d}"}}
    return json.dumps(rec, indent=rng.choice([None, 2]))


def arithmetic(rng: random.Random) -> str:
    out = []
    for _ in range(rng.randint(3, 10)):
        a, b = rng.randrange(1000), rng.randrange(1, 1000)
        op = rng.choice("+-*")
        out.append(f"{a} {op} {b} = {eval(f'{a}{op}{b}')}")  # noqa: S307 - our own digits
    return "\n".join(out)


def nutrition(rng: random.Random) -> str:
    kcal = rng.randrange(50, 600)
    rows = [("Total Fat", "g"), ("Saturated Fat", "g"), ("Cholesterol", "mg"), ("Sodium", "mg"),
            ("Total Carbohydrate", "g"), ("Dietary Fiber", "g"), ("Sugars", "g"), ("Protein", "g")]
    lines = ["Nutrition Facts", f"Serving Size {rng.randint(1, 4)} cup ({rng.randrange(20, 300)}g)",
             f"Calories {kcal}", "% Daily Value*"]
    for label, unit in rows:
        lines.append(f"{label} {rng.randrange(0, 40)}{unit} {rng.randrange(0, 60)}%")
    lines.append("* Percent Daily Values are based on a 2,000 calorie diet.")
    return "\n".join(lines)


GENERATORS = {"dna": dna, "base64": b64, "http": http, "json_records": json_record,
              "arithmetic": arithmetic, "nutrition": nutrition}
