#!/usr/bin/env bash
# moerun-ckpt where divergence is debugged (issue 19, first part), checked against numpy on the
# file itself: `info` gives the loss, learning rate and gradient norm of the step the checkpoint
# follows and the moerun version; `show` of one expert's parameter shows that expert only; `stats` reports, per
# tensor and per expert, the largest magnitude and NaN/Inf counts, AdamW moments included (a NaN
# written into one expert's second moment, checksums updated, is found in that expert);
# `verify` names the expert row whose bytes were corrupted; `diff` of two steps gives per tensor
# and per expert ||A-B|| / ||A|| as numpy does, sorted largest first, and the config keys a
# resume changed.
#   ckpt_inspect.sh MOERUN MOERUN_CKPT WORKDIR
set -u
moerun=$1 ckpt=$2 work=$3
rm -rf "$work"
mkdir -p "$work"
fail() { echo "FAIL: $*" >&2; exit 1; }
py=/usr/bin/python3
$py -c "import h5py, numpy" 2> /dev/null || { echo "ckpt_inspect: SKIP (needs /usr/bin/python3 with h5py and numpy)"; exit 0; }
"$moerun" --set model.d_model=32 --set model.n_heads=2 --set model.d_ff=48 --set model.seq_len=32 --set model.n_layers=2 \
  --set train.global_batch=8 --set train.micro_batch=2 --set eval.every=0 --set eval.examples=0 --set eval.heldout_batches=1 \
  --set train.steps=3 --set log.progress=lines --run-dir "$work/r" > "$work/train.log" 2>&1 \
  || { cat "$work/train.log"; fail "training failed"; }
file=$(ls "$work"/r/checkpoints/step_*.h5 | tail -1)
# info: the numbers of the step the checkpoint follows, as metrics.jsonl logged them, and the version.
"$ckpt" --json info "$file" > "$work/info.json" || fail "info failed"
$py - "$work/info.json" "$work/r/metrics.jsonl" <<'PY' || fail "info does not give step 3's loss, lr and grad norm"
import json, sys
info = json.load(open(sys.argv[1]))
step3 = [json.loads(l) for l in open(sys.argv[2]) if '"step_ms"' in l][-1]
assert step3["step"] == 3 and info["step"] == 3
for k in ("loss", "lr", "grad_norm"):
    assert abs(info["step_metrics"][k] - step3[k]) <= 1e-12 * abs(step3[k]), (k, info["step_metrics"][k], step3[k])
