// Runs a built location-affinity-go.wasm through the ABI v1 memory protocol
// with Node's WASI preview1 in the host's sandbox (frozen clocks, deterministic
// random_get), one fresh instance per call as the host does:
// _initialize, tmc_abi_version, tmc_alloc + tmc_validate_settings,
// tmc_test_vectors (which must ship the shared vectors file), and tmc_place on
// every vector of VECTORS (default: the vectors the module ships), and a large
// request that makes the Go garbage collector run. Exits 1 on any mismatch.
//
// Usage: node policies/location-affinity-go/wasm_check.mjs [WASM [VECTORS]]
import { readFileSync } from "node:fs";
import { WASI } from "node:wasi";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

const here = dirname(fileURLToPath(import.meta.url));
const wasmPath = process.argv[2] || join(here, "../../target/policies/location-affinity-go.wasm");
const sharedPath = join(here, "../testdata/location-affinity-vectors.json");
const module = new WebAssembly.Module(readFileSync(wasmPath));

// The host's sandbox (docs/policy-abi.md section 4): the wall clock reads
// 2024-01-01T00:00:00Z, the monotonic clock a constant, random_get is
// deterministic. The Go runtime refuses a monotonic clock reading 0 ("fatal
// error: nanotime returning zero" in _initialize), so the constant defaults to
// 1 s; TMC_FROZEN_MONOTONIC_NS=0 reproduces that failure.
const FROZEN_WALL_NS = 1704067200n * 1000000000n;
const FROZEN_MONOTONIC_NS = BigInt(process.env.TMC_FROZEN_MONOTONIC_NS ?? "1000000000");

async function instance() {
  const wasi = new WASI({ version: "preview1", args: [], env: {}, returnOnExit: true });
  const imports = wasi.getImportObject();
  const preview1 = imports.wasi_snapshot_preview1;
  let memory;
  let seed = 0x2545f491;
  preview1.clock_time_get = (id, _precision, out) => {
    new DataView(memory.buffer).setBigUint64(out, id === 0 ? FROZEN_WALL_NS : FROZEN_MONOTONIC_NS, true);
    return 0;
  };
  preview1.random_get = (ptr, len) => {
    const bytes = new Uint8Array(memory.buffer, ptr, len);
    for (let i = 0; i < len; i++) {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      bytes[i] = seed >>> 24;
    }
    return 0;
  };
  const inst = await WebAssembly.instantiate(module, imports);
  memory = inst.exports.memory;
  wasi.initialize(inst);
  return inst.exports;
}

function readAnswer(exports, packed) {
  const ptr = Number(BigInt.asUintN(64, packed) >> 32n);
  const len = Number(BigInt.asUintN(32, packed));
  return JSON.parse(new TextDecoder().decode(new Uint8Array(exports.memory.buffer, ptr, len)));
}

async function call(entry, input) {
  const exports = await instance();
  const bytes = new TextEncoder().encode(JSON.stringify(input));
  const ptr = exports.tmc_alloc(bytes.length) >>> 0;
  new Uint8Array(exports.memory.buffer, ptr, bytes.length).set(bytes);
  return readAnswer(exports, exports[entry](ptr, bytes.length));
}

let failures = 0;
function check(name, ok, detail) {
  if (!ok) {
    failures++;
    console.log(`FAIL ${name}: ${detail}`);
  }
}

const exports = await instance();
check("tmc_abi_version", exports.tmc_abi_version() === 1, `got ${exports.tmc_abi_version()}`);
check("no tmc_transform", !("tmc_transform" in exports), "a placement-only module exports tmc_transform");

for (const [settings, valid] of [[null, true], [{ mode: "preferred", maxTargets: 2 }, true], [{ maxTargets: 0 }, false], [{ bogus: 1 }, false]]) {
  const answer = await call("tmc_validate_settings", { settings });
  check(`settings ${JSON.stringify(settings)}`, answer.ok?.valid === valid, JSON.stringify(answer));
}

const shipped = readAnswer(exports, exports.tmc_test_vectors()).ok;
const shared = JSON.parse(readFileSync(sharedPath, "utf8"));
check("tmc_test_vectors", JSON.stringify(shipped) === JSON.stringify(shared), `the module ships other vectors than ${sharedPath}: rebuild it`);

const vectors = process.argv[3] ? JSON.parse(readFileSync(process.argv[3], "utf8")) : shipped ?? [];
check("vectors", vectors.length > 0, "no vectors to run");
for (const v of vectors) {
  const answer = await call("tmc_place", v.input);
  const got = JSON.stringify(answer.ok?.targets);
  check(v.name, got === JSON.stringify(v.expect.targets), `got ${JSON.stringify(answer)}, want ${JSON.stringify(v.expect.targets)}`);
}

// 3000 ready targets and 4000 replicas: about 1 MB of input, enough to make
// the garbage collector run under the frozen clocks.
const many = Array.from({ length: 3000 }, (_, i) => ({
  name: `t${String(2999 - i).padStart(4, "0")}`, labels: {}, location: {}, ready: true, schedulable: true,
}));
const large = await call("tmc_place", {
  workload: { apiVersion: "apps/v1", kind: "Deployment", namespace: "", name: "big", labels: {}, annotations: {}, replicas: 4000 },
  placement: { name: "big" }, settings: null, targets: many,
});
const names = large.ok?.targets?.map((t) => t.name) ?? [];
const sorted = many.map((t) => t.name).sort();
const shares = large.ok?.targets?.map((t) => t.replicas) ?? [];
check("large request", JSON.stringify(names) === JSON.stringify(sorted) && shares.filter((r) => r === 2).length === 1000 &&
  shares.slice(1000).every((r) => r === 1), JSON.stringify(large).slice(0, 300));

const bad = await instance();
const packed = bad.tmc_place(12345, 10);
check("foreign pointer", /was not returned by tmc_alloc/.test(readAnswer(bad, packed).error ?? ""), "accepted a pointer not from tmc_alloc");

console.log(`${vectors.length} vectors, ${failures} failure(s)`);
process.exit(failures ? 1 : 0);
