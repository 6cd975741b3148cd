#!/bin/sh
# `lmforge tokenizer` gives the same ids and decoded text as Hugging Face tokenizers on >= 2000
# generated strings each for GPT-2, TinyLlama (Llama-2 SentencePiece BPE), Llama-3.2 (byte-level,
# ignore_merges), TinyLlama with added tokens using each flag, and tokenizers trained here: Qwen2-style byte-level with NFC, and Metaspace with
# byte fallback (two prepend schemes and decoders). Bad input fails cleanly.
. "$(dirname "$0")/common.sh"
TOK="$LMF_SRC/../shared/data/tokenizers"
if [ ! -f "$TOK/gpt2/tokenizer.json" ]; then
    echo "SKIP: ../shared/data/tokenizers not present"
    exit 77
fi
PAR="$REF/tokenizer_parity.py"
parity() { # parity NAME DIR [HF_JSON]
    "$LMF_PY" "$PAR" --lmforge "$LMF" --name "$1" --dir "$2" ${3:+--hf-json "$3"} --n 2000
}
check "gpt2 parity" parity gpt2 "$TOK/gpt2"
check "llama-3.2 parity" parity llama-3.2 "$TOK/llama-3.2"
# HF 0.20 cannot read this file's "a b" merges whose tokens contain spaces: it gets a copy with
# [a, b] pairs (lmforge reads the original).
check "tinyllama merges as pairs for HF" "$LMF_PY" "$PAR" pair-merges \
    "$TOK/tinyllama-1.1b-chat-v1.0/tokenizer.json" "$WORK/tinyllama-pairs.json"
check "tinyllama parity" parity tinyllama "$TOK/tinyllama-1.1b-chat-v1.0" "$WORK/tinyllama-pairs.json"
check "tinyllama + added tokens with normalized/lstrip/rstrip/single_word" "$LMF_PY" "$PAR" \
    add-tokens "$WORK/tinyllama-pairs.json" "$WORK/tinyllama-added"
check "tinyllama + added tokens parity" parity tinyllama-added "$WORK/tinyllama-added"
check "train qwen2-style tokenizer (NFC, Qwen2 Split regex, ByteLevel)" "$LMF_PY" "$PAR" make-qwen2 "$WORK/qwen2" --nfc
check "qwen2-style parity" parity qwen2 "$WORK/qwen2"
# lmforge's own BPE trainer output, trained on this repository's sources and docs.
cat "$LMF_SRC"/docs/*.md "$LMF_SRC"/src/*/*.c > "$WORK/corpus.txt"
check "train a byte-level BPE with lmforge" "$LMF" tokenizer train --corpus "$WORK/corpus.txt" --vocab-size 800 --out "$WORK/lmf-bpe"
check "lmforge-trained tokenizer parity" parity lmforge-bpe "$WORK/lmf-bpe"
for v in first always; do
    check "train metaspace tokenizer ($v)" "$LMF_PY" "$PAR" make-metaspace "$WORK/ms-$v" "$v"
    check "metaspace ($v) parity" parity "metaspace-$v" "$WORK/ms-$v"
done

# plain (non-jsonl) CLI use: text in, ids out, and back
check "encode/decode round trip" sh -c "printf 'Hello, wörld!\n' | '$LMF' tokenizer encode \
    --tokenizer '$TOK/llama-3.2' > '$WORK/ids.json' && grep -q '^\[128000,' '$WORK/ids.json' && \
    '$LMF' tokenizer decode --tokenizer '$TOK/llama-3.2' --no-special < '$WORK/ids.json' > '$WORK/text.txt' && \
    printf 'Hello, wörld!\n' | cmp - '$WORK/text.txt'"

# refused: ids that are not ids
check_fails "bad id list refused" sh -c "echo '[1, \"x\"]' | '$LMF' tokenizer decode --tokenizer '$TOK/gpt2'"
grep -q "element 1 is not a token id" "$WORK/out.txt" || { echo "FAIL id message"; cat "$WORK/out.txt"; fail=$((fail + 1)); }
finish