assert info["moerun_version"].startswith("moerun ") and "(commit " in info["moerun_version"], info["moerun_version"]
PY
"$ckpt" info "$file" | grep -q "at step 3: loss" || fail "info's text lacks the step's numbers"
"$ckpt" --json show "$file" layers.0.moe.experts.2.w1 > "$work/show.json" || fail "show of one expert failed"
"$ckpt" --json stats "$file" > "$work/stats.json" || fail "stats failed"
$py - "$file" "$work/show.json" "$work/stats.json" <<'PY' || fail "show or stats disagree with numpy"
import json, sys
import h5py, numpy as np
f = h5py.File(sys.argv[1], "r")
show, stats = json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
w = f["/model/layers/0/moe/experts/w1"][2].astype(np.float64)
assert show["expert"] == 2 and show["shape"] == list(w.shape), (show["shape"], w.shape)
assert abs(show["stats"]["l2"] - np.linalg.norm(w)) <= 1e-5 * np.linalg.norm(w), show["stats"]
v = f["/optimizer/v/layers/1/moe/experts/w2"][()].astype(np.float64)
t = stats["tensors"]["/optimizer/v/layers/1/moe/experts/w2"]
assert abs(t["max_abs"] - np.abs(v).max()) <= 1e-6 * np.abs(v).max() and t["nan"] == 0, t
per = stats["experts"]["/optimizer/v/layers/1/moe/experts/w2"]["max_abs"]
assert np.allclose(per, np.abs(v).reshape(v.shape[0], -1).max(axis=1), rtol=1e-6), per
PY
# A NaN in expert 1's second moment, with the checksums updated: a readable file whose stats show it.
cp "$file" "$work/nan.h5"
$py - "$work/nan.h5" <<'PY' || fail "could not write the NaN"
import sys, zlib
import h5py, numpy as np
f = h5py.File(sys.argv[1], "r+")
d = f["/optimizer/v/layers/1/moe/experts/w2"]
a = d[()]
a[1].flat[7] = np.nan
d[...] = a
d.attrs["crc32"] = np.int64(zlib.crc32(a.astype("<f4").tobytes()))
d.attrs["crc32_rows"] = np.array([zlib.crc32(r.astype("<f4").tobytes()) for r in a], dtype=np.uint32)
PY
"$ckpt" --json stats "$work/nan.h5" > "$work/nan.json" || fail "stats refused a readable file with a NaN"
$py -c "
import json, sys
s = json.load(open(sys.argv[1]))
assert s['tensors']['/optimizer/v/layers/1/moe/experts/w2']['nan'] == 1
assert s['experts']['/optimizer/v/layers/1/moe/experts/w2']['nonfinite'] == [0, 1, 0, 0], s['experts']
" "$work/nan.json" || fail "the NaN is not reported in expert 1"
"$ckpt" stats "$work/nan.h5" | grep -q "NaN 1 Inf 0" || fail "the text output does not show the NaN"
# Corrupt bytes of expert 3's row (checksums not updated): verify names the row.
cp "$file" "$work/bad.h5"
$py - "$work/bad.h5" <<'PY' || fail "could not corrupt the file"
import sys
import h5py
with h5py.File(sys.argv[1], "r") as f:
    d = f["/model/layers/0/moe/experts/w1"]
    offset, row_bytes = d.id.get_offset(), d[0].nbytes
with open(sys.argv[1], "r+b") as raw:
    raw.seek(offset + 3 * row_bytes + 16)
    raw.write(b"\x7f\x01\x02\x03")
PY
"$ckpt" verify "$work/bad.h5" > "$work/verify.log" 2>&1 && fail "verify passed a corrupted file"
grep -q "experts/w1.*expert row(s) 3 fail" "$work/verify.log" || { cat "$work/verify.log"; fail "verify does not name row 3"; }
# diff between step 3 and a resumed step 4 with another learning rate.
"$moerun" --resume "$work/r" --set train.steps=4 --set train.lr=0.001 > "$work/resume.log" 2>&1 \
  || { cat "$work/resume.log"; fail "resume failed"; }
"$ckpt" --json diff "$file" "$work/r" > "$work/diff.json"
[ $? -eq 1 ] || fail "diff of two steps did not exit 1"
$py - "$file" "$work/r/checkpoints/step_00000004.h5" "$work/diff.json" <<'PY' || fail "diff disagrees with numpy"
import json, sys
import h5py, numpy as np
a, b, d = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r"), json.load(open(sys.argv[3]))
rel = [t["rel_change"] for t in d["tensors"]]
assert rel == sorted(rel, reverse=True), "not sorted"
for t in d["tensors"]:
    x, y = a[t["name"]][()].astype(np.float64), b[t["name"]][()].astype(np.float64)
    want = np.linalg.norm(x - y) / np.linalg.norm(x) if np.linalg.norm(x) > 0 else 0.0
    assert abs(t["rel_change"] - want) <= 1e-6 * max(want, 1e-30) + 1e-12, (t["name"], t["rel_change"], want)
    if "experts" in t:
        per = [np.linalg.norm(x[e] - y[e]) / np.linalg.norm(x[e]) for e in range(x.shape[0])]
        assert np.allclose(t["experts"], per, rtol=1e-6, atol=1e-12), (t["name"], t["experts"], per)
keys = {c[0] for c in d["config"]}
assert {"train.lr", "train.steps"} <= keys, keys
PY
"$ckpt" diff "$file" "$work/r" | grep -q "config train.lr: 0.003 -> 0.001" || fail "diff does not show the config change"
echo "ckpt_inspect: OK"
