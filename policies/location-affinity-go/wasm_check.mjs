// Runs a built location-affinity-go.wasm through the ABI v1 memory protocol
// with Node's WASI preview1, one fresh instance per call as the host does:
// _initialize, tmc_abi_version, tmc_alloc + tmc_validate_settings,
// tmc_test_vectors (which must ship the shared vectors file), and tmc_place on
// every vector of VECTORS (default: the vectors the module ships). Exits 1 on
// any mismatch.
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

async function instance() {
  const wasi = new WASI({ version: "preview1", args: [], env: {}, returnOnExit: true });
  const inst = await WebAssembly.instantiate(module, wasi.getImportObject());
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

const bad = await instance();
const packed = bad.tmc_place(12345, 10);
check("foreign pointer", /was not returned by tmc_alloc/.test(readAnswer(bad, packed).error ?? ""), "accepted a pointer not from tmc_alloc");

console.log(`${vectors.length} vectors, ${failures} failure(s)`);
process.exit(failures ? 1 : 0);
