#!/usr/bin/env node
// Runs an edgeopt bundle with onnxruntime-node, reading only its manifest.json: the
// contract check that a runtime other than onnxruntime's Python API gets the same answers.
//
//   node run_bundle.js BUNDLE ROWS.jsonl OUT.jsonl [--ids] [--threads N] [--batch N]
//
// --batch N runs N rows at a time, padded on the right to the longest (default 1).
// ROWS.jsonl: one {"text": ...} per line. OUT.jsonl: one line per row, {"label", "index",
// "logits"} for classifiers or {"embedding"} for embedders, plus "ids" with --ids.
// Tokenization: @huggingface/tokenizers (pure JS) on the bundle's own tokenizer.json,
// read from disk; nothing is fetched. Text-in bundles (a string input in the manifest)
// get the text itself and no tokenizer.
"use strict";

const crypto = require("crypto");
const fs = require("fs");
const path = require("path");

const MANIFEST_VERSION = 1;

function fail(message) {
  process.stderr.write(`error: ${message}\n`);
  process.exit(2);
}

// A manifest path, refused when it leaves the bundle (as edgeopt's reader does).
function bundleFile(bundle, rel) {
  const root = path.resolve(bundle);
  const target = path.resolve(root, rel);
  if (path.isAbsolute(rel) || !target.startsWith(root + path.sep)) {
    fail(`manifest points outside the bundle (${rel})`);
  }
  return target;
}

function readManifest(bundle) {
  const file = path.join(bundle, "manifest.json");
  if (!fs.existsSync(file)) fail(`${bundle} is not an edgeopt bundle (no manifest.json)`);
  const manifest = JSON.parse(fs.readFileSync(file, "utf8"));
  if (manifest.manifest_version !== MANIFEST_VERSION) {
    fail(`manifest_version ${manifest.manifest_version} is not ${MANIFEST_VERSION}`);
  }
  if (manifest.parity !== "passed") fail("the bundle's parity is not 'passed'; do not ship it");
  for (const [rel, info] of Object.entries(manifest.files || {})) {
    const digest = crypto.createHash("sha256").update(fs.readFileSync(bundleFile(bundle, rel)))
      .digest("hex");
    if (digest !== info.sha256) fail(`bundle file ${rel} does not match its sha256`);
  }
  return manifest;
}

// Execution providers onnxruntime-node names, in the manifest's order; the CPU last.
const NODE_EP = { CPUExecutionProvider: "cpu", CUDAExecutionProvider: "cuda",
                  CoreMLExecutionProvider: "coreml", XnnpackExecutionProvider: "xnnpack",
                  XNNPACKExecutionProvider: "xnnpack" };

function providerPlan(manifest) {
  const plan = [];
  for (const ep of manifest.providers || []) {
    if (NODE_EP[ep] && NODE_EP[ep] !== "cpu" && ort.listSupportedBackends()
        .some((b) => b.name === NODE_EP[ep])) plan.push(NODE_EP[ep]);
  }
  if (manifest.cpu_ep_fallback === false && !plan.length) {
    fail(`none of ${manifest.providers} runs in onnxruntime-node and the manifest forbids CPU fallback`);
  }
  plan.push("cpu");
  return plan;
}

// The manifest's session settings as onnxruntime session config entries: the graph
// transformers to skip at load, and no CPU fallback when the manifest forbids it.
function sessionConfig(manifest) {
  const disabled = (manifest.session_options || {}).disabled_optimizers || [];
  const extra = {};
  if (disabled.length) extra.optimization = { disable_specified_optimizers: disabled.join(",") };
  if (manifest.cpu_ep_fallback === false) extra.session = { disable_cpu_ep_fallback: "1" };
  return extra;
}

function isTextInput(spec) {
  return spec.dtype === "object" || spec.dtype === "str" || spec.dtype === "string";
}

function loadTokenizer(bundle, manifest) {
  const { Tokenizer } = require("@huggingface/tokenizers");
  const files = (manifest.tokenizer && manifest.tokenizer.files) || [];
  if (!files.includes("tokenizer.json")) fail("the manifest names no tokenizer.json");
  const json = JSON.parse(fs.readFileSync(bundleFile(bundle, "tokenizer.json"), "utf8"));
  const config = files.includes("tokenizer_config.json")
    ? JSON.parse(fs.readFileSync(bundleFile(bundle, "tokenizer_config.json"), "utf8")) : {};
  return new Tokenizer(json, config);
}

// ids, mask and type ids of one text, truncated to max_sequence_length the way
// transformers truncates one sequence: the tokens are cut, the closing special kept.
function encode(tokenizer, text, maxLen) {
  const enc = tokenizer.encode(text, { return_token_type_ids: true });
  let ids = enc.ids, types = enc.token_type_ids || ids.map(() => 0);
  if (maxLen && ids.length > maxLen) {
    ids = ids.slice(0, maxLen - 1).concat(ids.slice(-1));
    types = types.slice(0, maxLen - 1).concat(types.slice(-1));
  }
  return { ids, mask: ids.map(() => 1), types };
}

// [batch, seq] int64 from one array per row, padded on the right with `pad`.
function int64Tensor(rows, batch, seq, pad) {
  const data = new BigInt64Array(batch * seq).fill(BigInt(pad));
  rows.forEach((values, r) => values.forEach((v, i) => { data[r * seq + i] = BigInt(v); }));
  return new ort.Tensor("int64", data, [batch, seq]);
}

