// Runs a wasip1 Go test binary (a WASI command) with Node's WASI, so that
// the SDK's tests also run compiled to wasm:
//
//   cd policy-sdk/go && GOOS=wasip1 GOARCH=wasm go test -exec "node --no-warnings $PWD/hack/wasip1-exec.mjs" ./...
//
// The binary sees the process's arguments, environment and working directory
// (the whole file system is preopened), as go test expects.
import { readFileSync } from "node:fs";
import { WASI } from "node:wasi";

const [wasmPath, ...args] = process.argv.slice(2);
if (!wasmPath) {
  console.error("usage: wasip1-exec.mjs WASM [ARGS...]");
  process.exit(2);
}
const wasi = new WASI({
  version: "preview1",
  args: [wasmPath, ...args],
  env: { ...process.env, PWD: process.cwd() },
  preopens: { "/": "/" },
  returnOnExit: true,
});
const module = await WebAssembly.compile(readFileSync(wasmPath));
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
process.exitCode = wasi.start(instance);
