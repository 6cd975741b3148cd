"""Token-id and decode parity between `lmforge tokenizer ... --jsonl` and Hugging Face tokenizers.

For each tokenizer it generates N strings (fixed seed) mixing many scripts, emoji with ZWJ and
skin tones, whitespace runs with tabs/newlines/CR, digit runs, code, contractions in any case and
special tokens written in the text, then requires identical ids (add_special_tokens False for all,
True for a subset) and identical decode(ids) with skip_special_tokens False and True.
Usage: tokenizer_parity.py --lmforge BIN --name NAME --dir DIR [--hf-json FILE] [--n N]
(--hf-json: the file HF loads when it differs from DIR/tokenizer.json).
Helpers for the driver: `make-metaspace OUT_DIR first|always` trains a small Metaspace BPE;
`add-tokens SRC OUT_DIR` adds tokens with each flag;
`make-qwen2 OUT_DIR [--nfc]` trains a small Qwen2-style byte-level BPE
(Qwen2's Split regex + ByteLevel) with HF tokenizers; `pair-merges SRC DST` rewrites "a b" merges
as [a, b] pairs, resolving tokens that contain spaces (HF 0.20 cannot read such "a b" strings)."""
import argparse
import json
import random
import subprocess
import sys

from tokenizers import Tokenizer

SCRIPTS = [
    "Hello world", "the quick brown fox", "naïve café résumé Ünïcödé", "Ærøskøbing ß straße",
    "中文分词测试，你好世界。", "日本語のテキストです", "한국어 텍스트입니다", "Привет, мир! Ёжик",
    "مرحبا بالعالم", "नमस्ते दुनिया हिन्दी", "สวัสดีชาวโลก ภาษาไทย", "Γειά σου Κόσμε", "שלום עולם",
    "ﬁﬂ ligatures", "e\u0301te\u0301 a\u0300 Vie\u0323\u0302t", "a\u0302\u0323 q\u0307\u0323",
    "\u212b \u2126 \u212a", "\u1100\u1161\u11a8 \u1112\u1161\u11ab", "\u0958 \u0928\u093c",
    "\u0344 \u0f73 \u0b47\u0b3e", "\u0301leading mark", "Ⅻ ⅻ ① ② ¼ ½ ²³", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛", "ſ long s", "İstanbul ıi",
]
EMOJI = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "❤️", "🇩🇪", "🤦🏻‍♂️", "✨", "🧑🏿‍💻", "😂😂😂"]
CODE = ["def f(x):\n\treturn x**2 + 1\n", "int main() { return 0; }", "if (a && b) { c++; }\r\n",
        "for i in range(10):\n    print(i)", "<div class=\"a\">&amp;</div>", "x = [1, 2, 3];  // ok",
        "SELECT * FROM t WHERE id=42;", "#!/bin/sh\necho $HOME", "    indented\n        more"]
CONTRACTIONS = ["don't", "DON'T", "Don'T", "we're", "WE'RE", "I've", "I'VE", "she'll", "SHE'LL",
                "he'd", "HE'D", "I'm", "I'M", "it's", "IT'S", "can't", "'s", "'S", "o'clock", "'ſ"]
SPACES = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\t\t  \n", "\r", "     \n\n   ",
          "\u00a0", "\u3000", "\u2009", "\n \n", " \t"]
PUNCT = ["!", "?", "...", "—", "–", "«»", "“quoted”", "(", ")", "[]", "{}", "@#$%^&*", "~~~", "¿¡"]


def rand_digits(r):
    return "".join(r.choice("0123456789") for _ in range(r.randint(1, 12)))


def rand_chars(r):
    # random code points from a few blocks (letters, marks, symbols)
    blocks = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF),
              (0x900, 0x97F), (0xE00, 0xE7F), (0x3040, 0x30FF), (0x4E00, 0x4FFF), (0xAC00, 0xACFF),
              (0x1F300, 0x1F64F), (0x2000, 0x206F)]
    out = []
    for _ in range(r.randint(1, 8)):
        lo, hi = r.choice(blocks)
        out.append(chr(r.randint(lo, hi)))
    return "".join(out)


def make_strings(n, seed, specials):
    r = random.Random(seed)
    gens = [lambda: r.choice(SCRIPTS), lambda: r.choice(EMOJI), lambda: r.choice(CODE),
            lambda: r.choice(CONTRACTIONS), lambda: r.choice(SPACES), lambda: r.choice(PUNCT),
            lambda: rand_digits(r), lambda: rand_chars(r), lambda: r.choice(specials),
            lambda: " " * r.randint(1, 40), lambda: "\n" * r.randint(1, 5)]
    weights = [6, 2, 2, 2, 4, 2, 2, 2, 1, 1, 1]
    out = ["", " ", "  leading", "trailing  ", "\n", "a", " \n\n\tmixed \r\n end"]
    out += [s for s in specials]
    while len(out) < n:
        parts = [r.choices(gens, weights)[0]() for _ in range(r.randint(1, 12))]
        sep = r.choice(["", " ", " ", ""])
        out.append(sep.join(parts))
    return out


def run_lmforge(binary, tok_dir, mode, lines, special):
    cmd = [binary, "tokenizer", mode, "--tokenizer", tok_dir, "--jsonl"]
    if not special:
        cmd.append("--no-special")
    p = subprocess.run(cmd, input="".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines),
                       capture_output=True, text=True, encoding="utf-8")
    if p.returncode != 0:
        sys.exit(f"lmforge tokenizer {mode} failed: {p.stderr}")
    # split on \n only: decoded text may hold U+2028 and friends, which splitlines() breaks on
    res = [json.loads(x) for x in p.stdout.split("\n")[:-1]]
    assert len(res) == len(lines), (len(res), len(lines))
    return res


QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def make_qwen2(out_dir, nfc):
    import os
    from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE())
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=3000, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    corpus = make_strings(3000, 7, specials) + SCRIPTS * 20 + CODE * 20
    tok.train_from_iterator(corpus, trainer)
    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    json.dump({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "bos_token": None},
              open(os.path.join(out_dir, "tokenizer_config.json"), "w"))


def make_metaspace(out_dir, variant):
    """Metaspace pre-tokenizer BPE with byte fallback: variant "first" (prepend_scheme first,
    split off, Llama-2-style decoder chain) or "always" (prepend always, split on, Metaspace
    decoder)."""
    import os
    from tokenizers import decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    first = variant == "first"
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581",
                                                 prepend_scheme="first" if first else "always",
                                                 split=not first)
    if first:
        tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                         decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    else:
        tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    specials = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % i for i in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=1500, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(make_strings(2000, 9, specials[:3]) + SCRIPTS * 10, trainer)
    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"))


def add_tokens(src, out_dir):
    """Copy of tokenizer file src with added tokens exercising the flags: normalized (matched by
    its normalized form), lstrip/rstrip (swallow Unicode whitespace) and single_word."""
    import os
    from tokenizers import AddedToken
    tok = Tokenizer.from_file(src)
    tok.add_tokens([AddedToken("<|im_start|>", normalized=True, special=False),
                    AddedToken("<|im_end|>", lstrip=True, rstrip=True, normalized=False, special=True),
                    AddedToken("world", single_word=True, normalized=False)])
    tok.add_special_tokens([AddedToken("<|sys|>", normalized=True, special=True, rstrip=True)])
    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"))


def pair_merges(src, dst):
    j = json.load(open(src, encoding="utf-8"))
    vocab = j["model"]["vocab"]

    def split(m):
        if not isinstance(m, str):
            return m
        for i in range(1, len(m) - 1):
            a, b = m[:i], m[i + 1:]
            if m[i] == " " and a in vocab and b in vocab and a + b in vocab:
                return [a, b]
        raise ValueError(m)
    j["model"]["merges"] = [split(m) for m in j["model"]["merges"]]
    json.dump(j, open(dst, "w", encoding="utf-8"), ensure_ascii=False)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "make-qwen2":
        return make_qwen2(sys.argv[2], "--nfc" in sys.argv)
    if len(sys.argv) > 1 and sys.argv[1] == "make-metaspace":
        return make_metaspace(sys.argv[2], sys.argv[3])
    if len(sys.argv) > 1 and sys.argv[1] == "add-tokens":
        return add_tokens(sys.argv[2], sys.argv[3])
    if len(sys.argv) > 1 and sys.argv[1] == "pair-merges":
        return pair_merges(sys.argv[2], sys.argv[3])
    ap = argparse.ArgumentParser()
    ap.add_argument("--lmforge", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--hf-json")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1234)
    a = ap.parse_args()
    hf = Tokenizer.from_file(a.hf_json or a.dir + "/tokenizer.json")
    hf.no_truncation()  # gpt2's file truncates at 50 tokens; lmforge never truncates in encode
    hf.no_padding()
    specials = [t.content for t in hf.get_added_tokens_decoder().values()][:40] or ["<|endoftext|>"]
    specials += ["<|endoftext|>", "</s>", "<s>", "<|begin_of_text|>", "<|im_start|>", "helloworld",
                 "world", " world_", "world1"]
    strings = make_strings(a.n, a.seed, specials)
    fails = []

    def compare(what, ours, ref, inputs):
        bad = [i for i in range(len(ref)) if ours[i] != ref[i]]
        print(f"{a.name}: {what}: {len(ref) - len(bad)}/{len(ref)} identical")
        for i in bad[:5]:
            print(f"  input {inputs[i]!r}\n    lmforge {ours[i]!r}\n    HF      {ref[i]!r}")
        if bad:
            fails.append(what)

    ref_ids = [e.ids for e in hf.encode_batch(strings, add_special_tokens=False)]
    compare("encode (add_special_tokens=False)", run_lmforge(a.lmforge, a.dir, "encode", strings, False),
            ref_ids, strings)
    sub = strings[: max(1, len(strings) // 4)]
    compare("encode (add_special_tokens=True)", run_lmforge(a.lmforge, a.dir, "encode", sub, True),
            [e.ids for e in hf.encode_batch(sub, add_special_tokens=True)], sub)
    # decode what HF produced with specials, plus random id sequences (partial characters too)
    r = random.Random(a.seed + 1)
    vocab = hf.get_vocab_size(with_added_tokens=True)
    dec_in = [e.ids for e in hf.encode_batch(sub, add_special_tokens=True)] + ref_ids
    dec_in += [[r.randrange(vocab) for _ in range(r.randint(1, 12))] for _ in range(300)]
    for skip in (False, True):
        compare(f"decode (skip_special_tokens={skip})",
                run_lmforge(a.lmforge, a.dir, "decode", dec_in, not skip),
                hf.decode_batch(dec_in, skip_special_tokens=skip), dec_in)
    # round trip where HF's own round trip is exact
    rt = [i for i, s in enumerate(strings) if hf.decode(ref_ids[i], skip_special_tokens=False) == s]
    print(f"{a.name}: HF round-trips {len(rt)}/{len(strings)} strings exactly")
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
