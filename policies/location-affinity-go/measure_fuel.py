"""Measures what a placement module costs in wasmtime, in fuel (wasm operators).

For each vector of a file: a fresh instance (as the host makes), _initialize,
tmc_alloc, tmc_place; prints the fuel of _initialize and of tmc_place, and how
many answers match the vectors. Needs the wasmtime Python package
(python3 -m venv /tmp/wt && /tmp/wt/bin/pip install wasmtime).

Usage: python3 measure_fuel.py [WASM] [VECTORS]
"""

import json
import os
import sys

from wasmtime import Config, Engine, Linker, Module, Store, WasiConfig

HERE = os.path.dirname(os.path.abspath(__file__))
WASM = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "../../target/policies/location-affinity-go.wasm")
VECTORS = sys.argv[2] if len(sys.argv) > 2 else os.path.join(HERE, "../testdata/location-affinity-vectors.json")
BUDGET = 10**12

config = Config()
config.consume_fuel = True
engine = Engine(config)
module = Module.from_file(engine, WASM)
linker = Linker(engine)
linker.define_wasi()


def fresh():
    """A new instance after _initialize, and the fuel _initialize used."""
    store = Store(engine)
    store.set_wasi(WasiConfig())
    store.set_fuel(BUDGET)
    exports = linker.instantiate(store, module).exports(store)
    if "_initialize" in exports:
        exports["_initialize"](store)
    return store, exports, BUDGET - store.get_fuel()


def call(entry, value):
    """Calls entry on a fresh instance; returns the answer and the fuel of the call."""
    store, exports, _ = fresh()
    data = json.dumps(value, separators=(",", ":")).encode()
    ptr = exports["tmc_alloc"](store, len(data)) & 0xFFFFFFFF
    exports["memory"].write(store, data, ptr)
    before = store.get_fuel()
    packed = exports[entry](store, ptr, len(data)) & 0xFFFFFFFFFFFFFFFF
    used = before - store.get_fuel()
    out_ptr, out_len = packed >> 32, packed & 0xFFFFFFFF
    return json.loads(bytes(exports["memory"].read(store, out_ptr, out_ptr + out_len))), used


store, exports, init_fuel = fresh()
print(f"{os.path.basename(WASM)}: {os.path.getsize(WASM)} bytes")
print(f"_initialize: {init_fuel} fuel; linear memory after it: {exports['memory'].data_len(store)} bytes")
_, settings_fuel = call("tmc_validate_settings", {"settings": {}})
print(f'tmc_validate_settings({{"settings": {{}}}}): {settings_fuel} fuel')
vectors = json.load(open(VECTORS))
fuels, matching = [], 0
for vector in vectors:
    answer, used = call("tmc_place", vector["input"])
    fuels.append(used)
    matching += answer.get("ok", {}).get("targets") == vector["expect"]["targets"]
print(f"tmc_place: {min(fuels)} to {max(fuels)} fuel; {matching} of {len(vectors)} answers match the vectors")
sys.exit(0 if matching == len(vectors) else 1)