// The feeds of a group of rows: padded to the longest (or to the manifest's fixed shape,
// with empty rows filling a fixed batch).
function feeds(manifest, encs, texts) {
  const fixed = manifest.fixed_input_shape;
  const seq = fixed ? fixed.sequence : Math.max(...encs.map((e) => e.ids.length));
  const batch = fixed ? fixed.batch : encs.length;
  if (encs.some((e) => e.ids.length > seq)) fail(`a row has more tokens than the fixed sequence ${seq}`);
  const padId = (manifest.tokenizer && manifest.tokenizer.pad_token_id) || 0;
  const out = {};
  for (const spec of manifest.inputs) {
    if (isTextInput(spec)) out[spec.name] = new ort.Tensor("string", texts, [texts.length]);
    else if (spec.name === "input_ids") out[spec.name] = int64Tensor(encs.map((e) => e.ids), batch, seq, padId);
    else if (spec.name === "attention_mask") out[spec.name] = int64Tensor(encs.map((e) => e.mask), batch, seq, 0);
    else if (spec.name === "token_type_ids") out[spec.name] = int64Tensor(encs.map((e) => e.types), batch, seq, 0);
    else fail(`input ${spec.name} is not one this runner knows how to fill`);
  }
  return out;
}

// Row r of a [batch, ...] output as its own tensor-like {dims, data}.
function rowOf(tensor, r) {
  const per = tensor.dims.slice(1).reduce((a, b) => a * b, 1);
  return { dims: [1, ...tensor.dims.slice(1)], data: tensor.data.subarray(r * per, (r + 1) * per) };
}

// A sentence vector from the graph's output: pooled in the graph (rank 2) or token
// states (rank 3) pooled here as the manifest says.
function sentenceVector(manifest, tensor, mask) {
  let vec;
  if (tensor.dims.length === 2) vec = Array.from(tensor.data);
  else {
    const [, seq, hidden] = tensor.dims;
    vec = new Array(hidden).fill(0);
    if (manifest.pooling === "cls") for (let h = 0; h < hidden; h++) vec[h] = tensor.data[h];
    else if (manifest.pooling === "mean") {
      let n = 0;
      for (let t = 0; t < seq; t++) {
        if (!mask[t]) continue;
        n += 1;
        for (let h = 0; h < hidden; h++) vec[h] += tensor.data[t * hidden + h];
      }
      for (let h = 0; h < hidden; h++) vec[h] /= n;
    } else fail(`pooling ${manifest.pooling} is not one this runner implements`);
    if (manifest.normalized) {
      const norm = Math.sqrt(vec.reduce((s, v) => s + v * v, 0)) || 1;
      vec = vec.map((v) => v / norm);
    }
  }
  return vec;
}

let ort;

async function main(argv) {
  const args = argv.filter((a, i) => !a.startsWith("--") && !["--threads", "--batch"].includes(argv[i - 1]));
  if (args.length !== 3) fail("usage: run_bundle.js BUNDLE ROWS.jsonl OUT.jsonl [--ids] [--threads N] [--batch N]");
  const [bundle, rowsPath, outPath] = args;
  const option = (name, fallback) => {
    const at = argv.indexOf(name);
    return at >= 0 ? Number(argv[at + 1]) : fallback;
  };
  const threads = option("--threads", 1), batchSize = option("--batch", 1);
  ort = require("onnxruntime-node");
  const manifest = readManifest(bundle);
  const textIn = manifest.inputs.some(isTextInput);
  const tokenizer = textIn ? null : loadTokenizer(bundle, manifest);
  const providers = providerPlan(manifest);
  const session = await ort.InferenceSession.create(bundleFile(bundle, manifest.model), {
    executionProviders: providers, intraOpNumThreads: threads, interOpNumThreads: 1,
    graphOptimizationLevel: "all", extra: sessionConfig(manifest) });
  process.stderr.write(`session: ${path.basename(bundle)} on ${providers.join(", ")} ` +
                       `(manifest: ${manifest.providers.join(", ")})\n`);
  const names = manifest.outputs.map((o) => o.name);
  const rows = fs.readFileSync(rowsPath, "utf8").split("\n").filter((l) => l.trim())
    .map((l) => JSON.parse(l));
  const lines = [];
  const fixedBatch = manifest.fixed_input_shape ? manifest.fixed_input_shape.batch : null;
  const step = fixedBatch || batchSize;
  for (let start = 0; start < rows.length; start += step) {
    const group = rows.slice(start, start + step);
    const texts = group.map((r) => r.text);
    const encs = texts.map((t) => (textIn ? { ids: [], mask: [], types: [] }
      : encode(tokenizer, t, manifest.max_sequence_length)));
    const result = await session.run(feeds(manifest, encs, texts));
    const seq = manifest.fixed_input_shape ? manifest.fixed_input_shape.sequence
      : Math.max(...encs.map((e) => e.ids.length));
    group.forEach((_, r) => {
      const out = {};
      if (manifest.task === "text-classification") {
        const logits = Array.from(rowOf(result[names.includes("logits") ? "logits" : names[0]], r).data);
        const index = logits.indexOf(Math.max(...logits));
        Object.assign(out, { index, label: manifest.label_names ? manifest.label_names[index] : index,
                             logits });
      } else if (manifest.task === "feature-extraction") {
        const name = names.includes("sentence_embedding") ? "sentence_embedding" : names[0];
        const mask = encs[r].mask.concat(new Array(seq - encs[r].mask.length).fill(0));
        out.embedding = sentenceVector(manifest, rowOf(result[name], r), mask);
      } else fail(`task ${manifest.task} is not one this runner implements`);
      if (argv.includes("--ids")) out.ids = encs[r].ids;
      lines.push(JSON.stringify(out));
    });
  }
  fs.writeFileSync(outPath, lines.join("\n") + "\n");
  process.stderr.write(`wrote ${rows.length} rows to ${outPath}\n`);
}

main(process.argv.slice(2)).catch((err) => fail(err.message));
