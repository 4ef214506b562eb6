// Worker for a GGUF model through llama.cpp, as node-llama-cpp's prebuilt binaries ship it.
//
//     UV_THREADPOOL_SIZE=1 node benchmarks/peers/llama_worker.mjs .venv-peers/node   (JSON lines, see wire.py)
//
// The argument is the folder whose node_modules holds node-llama-cpp (ES imports ignore
// NODE_PATH, so it is resolved from there explicitly). libuv's
// default pool of 4 threads competes with llama.cpp's compute threads: on 2 cores it halves
// the decode rate, hence UV_THREADPOOL_SIZE=1 (the harness sets it).
//
// load {model, threads, context, vocab}; generate {prompt, new_tokens}: greedy (temperature 0) over
// the given ids, end-of-generation tokens included so every run decodes new_tokens;
// score {windows}: each window evaluated in one batch with the full next-token distribution
// at every position (controlledEvaluate), giving the target's NLL and the argmax.
import { readFileSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { performance } from "node:perf_hooks";
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";

const modules = createRequire(join(process.argv[2] ?? process.cwd(), "package.json"));
const entry = modules.resolve("node-llama-cpp");
const { getLlama, LlamaLogLevel } = await import(pathToFileURL(entry).href);
// The package exports no ./package.json; it sits one folder above dist/index.js.
const version = JSON.parse(readFileSync(join(dirname(entry), "..", "package.json"), "utf8")).version;

const state = { llama: null, model: null, context: null, sequence: null, vocab: 0 };

function statusKib(field) {
  const line = readFileSync("/proc/self/status", "ascii").split("\n").find((l) => l.startsWith(field + ":"));
  return Number(line.split(/\s+/)[1]);
}

function rss() {
  // VmHWM catches up with VmRSS lazily: the peak is the larger of the two.
  const now = statusKib("VmRSS") * 1024;
  return { peak_rss_bytes: Math.max(statusKib("VmHWM") * 1024, now), rss_bytes: now };
}

async function load(req) {
  const threads = req.threads;
  state.llama = await getLlama({
    gpu: false, build: "never", usePrebuiltBinaries: true, progressLogs: false, maxThreads: threads,
    logLevel: LlamaLogLevel.warn, logger: (level, message) => process.stderr.write(`[${level}] ${message}\n`),
  });
  state.model = await state.llama.loadModel({ modelPath: req.model, gpuLayers: 0 });
  // One batch holds a whole scoring window, so its logits come from a single evaluation.
  state.context = await state.model.createContext({
    contextSize: req.context, batchSize: req.context, sequences: 1, threads: { ideal: threads, min: threads },
  });
  state.sequence = state.context.getSequence();
  state.vocab = req.vocab;
  const release = state.llama.llamaCppRelease.release;
  return { file_bytes: statSync(req.model).size, runtime: `node-llama-cpp ${version} (llama.cpp ${release})` };
}

async function generate(req) {
  const { prompt, new_tokens: newTokens } = req;
  const seq = state.sequence;
  await seq.clearHistory();
  const tokens = [];
  const start = performance.now();
  let firstAt = start;
  for await (const token of seq.evaluate(prompt, { temperature: 0, yieldEogToken: true })) {
    tokens.push(token);
    if (tokens.length === 1) firstAt = performance.now();
    if (tokens.length >= newTokens) break;
  }
  const end = performance.now();
  return { tokens, prefill_s: (firstAt - start) / 1e3, decode_s: (end - firstAt) / 1e3, decode_steps: newTokens - 1 };
}

async function score(req) {
  const seq = state.sequence;
  const nll = [];
  const argmax = [];
  for (const ids of req.windows) {
    await seq.clearHistory();
    // Greedy sampling leaves the candidate list whole, so the distribution is the full softmax.
    const input = ids.map((t, i) => (i < ids.length - 1 ? [t, { generateNext: { probabilities: true } }] : t));
    const out = await seq.controlledEvaluate(input);
    let sum = 0;
    const top = [];
    for (let i = 0; i < ids.length - 1; i++) {
      const probs = out[i]?.next?.probabilities;
      if (probs == null || probs.size < state.vocab) {
        throw new Error(`position ${i}: ${probs?.size ?? 0} probabilities, expected the whole vocabulary`);
      }
      top.push(probs.keys().next().value);
      // float32 softmax: a target far in the tail can round to 0; floor it at the
      // smallest float32 rather than report an infinite NLL.
      sum -= Math.log(Math.max(probs.get(ids[i + 1]) ?? 0, 1.4e-45));
    }
    nll.push(sum);
    argmax.push(top);
  }
  return { nll, argmax };
}

const handlers = { load, generate, score, rss: async () => rss() };

// console.log from a library would corrupt the channel: send it to stderr.
console.log = (...args) => process.stderr.write(args.join(" ") + "\n");
const reply = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  if (!line.trim()) continue;
  const req = JSON.parse(line);
  if (req.op === "quit") {
    reply({ ok: true });
    break;
  }
  try {
    const handler = handlers[req.op];
    if (handler == null) throw new Error(`unknown op ${req.op}`);
    reply({ ok: true, ...(await handler(req)) });
  } catch (err) {
    reply({ ok: false, error: String(err?.stack ?? err) });
  }
}
await state.context?.dispose();
await state.model?.dispose();
process.exit(0);
