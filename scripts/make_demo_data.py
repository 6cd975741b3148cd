"""Writes data/demo/: lmforge's own small demo dataset (alpaca format, with dataset_info.json)
and the corpus its demo tokenizer is trained on. Every sentence is generated here from small
word lists written for lmforge, so the project ships no third-party data.
Run: /usr/bin/python3 scripts/make_demo_data.py  (the output is committed)."""
import json
import os
import random

OUT = os.path.join(os.path.dirname(__file__), "..", "data", "demo")

COLORS = ["red", "blue", "green", "yellow", "purple", "orange", "white", "black"]
ANIMALS = ["fox", "owl", "cat", "bear", "frog", "hare", "wolf", "crow"]
PLACES = ["the forest", "the river", "the hill", "the garden", "the harbour", "the valley"]
TOOLS = ["hammer", "lantern", "compass", "kettle", "ladder", "rope"]


def facts(rng):
    rows = []
    for i, animal in enumerate(ANIMALS):
        color = COLORS[i]
        place = PLACES[i % len(PLACES)]
        tool = TOOLS[i % len(TOOLS)]
        rows.append((f"What color is the {animal}?", f"The {animal} is {color}."))
        rows.append((f"Where does the {animal} live?", f"The {animal} lives near {place}."))
        rows.append((f"What does the {animal} carry?", f"The {animal} carries a {tool}."))
    for a in range(2, 8):
        for b in range(2, 5):
            rows.append((f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."))
    rows.append(("What is lmforge?", "lmforge is a small engine for fine-tuning and serving language models, written in C."))
    rows.append(("Who are you?", "I am the lmforge demo model, trained in a few minutes on two cores."))
    rng.shuffle(rows)
    return rows


def main():
    rng = random.Random(7)
    os.makedirs(OUT, exist_ok=True)
    rows = facts(rng)
    data = [{"instruction": q, "input": "", "output": a} for q, a in rows]
    with open(os.path.join(OUT, "demo_sft.json"), "w") as f:
        json.dump(data, f, indent=1, ensure_ascii=False)
        f.write("\n")
    info = {"demo_sft": {"file_name": "demo_sft.json"}, "demo_pt": {"file_name": "demo_pt.jsonl", "columns": {"prompt": "text"}}}
    with open(os.path.join(OUT, "dataset_info.json"), "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    # The tokenizer corpus: the dataset's sentences in varied small stories.
    lines = [q + " " + a for q, a in rows]
    for _ in range(400):
        an, co, pl, to = rng.choice(ANIMALS), rng.choice(COLORS), rng.choice(PLACES), rng.choice(TOOLS)
        lines.append(f"Once a {co} {an} walked to {pl} with a {to}, and the {an} was happy there.")
    with open(os.path.join(OUT, "corpus.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(OUT, "demo_pt.jsonl"), "w") as f:
        for line in lines:
            f.write(json.dumps({"text": line}) + "\n")


if __name__ == "__main__":
    main()
