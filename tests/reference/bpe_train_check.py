"""Checks a folder written by `lmforge tokenizer train` with Hugging Face tokenizers/transformers:
it loads, has the asked vocabulary size, round-trips 500 held-out strings, compresses English
(tokens per character), loads through AutoTokenizer, and learns nearly the same merges as HF's
own BpeTrainer on the same corpus (ties may be broken differently, so not all of them).
With --lmforge-ids FILE (one JSON id array per line, for the strings --dump-strings wrote) it
also compares lmforge's own encoder with HF's ids."""
import argparse
import json
import random
import sys

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer


def held_out_strings(english, n=500, seed=1234):
    """Mixed strings: held-out English sentences, numbers, punctuation runs, odd whitespace and
    non-ASCII text (accents, Cyrillic, CJK, emoji), so every byte-level path is exercised."""
    rng = random.Random(seed)
    words = " ".join(english).split()
    extra = ["café", "naïve", "Ελληνικά", "русский", "東京タワー", "한국어", "🙂👍🏽", "x²+y²",
             "—", "«quote»", "ﬁ", "\u00a0nbsp", "e\u0301", "١٢٣", "½"]
    out = []
    for i in range(n):
        kind = i % 5
        if kind == 0:
            out.append(rng.choice(english))
        elif kind == 1:
            out.append(" ".join(rng.choice(words) for _ in range(rng.randint(1, 12))))
        elif kind == 2:
            out.append(f"{rng.randint(0, 10**9)} {rng.random():.5f}, ${rng.randint(1, 999)}.{rng.randint(0, 99):02d} "
                       f"({rng.randint(1, 31)}/{rng.randint(1, 12)}/{rng.randint(1900, 2100)})")
        elif kind == 3:
            seps = [" ", "  ", "\n", "\t", " \n ", "   ", "", "!?", "...", "'s ", "'ll "]
            out.append("".join(rng.choice(words + extra) + rng.choice(seps) for _ in range(rng.randint(1, 8))))
        else:
            out.append(" ".join(rng.choice(extra + words) for _ in range(rng.randint(1, 6))))
    return out


def hf_merges(corpus, vocab_size, specials, min_frequency):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train([corpus], trainer)
    return [tuple(m) for m in json.loads(tok.to_str())["model"]["merges"]]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--vocab-size", type=int, required=True)
    ap.add_argument("--corpus", required=True, help="the training text (for HF's trainer)")
    ap.add_argument("--heldout", required=True, help="jsonl with a 'text' field, not trained on")
    ap.add_argument("--dump-strings", help="write the held-out strings here (JSON lines) and exit")
    ap.add_argument("--lmforge-ids", help="lmforge's ids for those strings, a JSON array per line")
    a = ap.parse_args()

    english = []
    for line in open(a.heldout, encoding="utf-8"):
        for para in json.loads(line)["text"].split("\n"):
            if 20 <= len(para) <= 400:
                english.append(para)
    strings = held_out_strings(english)
    if a.dump_strings:
        with open(a.dump_strings, "w", encoding="utf-8") as f:
            for s in strings:
                f.write(json.dumps(s) + "\n")
        return 0

    failures = []
    tok = Tokenizer.from_file(f"{a.tokenizer}/tokenizer.json")
    n = tok.get_vocab_size(with_added_tokens=True)
    print(f"vocab size {n} (asked {a.vocab_size}), model vocab {tok.get_vocab_size(with_added_tokens=False)}")
    if n != a.vocab_size or tok.get_vocab_size(with_added_tokens=False) != a.vocab_size:
        failures.append("vocab size")

    bad = [s for s in strings if tok.decode(tok.encode(s).ids) != s]
    print(f"round trip: {len(strings) - len(bad)}/{len(strings)} strings")
    for s in bad[:5]:
        print("  mismatch:", repr(s), "->", repr(tok.decode(tok.encode(s).ids)))
    if bad:
        failures.append("round trip")

    eng = english[:300]
    ratio = sum(len(tok.encode(s).ids) for s in eng) / sum(len(s) for s in eng)
    print(f"English: {ratio:.3f} tokens per character over {len(eng)} held-out paragraphs")
    if not ratio < 0.45:
        failures.append("tokens per character")

    at = AutoTokenizer.from_pretrained(a.tokenizer)
    same = all(at(s, add_special_tokens=False).input_ids == tok.encode(s).ids for s in strings[:100])
    print(f"AutoTokenizer: {type(at).__name__}, eos {at.eos_token!r}, pad id {at.pad_token_id}, same ids: {same}")
    if at.eos_token != "<|endoftext|>" or at.pad_token_id != a.vocab_size - 3 or not same:
        failures.append("AutoTokenizer")

    ours = [tuple(m) for m in json.load(open(f"{a.tokenizer}/tokenizer.json"))["model"]["merges"]]
    theirs = hf_merges(a.corpus, a.vocab_size, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], 2)
    common = len(set(ours) & set(theirs))
    prefix = next((i for i, (x, y) in enumerate(zip(ours, theirs)) if x != y), min(len(ours), len(theirs)))
    print(f"HF BpeTrainer: {len(theirs)} merges, ours {len(ours)}; {common} in common, "
          f"first {prefix} identical in order")
    if common < 0.95 * len(theirs) or prefix < 20:
        failures.append("merges vs HF BpeTrainer")

    if a.lmforge_ids:
        got = [json.loads(line) for line in open(a.lmforge_ids)]
        diff = [i for i, s in enumerate(strings) if i >= len(got) or got[i] != tok.encode(s).ids]
        for i in diff[:5]:
            print("  differs:", repr(strings[i]))
        print(f"lmforge tokenizer encode: {len(strings) - len(diff)}/{len(strings)} strings give HF's ids")
        if diff:
            failures.append("lmforge ids")

    if failures:
        print("FAILED:", ", ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
