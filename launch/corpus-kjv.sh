#!/usr/bin/env bash
# A real corpus end to end (docs/training.md): the King James Bible from Debian's
# bible-kjv-text (public domain, 4.3 MB), a SentencePiece BPE tokenizer trained on it, the
# DeepSeek-MoE-like model (launch/configs/deepseek-small.toml) trained under mpirun with expert
# parallelism, the same model on the raw bytes for comparison (same steps, same tokens per
# step), held-out bits per byte over time for both, and text generated from both checkpoints.
#
#   launch/corpus-kjv.sh [OUT_DIR]          (default runs/kjv)
#   STEPS=600 RANKS=2 VOCAB=8000 launch/corpus-kjv.sh
#
# Needs: apt-get install bible-kjv-text (the text and its reader, /usr/bin/bible), a build
# (bash launch/build.sh), and for the figure /usr/bin/python3 with python3-matplotlib.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/runs/kjv}
steps=${STEPS:-600}
ranks=${RANKS:-2}
vocab=${VOCAB:-8000}
bin=${MOERUN_BIN_DIR:-$here/build/release/bin}
command -v bible > /dev/null || { echo "corpus-kjv: needs the KJV text: apt-get install bible-kjv-text" >&2; exit 1; }
[ -x "$bin/moerun" ] || { echo "corpus-kjv: $bin/moerun not found; build first: bash launch/build.sh" >&2; exit 1; }
mkdir -p "$out"
out=$(cd "$out" && pwd)  # absolute: the run's config names the token file, which generation finds again
bible "Gen1:1-Rev22:21" > "$out/kjv.txt"
echo "corpus-kjv: $(wc -c < "$out/kjv.txt") bytes of text in $out/kjv.txt"
"$bin/moerun-data" train --input "$out/kjv.txt" --model-prefix "$out/kjv_bpe" --vocab-size "$vocab" --type bpe
"$bin/moerun-data" encode --model "$out/kjv_bpe.model" --input "$out/kjv.txt" --output "$out/kjv.u16"
common=(--config "$here/launch/configs/deepseek-small.toml" --set parallel.ep="$ranks" --set train.steps="$steps"
        --set eval.every=50 --set eval.heldout_batches=8 --set checkpoint.every="$steps" --set log.progress=lines)
"$here/launch/moerun-local.sh" -n "$ranks" -- "${common[@]}" --set data.source="$out/kjv.u16" \
  --set model.vocab_size="$vocab" --run-dir "$out/bpe"
"$here/launch/moerun-local.sh" -n "$ranks" -- "${common[@]}" --set data.source="$out/kjv.txt" --run-dir "$out/bytes"
for run in bpe bytes; do
  "$bin/moerun-generate" --checkpoint "$out/$run" --prompt "And it came to pass" --max-new-tokens 120 \
    --temperature 0.8 --top-p 0.95 --seed 1 > "$out/$run.sample.txt"
  echo "--- $run:"; cat "$out/$run.sample.txt"
done
# Held-out bits per byte against steps and against time, both runs on one figure.
if /usr/bin/python3 -c "import matplotlib" 2> /dev/null; then
  /usr/bin/python3 - "$out" <<'PY'
import json, pathlib, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
out = pathlib.Path(sys.argv[1])
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
for run, label in (("bpe", "BPE tokens"), ("bytes", "bytes")):
    rows = [json.loads(l) for l in open(out / run / "metrics.jsonl")]
    steps = [r for r in rows if "loss" in r and "step_ms" in r]
    elapsed, t = {}, 0.0
    for r in steps:
        t += r["step_ms"] / 1000.0
        elapsed[r["step"]] = t
    evals = [r for r in rows if "heldout_bpb" in r]
    axes[0].plot([e["step"] for e in evals], [e["heldout_bpb"] for e in evals], marker="o", label=label)
    axes[1].plot([elapsed.get(e["step"], 0) / 60 for e in evals], [e["heldout_bpb"] for e in evals], marker="o", label=label)
axes[0].set_xlabel("step"); axes[1].set_xlabel("training minutes")
for ax in axes:
    ax.set_ylabel("held-out bits per byte"); ax.grid(alpha=0.3); ax.legend()
fig.suptitle("DeepSeek-MoE-like model on the KJV Bible")
fig.tight_layout()
fig.savefig(out / "kjv_bpb.png", dpi=110)
print(f"corpus-kjv: wrote {out / 'kjv_bpb.png'}")
PY
else
  echo "corpus-kjv: no figure (needs /usr/bin/python3 with python3-matplotlib)"
fi
