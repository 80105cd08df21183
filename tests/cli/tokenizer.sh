#!/usr/bin/env bash
# A real tokenizer end to end (issue 16): moerun-data trains a BPE model on a text corpus (this
# repository's docs), encodes the text into a .u16 file with its sidecar (decoding it gives the
# text back byte for byte), and moerun trains on
# it with model.vocab_size from the tokenizer: the loss falls and the evaluation reports bits
# per byte. A wrong model.vocab_size, and a tokenizer that is not the one the file was encoded
# with, are refused naming the fix; a truncated token file is refused against its sidecar; a
# separate held-out file (data.valid_source) is used for the validation loss. moerun-generate
# continues a prompt from the checkpoint through the same tokenizer (found by the sidecar), the
# same seed giving the same text; it refuses a changed tokenizer, a prompt longer than the
# context, a file that is no tokenizer, a change of the model's shape and a missing checkpoint;
# a byte-level model generates through the byte codec.
#   tokenizer.sh MOERUN MOERUN_DATA MOERUN_GENERATE MOERUN_CKPT DOCS_DIR WORKDIR
set -u
moerun=$1 data=$2 generate=$3 ckpt=$4 docs=$5 work=$6
rm -rf "$work"
mkdir -p "$work"
fail() { echo "FAIL: $*" >&2; exit 1; }
cat "$docs"/*.md > "$work/corpus.txt"
"$data" train --input "$work/corpus.txt" --model-prefix "$work/tok" --vocab-size 600 > "$work/train.log" 2>&1 \
  || { cat "$work/train.log"; fail "moerun-data train failed"; }
"$data" encode --model "$work/tok.model" --input "$work/corpus.txt" --output "$work/corpus.u16" > "$work/encode.log" 2>&1 \
  || { cat "$work/encode.log"; fail "moerun-data encode failed"; }
grep -q '"vocab_size": 600' "$work/corpus.u16.json" || fail "the sidecar lacks the vocabulary"
# Lossless: the token file decodes to the corpus byte for byte (line breaks, indentation, runs of
# spaces), and so does a text without a final line break.
"$data" decode --model "$work/tok.model" --input "$work/corpus.u16" --output "$work/back.txt" > /dev/null 2>&1 \
  || fail "moerun-data decode failed"
cmp -s "$work/corpus.txt" "$work/back.txt" || fail "decode(encode(corpus)) is not the corpus"
printf '  indented,\ttab  and  no final newline \xc3\xa9' > "$work/tail.txt"
"$data" encode --model "$work/tok.model" --input "$work/tail.txt" --output "$work/tail.u16" > /dev/null 2>&1 \
  && "$data" decode --model "$work/tok.model" --input "$work/tail.u16" > "$work/tail_back.txt" 2>/dev/null \
  || fail "encoding or decoding a short text failed"
cmp -s "$work/tail.txt" "$work/tail_back.txt" || fail "a text without a final newline did not round-trip"
small=(--set model.d_model=64 --set model.n_heads=2 --set model.d_ff=128 --set model.seq_len=64 --set train.global_batch=8
       --set train.micro_batch=8 --set eval.every=0 --set eval.examples=0 --set eval.heldout_batches=2 --set log.progress=lines)
"$moerun" "${small[@]}" --set data.source="$work/corpus.u16" --set model.vocab_size=600 --set train.steps=80 \
  --run-dir "$work/run" > "$work/run.log" 2>&1 || { cat "$work/run.log"; fail "training on the token file failed"; }
grep -q "tokenizer $work/tok.model" "$work/run.log" || fail "the start-up line does not name the tokenizer"
grep -q "bits/byte" "$work/run.log" && grep -q '"heldout_bpb"' "$work/run/metrics.jsonl" || fail "no bits per byte"
python3 - "$work/run/metrics.jsonl" <<'PY' || fail "the loss did not fall on the tokenized corpus"
import json, sys
steps = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
assert steps[-1]["loss"] < 0.9 * steps[0]["loss"], (steps[0]["loss"], steps[-1]["loss"])
PY
# Generation from the checkpoint, through the sidecar's tokenizer.
gen=(--checkpoint "$work/run" --prompt "The checkpoint" --max-new-tokens 24 --temperature 0.8 --top-k 40 --seed 3)
"$generate" "${gen[@]}" > "$work/gen1.txt" 2> "$work/gen1.log" || { cat "$work/gen1.log"; fail "moerun-generate failed"; }
"$generate" "${gen[@]}" > "$work/gen2.txt" 2> /dev/null || fail "moerun-generate failed the second time"
grep -q "tokenizer SentencePiece $work/tok.model" "$work/gen1.log" || { cat "$work/gen1.log"; fail "generation's tokenizer"; }
grep -q "24 new tokens" "$work/gen1.log" || { cat "$work/gen1.log"; fail "not 24 new tokens"; }
head -c 14 "$work/gen1.txt" | grep -q "The checkpoint" || fail "the output does not start with the prompt"
cmp -s "$work/gen1.txt" "$work/gen2.txt" || fail "the same seed gave different text"
[ "$(wc -c < "$work/gen1.txt")" -gt 20 ] || fail "no text was generated"
long=$(head -c 3000 "$work/corpus.txt")
"$generate" --checkpoint "$work/run" --prompt "$long" > /dev/null 2> "$work/gen_long.log" && fail "a long prompt was accepted"
grep -q "longer than the model's context model.seq_len = 64" "$work/gen_long.log" || fail "the long prompt is not named"
"$generate" --checkpoint "$work/run" --set model.d_model=32 > /dev/null 2> "$work/gen_shape.log" && fail "a shape change"
grep -q "model.d_model" "$work/gen_shape.log" || { cat "$work/gen_shape.log"; fail "the shape change is not named"; }
"$generate" --checkpoint "$work/run" --tokenizer "$work/corpus.txt" > /dev/null 2> "$work/gen_corrupt.log" \
  && fail "a file that is not a tokenizer was accepted"
grep -q "cannot load the SentencePiece model" "$work/gen_corrupt.log" || { cat "$work/gen_corrupt.log"; fail "corrupt tokenizer"; }
"$generate" --checkpoint "$work/nowhere" > /dev/null 2> "$work/gen_missing.log" && fail "a missing checkpoint"
grep -q "nowhere" "$work/gen_missing.log" || { cat "$work/gen_missing.log"; fail "the missing checkpoint is not named"; }
"$moerun" "${small[@]}" --set data.source="$work/corpus.u16" --set model.vocab_size=700 --set train.steps=1 \
  --run-dir "$work/bad_vocab" > "$work/bad_vocab.log" 2>&1 && fail "a wrong vocabulary size was accepted"
grep -q "tokenizer of 600 ids.*set model.vocab_size = 600" "$work/bad_vocab.log" || { cat "$work/bad_vocab.log"; fail "no fix named"; }
cp "$work/tok.model" "$work/tok.model.orig"
printf 'x' >> "$work/tok.model"
"$moerun" "${small[@]}" --set data.source="$work/corpus.u16" --set model.vocab_size=600 --set train.steps=1 \
  --run-dir "$work/bad_tok" > "$work/bad_tok.log" 2>&1 && fail "another tokenizer was accepted"
grep -q "is not the one" "$work/bad_tok.log" || { cat "$work/bad_tok.log"; fail "the tokenizer mismatch is not named"; }
"$generate" --checkpoint "$work/run" --max-new-tokens 2 > /dev/null 2> "$work/gen_tok.log" && fail "generation took another tokenizer"
grep -q "pass that tokenizer with --tokenizer" "$work/gen_tok.log" || { cat "$work/gen_tok.log"; fail "no --tokenizer named"; }
cp "$work/tok.model.orig" "$work/tok.model"
head -c 20000 "$work/corpus.u16" > "$work/cut.u16" && cp "$work/corpus.u16.json" "$work/cut.u16.json"
"$moerun" "${small[@]}" --set data.source="$work/cut.u16" --set model.vocab_size=600 --set train.steps=1 \
  --run-dir "$work/cut" > "$work/cut.log" 2>&1 && fail "a truncated token file was accepted"
grep -q "the file changed after moerun-data encode" "$work/cut.log" || { cat "$work/cut.log"; fail "truncation not named"; }
# The sidecar names its tokenizer relative to itself: a corpus folder moved elsewhere still works.
grep -q "\"tokenizer\": \"tok.model\"" "$work/corpus.u16.json" || { cat "$work/corpus.u16.json"; fail "the sidecar's path is not relative"; }
mkdir -p "$work/moved" && cp "$work/corpus.u16" "$work/corpus.u16.json" "$work/tok.model" "$work/moved/"
"$moerun" "${small[@]}" --set data.source="$work/moved/corpus.u16" --set model.vocab_size=600 --set train.steps=1 \
  --run-dir "$work/moved_run" > "$work/moved.log" 2>&1 || { cat "$work/moved.log"; fail "a moved corpus folder failed"; }
grep -q "tokenizer $work/moved/tok.model" "$work/moved.log" || { cat "$work/moved.log"; fail "the moved tokenizer is not found"; }
# A separate held-out file (data.valid_source), encoded with the same tokenizer; a held-out fraction.
cat "$docs"/../README.md "$docs"/../README.md > "$work/valid.txt"
"$data" encode --model "$work/tok.model" --input "$work/valid.txt" --output "$work/valid.u16" > /dev/null 2>&1 \
  || fail "encoding the held-out text failed"
"$moerun" "${small[@]}" --set data.source="$work/corpus.u16" --set data.valid_source="$work/valid.u16" \
  --set model.vocab_size=600 --set train.steps=2 --run-dir "$work/valid" > "$work/valid.log" 2>&1 \
  || { cat "$work/valid.log"; fail "training with data.valid_source failed"; }
grep -q "held out: $work/valid.u16" "$work/valid.log" && grep -q "bits/byte" "$work/valid.log" \
  || { cat "$work/valid.log"; fail "the held-out file is not used"; }
"$moerun" "${small[@]}" --set data.source="$work/corpus.u16" --set data.valid_fraction=1.5 --set model.vocab_size=600 \
  --dry-run > "$work/fraction.log" 2>&1 && fail "data.valid_fraction = 1.5 was accepted"
grep -q "data.valid_fraction = 1.5 must be in (0, 1)" "$work/fraction.log" || fail "the bad fraction is not named"
# A byte-level model on the same text, with the DeepSeek router (its aux-free bias is a buffer:
# the checkpoint verifies without moments for it), generates through the byte codec.
"$moerun" "${small[@]}" --set data.source="$work/corpus.txt" --set train.steps=2 --set model.router_score=\"sigmoid\" \
  --set model.z_loss_coef=0 --set model.balance=\"aux_free\" --run-dir "$work/bytes" \
  > "$work/bytes.log" 2>&1 || { cat "$work/bytes.log"; fail "byte-level training failed"; }
"$ckpt" verify "$work/bytes" > "$work/verify.log" 2>&1 || { cat "$work/verify.log"; fail "the aux-free checkpoint fails verify"; }
grep -q "router_bias" <("$ckpt" ls "$work/bytes") || fail "the aux-free checkpoint has no router_bias"
"$generate" --checkpoint "$work/bytes" --prompt "moe" --max-new-tokens 8 > "$work/gen_bytes.txt" 2> "$work/gen_bytes.log" \
  || { cat "$work/gen_bytes.log"; fail "byte-level generation failed"; }
grep -q "tokenizer bytes" "$work/gen_bytes.log" || fail "the byte model did not use the byte codec"
echo "tokenizer: OK"
