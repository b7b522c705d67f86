"""Fuzz caffeport's readers with mutated real Caffe files (issue 6).

Every input is a real file from the shared test models (caffemodels, HDF5
snapshots, prototxts, binaryproto means) plus a few synthetic seeds in the
encodings no shared file uses (V0, unpacked floats, double_data, fp16), with
one to four mutations stacked on it: bit flips, interesting bytes, inserted,
deleted, duplicated or spliced ranges, truncation, protobuf-aware tampering
(a length, a tag, a dimension or another varint re-encoded as 0, +-1, 2^31,
2^63, 2^64-1, an 11-byte varint, ...) and, for prototxts, token edits. With
``--engine atheris`` (``pip install atheris``) libFuzzer's coverage-guided
loop mutates and drives the inputs instead, in this process.

Each input is written to a scratch file and read by a worker process with the
entry point a user would hit (``caffeport.read`` for weights and prototxts,
``caffeport.read_blob`` for means; ``--deep`` also transforms, describes and
exports what was read). The result is one of:

- clean: a valid `Net`/array, or a `CaffeportError` subclass;
- crash: any other exception (also `InternalDecodeError`, the read entry's
  guard against unchecked input, which counts as a bug), a `MemoryError`
  under the worker's address-space limit, or the worker dying (segfault);
- hang: no answer within ``--timeout`` seconds (the worker is killed);
- memory: the worker's peak RSS grew past ``--rss-limit-mb`` above its baseline.

``--engine structure`` (issue 14) fuzzes the other side: valid nets, one per layer type caffeport registers,
with each numeric ``*_param`` field set to absurd values (0, -1, 2^31, 2^32-1, 2^63, the type's bounds; nan,
inf, 1e38 for floats) and layers of odd names, written as prototxt and caffemodel and run through ``caffeport
inspect``, ``run`` and ``convert`` for every format but keras3, each command in a forked child under
RLIMIT_AS/RLIMIT_FSIZE and a time limit (see the section "The structure-aware campaign" below).

Crashes, hangs and memory findings are saved (input, and a ``.txt`` with the
traceback) under ``--crash-dir``, deduplicated by exception type and raising
line. Replay one with ``--replay FILE --kind KIND``.

    python benchmarks/fuzz.py --inputs 100000 --seconds 900
    python benchmarks/fuzz.py --engine atheris --seconds 600
    python benchmarks/fuzz.py --replay /tmp/caffeport-fuzz/crash-....bin --kind caffemodel
    python benchmarks/fuzz.py --engine structure --seconds 720 --seed 14
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import math
import multiprocessing as mp
import os
import random
import re
import signal
import struct
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from caffeport.codec.wire import encode_delimited as _ld
from caffeport.codec.wire import encode_key as _key
from caffeport.codec.wire import encode_varint as _varint

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = ROOT.parent / "shared" / "caffe-models"
KINDS = ("caffemodel", "h5", "binaryproto", "prototxt")
SUFFIX = {"caffemodel": ".caffemodel", "h5": ".caffemodel.h5", "binaryproto": ".binaryproto", "prototxt": ".prototxt"}

# --------------------------------------------------------------------------
# Seeds


@dataclass
class Seed:
    name: str
    kind: str
    data: bytes
    #: a matching file of the other kind (prototxt for a caffemodel and the reverse), read unmutated
    partner: Path | None = None
    #: protobuf positions found by walking the seed: (start, end, role) of varints
    varints: list[tuple[int, int, str]] = field(default_factory=list)


def _synthetic_seeds() -> list[Seed]:
    """Encodings no shared model uses: V0 nesting, unpacked floats, double_data, fp16 raw_data, legacy dims."""
    floats = struct.pack("<6f", 0.5, -1.0, 2.0, 3.5, 0.0, 1e-3)
    shape = _ld(7, _key(1, 0) + _varint(2) + _key(1, 0) + _varint(3))
    unpacked = shape + b"".join(_key(5, 5) + floats[i : i + 4] for i in range(0, 24, 4))
    double = shape + _ld(8, struct.pack("<6d", 1, 2, 3, 4, 5, 6))
    unpacked_double = shape + b"".join(_key(8, 1) + struct.pack("<d", v) for v in range(6))
    fp16 = shape + _key(10, 0) + _varint(2) + _ld(12, struct.pack("<6e", 1, 2, 3, 4, 5, 6))
    legacy = b"".join(_key(n, 0) + _varint(d) for n, d in zip((1, 2, 3, 4), (1, 1, 2, 3))) + _ld(5, floats)

    def v2(name: str, type_: str, *blobs: bytes) -> bytes:
        return _ld(100, _ld(1, name.encode()) + _ld(2, type_.encode()) + _ld(3, b"data") + _ld(4, name.encode())
                   + b"".join(_ld(7, b) for b in blobs))

    v2_net = (_ld(1, b"synthetic") + _ld(100, _ld(1, b"data") + _ld(2, b"Input") + _ld(4, b"data")
                                         + _key(143, 2) + _varint(6) + _ld(1, _ld(1, b"\x01\x03\x02\x03")))
              + v2("ip_unpacked", "InnerProduct", unpacked, _ld(7, _key(1, 0) + _varint(2)) + _ld(5, b"\0" * 8))
              + v2("ip_double", "InnerProduct", double) + v2("ip_udouble", "InnerProduct", unpacked_double)
              + v2("ip_fp16", "InnerProduct", fp16) + v2("conv", "Convolution", legacy))
    conv_v0 = (_ld(1, b"conv1") + _ld(2, b"conv") + _key(3, 0) + _varint(2) + _key(8, 0) + _varint(1)
               + _ld(50, legacy))
    v0_net = (_ld(1, b"v0") + _ld(3, b"data") + b"".join(_key(4, 0) + _varint(d) for d in (1, 3, 4, 4))
              + _ld(2, _ld(1, _ld(1, b"pad1") + _ld(2, b"padding") + _key(7, 0) + _varint(1))
                    + _ld(2, b"data") + _ld(3, b"pad1"))
              + _ld(2, _ld(1, conv_v0) + _ld(2, b"pad1") + _ld(3, b"conv1")))
    v1_net = _ld(1, b"v1") + _ld(2, _ld(4, b"ip") + _key(5, 0) + _varint(14) + _ld(2, b"data") + _ld(3, b"ip")
                                 + _ld(6, legacy))
    return [Seed("synthetic-v2", "caffemodel", v2_net), Seed("synthetic-v0", "caffemodel", v0_net),
            Seed("synthetic-v1", "caffemodel", v1_net), Seed("synthetic-blob", "binaryproto", unpacked)]


def _partner(model: Path) -> Path | None:
    texts = sorted(model.parent.glob("*.prototxt"))
    deploy = [p for p in texts if "train" not in p.name and "solver" not in p.name]
    return (deploy or texts or [None])[0]


def load_seeds(models: Path, max_bytes: int) -> list[Seed]:
    """The shared files up to ``max_bytes`` (the smallest of each kind always), plus the synthetic seeds."""
    if not (models / "MANIFEST.md").is_file():
        raise SystemExit(f"fuzz.py: the shared Caffe models are missing: expected them at {models}")
    seeds: list[Seed] = []
    by_kind: dict[str, list[Path]] = {kind: [] for kind in KINDS}
    for path in sorted(models.rglob("*")):
        name = path.name
        kind = ("h5" if name.endswith(".caffemodel.h5") else "caffemodel" if name.endswith(".caffemodel")
                else "binaryproto" if name.endswith(".binaryproto") else "prototxt" if name.endswith(".prototxt")
                else None)
        if kind is not None:
            by_kind[kind].append(path)
    for kind, paths in by_kind.items():
        paths.sort(key=lambda p: p.stat().st_size)
        for i, path in enumerate(paths):
            if i and path.stat().st_size > max_bytes:
                continue
            partner = _partner(path) if kind in ("caffemodel", "h5") else None
            if kind == "prototxt":
                models_beside = sorted(path.parent.glob("*.caffemodel"))
                partner = models_beside[0] if models_beside else None
            seeds.append(Seed(str(path.relative_to(models)), kind, path.read_bytes(), partner))
    seeds += _synthetic_seeds()
    for seed in seeds:
        if seed.kind in ("caffemodel", "binaryproto"):
            seed.varints = _walk(seed.data, 0, len(seed.data), 0)
    return seeds


def _read_varint(data: bytes, pos: int, end: int) -> tuple[int, int] | None:
    result = shift = 0
    for i in range(10):
        if pos + i >= end:
            return None
        byte = data[pos + i]
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos + i + 1
        shift += 7
    return None


def _walk(data: bytes, start: int, end: int, depth: int) -> list[tuple[int, int, str]]:
    """Positions of tags, lengths and varint values, recursing into payloads that parse as messages."""
    found: list[tuple[int, int, str]] = []
    pos = start
    while pos < end and len(found) < 20000:
        tag = _read_varint(data, pos, end)
        if tag is None:
            return found
        key, after = tag
        found.append((pos, after, "tag"))
        wire = key & 7
        if wire == 0:
            value = _read_varint(data, after, end)
            if value is None:
                return found
            found.append((after, value[1], "value"))
            pos = value[1]
        elif wire == 2:
            length = _read_varint(data, after, end)
            if length is None or length[1] + length[0] > end:
                return found
            found.append((after, length[1], "length"))
            payload = length[1]
            if depth < 8 and length[0] > 1:
                inner = _walk(data, payload, payload + length[0], depth + 1)
                if (inner and inner[-1][1] == payload + length[0]) or len(inner) > 2:
                    found += inner
            pos = payload + length[0]
        elif wire == 5:
            pos = after + 4
        elif wire == 1:
            pos = after + 8
        else:
            return found
    return found


# --------------------------------------------------------------------------
# Mutations

INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0x0A, 0x22, 0x3A, 0x08)
INTERESTING_INTS = (0, 1, 2, 3, 4, 7, 8, 0x7F, 0x80, 0xFFFF, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**53,
                    2**62, 2**63 - 1, 2**63, 2**64 - 1, 10**12)
_TOKEN = re.compile(rb'"(?:[^"\\\n]|\\.)*"|[A-Za-z_][A-Za-z0-9_]*|[-+]?[0-9][0-9A-Za-z.+-]*|\S')
TEXT_TOKENS = (b"{", b"}", b"<", b">", b"[", b"]", b":", b",", b"layer", b"layers", b"input_dim", b"name", b"top",
               b"bottom", b"-1", b"0", b"1e999", b"-1e999", b"nan", b"inf", b"99999999999999999999999", b"0x7fffffff",
               b"4294967296", b"'\\xff\\xfe'", b'"\\377"', b'"a/../../b"', b"include { phase: TRAIN }", b"#",
               b"convolution_param { num_output: 0 kernel_size: 0 }", b"reshape_param { shape { dim: -1 dim: -1 } }",
               b"input_param { shape { dim: 99999999999 dim: 99999999999 } }", b"\xff", b"\x00", b"\xc3\x28",
               b"layer {" * 120)


class Mutator:
    def __init__(self, rng: random.Random, seeds: list[Seed]) -> None:
        self.rng = rng
        self.seeds = seeds
        self.binary_ops: list[Callable[[bytearray, Seed], bytearray]] = [
            self.flip, self.flip, self.interesting_byte, self.insert, self.delete, self.duplicate, self.truncate,
            self.splice, self.varint_tamper, self.varint_tamper, self.varint_tamper, self.varint_tamper,
        ]
        self.text_ops: list[Callable[[bytearray, Seed], bytearray]] = [
            self.token_edit, self.token_edit, self.token_edit, self.token_edit, self.flip, self.insert, self.delete,
            self.truncate, self.duplicate,
        ]

    def mutate(self, seed: Seed) -> bytes:
        data = bytearray(seed.data)
        ops = self.text_ops if seed.kind == "prototxt" else self.binary_ops
        for _ in range(self.rng.choice((1, 1, 1, 2, 2, 3, 4))):
            data = self.rng.choice(ops)(data, seed)
        return bytes(data)

    def _pos(self, data: bytearray) -> int:
        return self.rng.randrange(len(data)) if data else 0

    def flip(self, data: bytearray, seed: Seed) -> bytearray:
        if data:
            for _ in range(self.rng.choice((1, 1, 2, 8))):
                data[self._pos(data)] ^= 1 << self.rng.randrange(8)
        return data

    def interesting_byte(self, data: bytearray, seed: Seed) -> bytearray:
        if data:
            data[self._pos(data)] = self.rng.choice(INTERESTING_BYTES)
        return data

    def insert(self, data: bytearray, seed: Seed) -> bytearray:
        n = self.rng.choice((1, 2, 4, 16))
        data[self._pos(data) : self._pos(data)] = self.rng.randbytes(n)
        return data

    def delete(self, data: bytearray, seed: Seed) -> bytearray:
        if data:
            start = self._pos(data)
            del data[start : start + self.rng.choice((1, 2, 4, 64, 1024))]
        return data

    def duplicate(self, data: bytearray, seed: Seed) -> bytearray:
        if data:
            start = self._pos(data)
            chunk = data[start : start + self.rng.choice((1, 8, 64, 4096))]
            at = self._pos(data)
            data[at:at] = chunk * self.rng.choice((1, 1, 2, 50))
        return data

    def truncate(self, data: bytearray, seed: Seed) -> bytearray:
        return data[: self._pos(data)]

    def splice(self, data: bytearray, seed: Seed) -> bytearray:
        other = self.rng.choice([s for s in self.seeds if s.kind == seed.kind] or [seed]).data
        if not data or not other:
            return data
        return data[: self._pos(data)] + other[self.rng.randrange(len(other)) :]

    def varint_tamper(self, data: bytearray, seed: Seed) -> bytearray:
        """Re-encode a tag, length or value of the original seed (only valid while the seed is unchanged)."""
        if not seed.varints or len(data) != len(seed.data):
            return self.flip(data, seed)
        start, end, role = self.rng.choice(seed.varints)
        old = _read_varint(bytes(data), start, end)
        value = old[0] if old else 0
        if role == "tag":
            choice = self.rng.randrange(4)
            new = (value & ~7 | self.rng.randrange(8) if choice == 0 else
                   (self.rng.choice((1, 2, 5, 7, 50, 100, 2**29 - 1, 2**29, 2**40)) << 3) | (value & 7) if choice == 1
                   else self.rng.choice(INTERESTING_INTS))
        else:
            delta = self.rng.choice((-1, 1, -4, 4))
            new = self.rng.choice((*INTERESTING_INTS, max(value + delta, 0), value * 2, 2**64 - 1 - value))
        encoded = _varint(new & ((1 << 64) - 1))  # a doubled value wraps to 64 bits, as a field would
        if self.rng.random() < 0.1:  # overlong encodings: protobuf allows padding up to 10 bytes, not 11
            encoded = bytes(b | 0x80 for b in encoded) + b"\x80" * self.rng.choice((0, 5, 9)) + b"\x00"
        data[start:end] = encoded
        return data

    def token_edit(self, data: bytearray, seed: Seed) -> bytearray:
        tokens = [(m.start(), m.end()) for m in _TOKEN.finditer(data)]
        if not tokens:
            return bytearray(self.rng.choice(TEXT_TOKENS)) + data
        start, end = self.rng.choice(tokens)
        op = self.rng.randrange(5)
        if op == 0:  # delete a token
            del data[start:end]
        elif op == 1:  # replace it
            data[start:end] = self.rng.choice(TEXT_TOKENS)
        elif op == 2:  # duplicate it
            data[end:end] = b" " + data[start:end]
        elif op == 3:  # insert a token before it
            data[start:start] = self.rng.choice(TEXT_TOKENS) + b" "
        else:  # swap with another token of the file
            s2, e2 = self.rng.choice(tokens)
            if e2 <= start or s2 >= end:
                first, second = sorted([(start, end), (s2, e2)])
                a, b = bytes(data[first[0] : first[1]]), bytes(data[second[0] : second[1]])
                data[second[0] : second[1]] = a
                data[first[0] : first[1]] = b
        return data


# --------------------------------------------------------------------------
# The worker: reads one input at a time


def classify(exc: BaseException) -> str | None:
    """None for a clean outcome, else what kind of finding ``exc`` is."""
    from caffeport.errors import CaffeportError, InternalDecodeError

    if isinstance(exc, InternalDecodeError):
        return "crash"
    if isinstance(exc, CaffeportError):
        return None
    return "crash"


def run_target(kind: str, path: Path, partner: Path | None, mode: int, deep: bool, scratch: Path) -> str:
    """Read ``path`` as a user would; returns a short description of the valid result."""
    import numpy as np

    import caffeport

    if kind == "binaryproto" or (kind == "caffemodel" and mode == 3):
        blob = caffeport.read_blob(path)
        return f"blob {blob.shape}"
    if kind == "prototxt":
        net = caffeport.read(partner if mode == 1 and partner else None, path)
    elif mode == 1 and partner is not None:
        net = caffeport.read(path, partner)
    else:
        net = caffeport.read(path)
    for layer in net:
        for blob in layer.blobs:
            assert isinstance(blob, np.ndarray)
    if deep:
        from caffeport.conversion import convert
        from caffeport.describe import table, to_json

        table(net)
        to_json(net)
        out = scratch / "out.h5"
        with contextlib.suppress(FileNotFoundError):
            out.unlink()
        if kind != "prototxt":
            convert(path, partner if mode == 1 else None, out, backend=("tensorflow", "torch", "caffe")[mode % 3],
                    force=True)
    return f"net of {len(net.layers)} layers"


def _finding_key(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "caffeport" in f.filename] or frames
    where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
    return f"{type(exc).__name__}@{where}"


def _vmhwm_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def worker_main(conn: Connection, address_limit_mb: int, deep: bool) -> None:
    import resource

    if address_limit_mb:
        limit = address_limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import caffeport  # noqa: F401  (import once, before the first timed input)

    scratch = Path(tempfile.mkdtemp(prefix="caffeport-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    baseline = _vmhwm_mb()
    conn.send(("ready", baseline))
    while True:
        message = conn.recv()
        if message is None:
            break
        kind, data, partner, mode = message
        path = scratch / f"input{SUFFIX[kind]}"
        path.write_bytes(data)
        try:
            detail = run_target(kind, path, Path(partner) if partner else None, mode, deep, scratch)
            conn.send(("ok", detail, "", _vmhwm_mb()))
        except BaseException as exc:
            finding = "memory" if isinstance(exc, MemoryError) else classify(exc)
            if finding is None:
                conn.send(("error", type(exc).__name__, "", _vmhwm_mb()))
            else:
                conn.send((finding, _finding_key(exc), traceback.format_exc(), _vmhwm_mb()))
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
    for leftover in scratch.iterdir():
        leftover.unlink()
    scratch.rmdir()


class Worker:
    def __init__(self, address_limit_mb: int, deep: bool) -> None:
        self.address_limit_mb = address_limit_mb
        self.deep = deep
        self.start()

    def start(self) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=worker_main, args=(child, self.address_limit_mb, self.deep), daemon=True)
        self.process.start()
        child.close()
        if not self.conn.poll(120):
            raise SystemExit("fuzz.py: the worker did not start")
        _, self.baseline = self.conn.recv()

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()

    def run(self, message: tuple[str, bytes, str | None, int], timeout: float) -> tuple[str, str, str, float]:
        try:
            self.conn.send(message)
            if self.conn.poll(timeout):
                return self.conn.recv()  # type: ignore[no-any-return]
            self.kill()
            self.start()
            return ("hang", "hang", f"no answer within {timeout} s", 0.0)
        except (EOFError, OSError, BrokenPipeError):
            self.process.join(5)
            code = self.process.exitcode
            self.conn.close()
            self.start()
            return ("crash", f"worker-died-{code}", f"the worker process died (exit code {code})", 0.0)

    def close(self) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            self.conn.send(None)
        self.process.join(10)
        if self.process.is_alive():
            self.kill()


# --------------------------------------------------------------------------
# The loop


@dataclass
class Stats:
    tried: int = 0
    valid: int = 0
    clean_errors: int = 0
    crashes: int = 0
    hangs: int = 0
    memory: int = 0
    by_error: dict[str, int] = field(default_factory=dict)
    findings: dict[str, int] = field(default_factory=dict)
    peak_rss_mb: float = 0.0


def _save(crash_dir: Path, finding: str, key: str, kind: str, data: bytes, report: str, seed: str) -> Path:
    crash_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1(data).hexdigest()[:12]
    safe = re.sub(r"[^A-Za-z0-9_.@-]", "_", key)
    path = crash_dir / f"{finding}-{kind}-{safe}-{digest}.bin"
    path.write_bytes(data)
    path.with_suffix(".txt").write_text(f"seed: {seed}\nkind: {kind}\nkey: {key}\n\n{report}")
    return path


def fuzz(args: argparse.Namespace) -> Stats:
    rng = random.Random(args.seed)
    seeds = load_seeds(args.models, args.max_seed_bytes)
    mutator = Mutator(rng, seeds)
    print(f"{len(seeds)} seeds ({', '.join(f'{k}: {sum(s.kind == k for s in seeds)}' for k in KINDS)})", flush=True)
    worker = Worker(args.address_limit_mb, args.deep)
    stats = Stats()
    start = time.monotonic()
    last_report = start
    try:
        while stats.tried < args.inputs and time.monotonic() - start < args.seconds:
            seed = rng.choice(seeds)
            data = mutator.mutate(seed)
            mode = rng.randrange(4)
            partner = str(seed.partner) if seed.partner else None
            outcome, key, report, rss = worker.run((seed.kind, data, partner, mode), args.timeout)
            stats.tried += 1
            stats.peak_rss_mb = max(stats.peak_rss_mb, rss - worker.baseline)
            if outcome == "ok":
                stats.valid += 1
            elif outcome == "error":
                stats.clean_errors += 1
                stats.by_error[key] = stats.by_error.get(key, 0) + 1
            if outcome in ("ok", "error") and rss - worker.baseline > args.rss_limit_mb:
                outcome, key, report = "memory", "rss", f"peak RSS {rss - worker.baseline:.0f} MB above baseline"
                worker.kill()
                worker.start()
            if outcome in ("crash", "hang", "memory"):
                setattr(stats, {"crash": "crashes", "hang": "hangs", "memory": "memory"}[outcome],
                        getattr(stats, {"crash": "crashes", "hang": "hangs", "memory": "memory"}[outcome]) + 1)
                first = key not in stats.findings
                stats.findings[key] = stats.findings.get(key, 0) + 1
                if first:
                    saved = _save(args.crash_dir, outcome, key, seed.kind, data, report, seed.name)
                    print(f"  {outcome}: {key} (seed {seed.name}, mode {mode}) -> {saved}", flush=True)
            now = time.monotonic()
            if now - last_report > args.report_every:
                last_report = now
                print(f"  {stats.tried} inputs in {now - start:.0f} s: {stats.valid} valid, {stats.clean_errors} "
                      f"clean errors, {stats.crashes} crashes, {stats.hangs} hangs, {stats.memory} memory",
                      flush=True)
    finally:
        worker.close()
    stats_seconds = time.monotonic() - start
    print(f"\n{stats.tried} inputs in {stats_seconds:.1f} s ({stats.tried / max(stats_seconds, 1e-9):.0f}/s): "
          f"{stats.valid} valid results, {stats.clean_errors} clean CaffeportErrors, {stats.crashes} crashes, "
          f"{stats.hangs} hangs, {stats.memory} memory findings; worker peak RSS +{stats.peak_rss_mb:.0f} MB")
    print("clean errors by type: " + ", ".join(f"{k} {v}" for k, v in sorted(stats.by_error.items())))
    if stats.findings:
        print("distinct findings: " + ", ".join(f"{k} x{v}" for k, v in sorted(stats.findings.items())))
    return stats


# --------------------------------------------------------------------------
# Coverage-guided: atheris drives a child process


def atheris_child(args: argparse.Namespace) -> None:
    import atheris

    with atheris.instrument_imports():
        import caffeport
        import caffeport.readers  # noqa: F401
    kinds = KINDS
    seeds = load_seeds(args.models, args.max_seed_bytes)
    partners = {kind: next((s.partner for s in seeds if s.kind == kind and s.partner), None) for kind in kinds}
    scratch = Path(tempfile.mkdtemp(prefix="caffeport-atheris-"))
    args.crash_dir.mkdir(parents=True, exist_ok=True)
    print(f"corpus and scratch files: {scratch}; findings: {args.crash_dir}", flush=True)
    seen: set[str] = set()

    def one_input(data: bytes) -> None:
        if len(data) < 2:
            return
        kind = kinds[data[0] % len(kinds)]
        mode = data[1] % 4
        path = scratch / f"input{SUFFIX[kind]}"
        path.write_bytes(data[2:])
        try:
            run_target(kind, path, partners[kind], mode, False, scratch)
        except BaseException as exc:
            finding = "memory" if isinstance(exc, MemoryError) else classify(exc)
            if finding is not None:
                key = _finding_key(exc)
                if key not in seen:
                    seen.add(key)
                    saved = _save(args.crash_dir, finding, key, kind, data[2:], traceback.format_exc(), "atheris")
                    print(f"  {finding}: {key} -> {saved}", flush=True)

    corpus = scratch / "corpus"
    corpus.mkdir()
    for i, seed in enumerate(seeds):
        (corpus / f"seed{i}").write_bytes(bytes([kinds.index(seed.kind), 0]) + seed.data)
    flags = [sys.argv[0], str(corpus), f"-runs={args.inputs}", f"-max_total_time={int(args.seconds)}",
             f"-timeout={int(args.timeout)}", f"-rss_limit_mb={args.address_limit_mb}", "-print_final_stats=1",
             f"-max_len={args.max_seed_bytes + 2}", f"-seed={args.seed or 1}",
             f"-artifact_prefix={args.crash_dir}/"]
    atheris.Setup(flags, one_input)
    atheris.Fuzz()


# --------------------------------------------------------------------------
# The structure-aware campaign (issue 14): valid nets with absurd parameter values and odd names, through the CLI
#
# Every layer type caffeport registers gets a small valid net (an Input of a small shape, the layer, a ReLU reading
# its first top), written as a prototxt and as a caffemodel (with blobs of the shapes the layer's type expects).
# Then each numeric field of the type's ``*_param`` (nested messages included) is set to each of 0, -1, 2^31,
# 2^32-1, 2^63 and the type's own bounds, where the field's type can hold them (a float field also takes nan, inf,
# -inf and 1e38), and the layer and its top get odd names. Each case runs through ``caffeport inspect`` (prototxt,
# caffemodel, both), ``caffeport run --random 0`` and ``caffeport convert -f F`` for every format but keras3, each
# in a child process forked from this one (already importing caffeport, so a case costs its work, not an
# interpreter start) under RLIMIT_AS, RLIMIT_FSIZE and a wall-clock limit.

INT_PROBES = (0, -1, 2**31, 2**32 - 1, 2**63)
FLOAT_PROBES = (0.0, -1.0, 2.0**31, 2.0**32 - 1, 2.0**63, math.nan, math.inf, -math.inf, 1e38)
#: bounds of each integer kind, as the field holds it on the wire
INT_BOUNDS = {"int32": (-(2**31), 2**31 - 1), "sint32": (-(2**31), 2**31 - 1), "uint32": (0, 2**32 - 1),
              "int64": (-(2**63), 2**63 - 1), "sint64": (-(2**63), 2**63 - 1), "uint64": (0, 2**64 - 1),
              "enum": (-(2**31), 2**31 - 1)}
#: layer names of every odd kind (bytes: a caffemodel may hold any; the prototxt gets them as escapes)
ODD_NAMES: dict[str, bytes] = {
    "empty": b"", "64KiB": b"n" * 65536, "nul": b"a\x00b", "slash": b"a/b", "dotdot": b"..", "root": b"/",
    "traversal": b"../../../../tmp/evil", "unicode": "свертка-名前-ü".encode(), "rtl": "a\u202eb\u200fc".encode(),
    "spaces": b" a b ", "newline": b"a\nb", "quote": b'a"b\\c', "invalid-utf8": b"\xff\xfe\x80", "dot": b".",
    "control": b"\x01\x1b[31m", "percent": b"%s%n%x",
}
#: fork parameters caffeport's schema does not list (prototxt only: a caffemodel's unknown fields are skipped)
FORK_FIELDS: dict[str, dict[str, str]] = {
    "interp_param": {f: "fork" for f in ("height", "width", "zoom_factor", "shrink_factor", "pad_beg", "pad_end")},
    "reorg_param": {"stride": "fork"},
    "shuffle_channel_param": {"group": "fork"},
    "upsample_param": {f: "fork" for f in ("scale", "scale_h", "scale_w", "upsample_h", "upsample_w")},
}


@dataclass(frozen=True)
class Recipe:
    """A valid net around one layer type: its bottoms' shapes (fed by one Input), its params, its top count."""

    bottoms: tuple[tuple[int, ...], ...] = ((1, 3, 4, 4),)
    params: dict[str, Any] = field(default_factory=dict)
    tops: int = 1


_TWO = ((1, 3, 4, 4), (1, 3, 4, 4))
RECIPES: dict[str, Recipe] = {
    "Convolution": Recipe(params={"num_output": 2, "kernel_size": [3]}),
    "DepthwiseConvolution": Recipe(params={"num_output": 3, "kernel_size": [3], "group": 3}),
    "ConvolutionDepthwise": Recipe(params={"num_output": 3, "kernel_size": [3]}),
    "Deconvolution": Recipe(params={"num_output": 2, "kernel_size": [2]}),
    "InnerProduct": Recipe(params={"num_output": 2}),
    "Embed": Recipe(bottoms=((2, 3),), params={"num_output": 2, "input_dim": 4}),
    "LSTM": Recipe(bottoms=((2, 1, 3), (2, 1)), params={"num_output": 2}),
    "RNN": Recipe(bottoms=((2, 1, 3), (2, 1)), params={"num_output": 2}),
    "Tile": Recipe(params={"tiles": 2}),
    "Reshape": Recipe(params={"shape": {"dim": [0, -1]}}),
    "Clip": Recipe(params={"min": -0.5, "max": 0.5}),
    "Crop": Recipe(bottoms=((1, 3, 4, 4), (1, 3, 2, 2)), params={"axis": 2}),
    "Concat": Recipe(bottoms=_TWO), "Eltwise": Recipe(bottoms=_TWO),
    "Slice": Recipe(tops=2), "Split": Recipe(tops=2),
    "Pooling": Recipe(params={"kernel_size": 2, "stride": 2}),
    "SPP": Recipe(params={"pyramid_height": 2}),
    "PriorBox": Recipe(bottoms=((1, 3, 2, 2), (1, 3, 8, 8)), params={"min_size": [2.0], "max_size": [4.0],
                                                                       "aspect_ratio": [2.0], "variance": [0.1]}),
    "DetectionOutput": Recipe(bottoms=((1, 8), (1, 4), (1, 2, 8)),
                              params={"num_classes": 2, "keep_top_k": 2, "confidence_threshold": 0.01,
                                      "nms_param": {"nms_threshold": 0.45, "top_k": 2}}),
    "DummyData": Recipe(bottoms=(), params={"shape": [{"dim": [1, 2, 3]}]}),
    "Interp": Recipe(params={"zoom_factor": 2}), "Upsample": Recipe(params={"scale": 2}),
    "ShuffleChannel": Recipe(params={"group": 3}), "Reorg": Recipe(bottoms=((1, 4, 4, 4),), params={"stride": 2}),
    "Permute": Recipe(params={"order": [0, 2, 3, 1]}),
    "Input": Recipe(bottoms=(), params={"shape": [{"dim": [1, 3, 4, 4]}]}),
    "Silence": Recipe(tops=0),
    "Data": Recipe(bottoms=(), tops=2), "ImageData": Recipe(bottoms=(), tops=2), "HDF5Data": Recipe(bottoms=(), tops=2),
    "AnnotatedData": Recipe(bottoms=(), tops=2), "WindowData": Recipe(bottoms=(), tops=2),
    "VideoData": Recipe(bottoms=(), tops=2), "MemoryData": Recipe(bottoms=(), tops=2),
    "Accuracy": Recipe(bottoms=((2, 3), (2,))), "SoftmaxWithLoss": Recipe(bottoms=((2, 3), (2,))),
    **{t: Recipe(bottoms=((2, 3), (2, 3))) for t in ("EuclideanLoss", "SigmoidCrossEntropyLoss", "HingeLoss",
                                                       "InfogainLoss", "MultinomialLogisticLoss")},
    "ContrastiveLoss": Recipe(bottoms=((2, 3), (2, 3), (2,))),
}


@dataclass
class Case:
    """One net: a layer of ``layer_type`` with ``params`` (under ``param_key``), named ``name``."""

    label: str
    layer_type: str
    param_key: str | None
    params: dict[str, Any]
    name: bytes = b"probe"
    top: bytes = b"probe"
    blobs: list[Any] = field(default_factory=list)


def _numeric_fields(message: str, depth: int = 0) -> list[tuple[tuple[str, ...], str]]:
    """(path, kind) of every numeric field of ``message``, recursing into nested messages (not into blobs)."""
    from caffeport.codec.caffe_schema import MESSAGES

    found: list[tuple[tuple[str, ...], str]] = []
    for spec in sorted(MESSAGES.get(message, {}).values(), key=lambda s: s.number):
        if spec.kind in INT_BOUNDS or spec.kind in ("float", "double"):
            found.append(((spec.name,), spec.kind))
        elif spec.kind == "message" and depth < 2 and spec.type_name not in ("BlobProto",):
            found += [((spec.name, *path), kind) for path, kind in _numeric_fields(spec.type_name or "", depth + 1)]
    return found


def _probes(kind: str) -> list[Any]:
    if kind in ("float", "double"):
        return list(FLOAT_PROBES)
    if kind == "fork":  # no declared type: the prototxt's value reaches the layer as it is
        return list(INT_PROBES)
    low, high = INT_BOUNDS[kind]
    values = [v for v in INT_PROBES if low <= v <= high] + [low, high]
    return list(dict.fromkeys(values))


def _with(params: dict[str, Any], path: tuple[str, ...], value: Any, repeated: bool) -> dict[str, Any]:
    """A copy of ``params`` with the field at ``path`` set to ``value`` (a list of one for a repeated field)."""
    out = dict(params)
    head, rest = path[0], path[1:]
    if not rest:
        out[head] = [value] if repeated else value
        return out
    inner = out.get(head)
    if isinstance(inner, list):
        out[head] = [_with(inner[0] if inner else {}, rest, value, repeated), *inner[1:]]
    else:
        out[head] = _with(inner if isinstance(inner, dict) else {}, rest, value, repeated)
    return out


def structure_cases() -> tuple[list[Case], dict[str, int]]:
    """Every case of the campaign, in a fixed order, and how many there are per layer type."""
    from caffeport.codec.caffe_schema import PARAM_KEY_BY_NAME, field_by_name
    from caffeport.layers import LAYER_TYPES

    cases: list[Case] = []
    per_type: dict[str, int] = {}
    for type_name, kind in LAYER_TYPES.items():
        recipe = RECIPES.get(type_name, Recipe())
        key = kind.param
        start = len(cases)
        cases.append(Case(f"{type_name}/base", type_name, key, dict(recipe.params)))
        message = PARAM_KEY_BY_NAME.get(key or "")
        if message:
            fields = _numeric_fields(message)
        else:
            fields = [((name,), ftype) for name, ftype in FORK_FIELDS.get(key or "", {}).items()]
        for path, fkind in fields:
            spec = field_by_name(message, path[-1]) if message and len(path) == 1 else None
            repeated = bool(spec and spec.repeated) or (message is not None and _repeated(message, path))
            for value in _probes(fkind):
                cases.append(Case(f"{type_name}/{key}.{'.'.join(path)}={value!r}", type_name, key,
                                  _with(recipe.params, path, value, repeated)))
        for label, name in ODD_NAMES.items():
            cases.append(Case(f"{type_name}/name={label}", type_name, key, dict(recipe.params), name=name, top=name))
        per_type[type_name] = len(cases) - start
    return cases, per_type


def _repeated(message: str, path: tuple[str, ...]) -> bool:
    from caffeport.codec.caffe_schema import MESSAGES

    specs = MESSAGES.get(message, {})
    for i, name in enumerate(path):
        spec = next((s for s in specs.values() if s.name == name), None)
        if spec is None:
            return False
        if i == len(path) - 1:
            return spec.repeated
        specs = MESSAGES.get(spec.type_name or "", {})
    return False


# ---- writing a case as a prototxt and a caffemodel


def _pt_string(text: bytes) -> str:
    """A prototxt string literal holding exactly ``text`` (octal escapes for anything not plain printable ASCII)."""
    return '"' + "".join(chr(b) if 0x20 <= b < 0x7F and b not in (0x22, 0x5C) else f"\\{b:03o}" for b in text) + '"'


def _pt_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    return str(value)  # an int, or an enum's name


def _pt_message(values: dict[str, Any], indent: str) -> str:
    lines = []
    for name, value in values.items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict):
                lines.append(f"{indent}{name} {{\n{_pt_message(item, indent + '  ')}{indent}}}")
            else:
                lines.append(f"{indent}{name}: {_pt_scalar(item)}")
    return "".join(line + "\n" for line in lines)


@dataclass
class _LayerSpec:
    name: bytes
    type: str
    bottoms: list[bytes]
    tops: list[bytes]
    param_key: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    blobs: list[Any] = field(default_factory=list)


def _layers_of(case: Case) -> list[_LayerSpec]:
    """The net of ``case``: an Input feeding its bottoms, the layer, a ReLU reading its first top."""
    recipe = RECIPES.get(case.layer_type, Recipe())
    layers = []
    feeds = [f"data{i}".encode() for i in range(len(recipe.bottoms))]
    if case.layer_type == "Input":
        tops = [case.top]
    else:
        if feeds:
            layers.append(_LayerSpec(b"input", "Input", [], feeds, "input_param",
                                     {"shape": [{"dim": list(s)} for s in recipe.bottoms]}))
        tops = [case.top + (f"_{i}".encode() if i else b"") for i in range(recipe.tops)]
    layers.append(_LayerSpec(case.name, case.layer_type, feeds, tops, case.param_key, case.params, case.blobs))
    if tops:
        layers.append(_LayerSpec(b"consumer", "ReLU", [tops[0]], [b"out"]))
    return layers


def case_prototxt(case: Case) -> bytes:
    parts = ['name: "fuzz"\n']
    for spec in _layers_of(case):
        body = f"  name: {_pt_string(spec.name)}\n  type: {_pt_string(spec.type.encode())}\n"
        body += "".join(f"  bottom: {_pt_string(b)}\n" for b in spec.bottoms)
        body += "".join(f"  top: {_pt_string(t)}\n" for t in spec.tops)
        if spec.param_key and spec.params:
            body += f"  {spec.param_key} {{\n{_pt_message(spec.params, '    ')}  }}\n"
        parts.append(f"layer {{\n{body}}}\n")
    return "".join(parts).encode()


def case_caffemodel(case: Case) -> bytes:
    """The same net as binary V2 (``*_param`` through caffeport's own encoder; fork params have no field number)."""
    import numpy as np

    from caffeport.codec.caffe_schema import LAYER_PARAMS
    from caffeport.exporters.caffe import encode_message

    numbers = {key: (number, message) for number, (key, message) in LAYER_PARAMS.items()}
    out = bytearray(_ld(1, b"fuzz"))
    for spec in _layers_of(case):
        body = bytearray(_ld(1, spec.name) + _ld(2, spec.type.encode()))
        body += b"".join(_ld(3, b) for b in spec.bottoms) + b"".join(_ld(4, t) for t in spec.tops)
        for blob in spec.blobs:
            array = np.asarray(blob, dtype="<f4")
            body += _ld(7, _ld(7, encode_message("BlobShape", {"dim": list(array.shape)})) + _ld(5, array.tobytes()))
        if spec.param_key in numbers and spec.params:
            number, message = numbers[spec.param_key]
            body += _ld(number, encode_message(message, spec.params))
        out += _ld(100, bytes(body))
    return bytes(out)


#: a blob bigger than this (elements) is not generated: the base case's blobs are used instead
MAX_GENERATED_BLOB = 1 << 20


def expected_blobs(case: Case, scratch: Path) -> list[tuple[int, ...]] | None:
    """The blob shapes the layer's type expects for ``case`` (``LayerType.blob_shapes``), or ``None``."""
    import caffeport
    from caffeport.errors import CaffeportError
    from caffeport.layers import layer_type

    path = scratch / "shapes.prototxt"
    path.write_bytes(case_prototxt(case))
    try:
        net = caffeport.read(None, path)
        layer = next(la for la in net.layers if la.type == case.layer_type and la.name not in ("input", "consumer"))
        shapes = layer_type(case.layer_type).blob_shapes(layer, list(layer.bottom_shapes))
    except (CaffeportError, StopIteration):
        return None
    except Exception:  # a bug the children will meet and report; here only the blob shapes are wanted
        return None
    if shapes is None or any(d is None or d < 0 for s in shapes for d in s):
        return None
    if any(math.prod(s) > MAX_GENERATED_BLOB for s in shapes):
        return None
    return [tuple(int(d) for d in s) for s in shapes]  # type: ignore[misc]


def _blob_values(shapes: list[tuple[int, ...]], rng: random.Random) -> list[Any]:
    """Blobs in (0.5, 1.5): positive, so a variance or a BatchNorm scale factor is one Caffe could have written."""
    import numpy as np

    gen = np.random.default_rng(rng.randrange(2**32))
    return [gen.uniform(0.5, 1.5, size=s).astype(np.float32) for s in shapes]


# ---- running the commands, each in a forked child


def structure_commands(formats: list[str]) -> list[str]:
    return ["inspect-prototxt", "inspect-caffemodel", "inspect-pair", "run", *(f"convert-{f}" for f in formats)]


def command_argv(command: str, prototxt: Path, model: Path, output: Path) -> list[str]:
    if command == "inspect-prototxt":
        return ["inspect", str(prototxt)]
    if command == "inspect-caffemodel":
        return ["inspect", str(model)]
    if command == "inspect-pair":
        return ["inspect", str(model), "-p", str(prototxt), "--json"]
    if command == "run":
        return ["run", str(model), "-p", str(prototxt), "--random", "0", "--all-layers", "-q", "-o", str(output)]
    return ["convert", str(model), "-p", str(prototxt), "-f", command.removeprefix("convert-"), "-q", "-o",
            str(output)]


@dataclass
class Job:
    case: Case
    command: str
    case_dir: Path
    out_dir: Path
    output: Path
    argv: list[str]
    pid: int = 0
    started: float = 0.0


def _child(job: Job, address_limit_mb: int, fsize_limit_mb: int) -> None:
    """In the forked child: limits, output to files, the CLI's own ``main``; never returns."""
    import resource

    code = 1
    try:
        os.chdir(job.out_dir)
        if address_limit_mb:
            limit = address_limit_mb << 20
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_limit_mb << 20, fsize_limit_mb << 20))
        for fd, name in ((1, "stdout"), (2, "stderr")):
            target = os.open(job.case_dir / f"{job.command}.{name}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(target, fd)
            os.close(target)
        from caffeport import cli

        try:
            code = cli.main(job.argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()  # what the interpreter prints for an uncaught exception, and its exit code
            code = 1
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
    finally:
        os._exit(code)


@dataclass
class Outcome:
    kind: str  # ok, clean, crash, hang, memory, partial, output, message, overwrite
    key: str
    detail: str
    seconds: float
    rss_mb: float


#: outcomes that are findings (bugs)
FINDINGS = ("crash", "hang", "memory", "partial", "output", "message", "overwrite")


def _traceback_key(stderr: str) -> str:
    frames = re.findall(r'File "([^"]+)", line (\d+)', stderr)
    ours = [f for f in frames if "caffeport" in f[0] and "benchmarks" not in f[0]] or frames
    where = f"{Path(ours[-1][0]).name}:{ours[-1][1]}" if ours else "?"
    last = [line for line in stderr.strip().splitlines() if line and not line.startswith(" ")]
    exc = last[-1].split(":")[0] if last else "?"
    return f"{exc}@{where}"


def _reports_blob_problems(stdout: Path) -> bool:
    """Whether ``inspect`` printed the blobs Caffe would refuse (its exit 1 without an error line)."""
    import json

    text = stdout.read_text(errors="replace")
    if text.startswith("{"):
        with contextlib.suppress(ValueError):
            return bool(json.loads(text).get("blob_problems"))
        return False
    return "\nerror: layer " in text


def judge(job: Job, status: int, rusage: Any, seconds: float, inputs: list[Path], rss_limit_mb: float,
          output_limit_mb: float) -> Outcome:
    """Classify one finished child (see the module docstring of the campaign)."""
    rss = rusage.ru_maxrss / 1024 if rusage is not None else 0.0
    stderr = (job.case_dir / f"{job.command}.stderr").read_text(errors="replace")
    stdout_path = job.case_dir / f"{job.command}.stdout"
    left = sorted(p.name for p in job.out_dir.iterdir())
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGXFSZ:
            return Outcome("output", f"{job.command}:SIGXFSZ", "wrote more than the file size limit", seconds, rss)
        return Outcome("crash", f"{job.command}:signal-{sig}", f"killed by signal {sig}", seconds, rss)
    code = os.WEXITSTATUS(status)
    if "MemoryError" in stderr or rss > rss_limit_mb:
        return Outcome("memory", f"{job.command}:{_traceback_key(stderr) if 'Traceback' in stderr else 'rss'}",
                       f"peak RSS {rss:.0f} MB\n{stderr[-4000:]}", seconds, rss)
    if "Traceback" in stderr or "InternalDecodeError" in stderr or code not in (0, 1):
        return Outcome("crash", f"{job.command}:{_traceback_key(stderr)}", f"exit {code}\n{stderr[-6000:]}",
                       seconds, rss)
    writes = job.command == "run" or job.command.startswith("convert-")
    if code == 0:
        if writes and left != [job.output.name]:
            return Outcome("partial", f"{job.command}:left-{','.join(left)[:60]}", f"exit 0, the output directory "
                           f"holds {left}", seconds, rss)
        if writes and job.output.stat().st_size > output_limit_mb * (1 << 20):
            return Outcome("output", f"{job.command}:size", f"{job.output.stat().st_size} bytes written", seconds,
                           rss)
        return Outcome("ok", job.command, "", seconds, rss)
    if left:
        return Outcome("partial", f"{job.command}:left-after-error", f"exit 1 but {left} left behind", seconds, rss)
    lines = stderr.splitlines()
    if not lines and job.command.startswith("inspect") and _reports_blob_problems(stdout_path):
        return Outcome("clean", f"{job.command}:blob-problems", "", seconds, rss)
    if len(lines) != 1 or not lines[0].startswith("caffeport: error: "):
        return Outcome("message", f"{job.command}:lines-{len(lines)}", stderr[-2000:], seconds, rss)
    named = [str(p) for p in (*inputs, job.output)]
    if not any(lines[0].startswith(f"caffeport: error: {n}") or f"{n}:" in lines[0] for n in named):
        return Outcome("message", f"{job.command}:unnamed", lines[0][:2000], seconds, rss)
    error_type = "error"
    return Outcome("clean", f"{job.command}:{error_type}", lines[0][:300], seconds, rss)


@dataclass
class StructureStats:
    cases: int = 0
    runs: int = 0
    by_outcome: dict[str, int] = field(default_factory=dict)
    by_command: dict[str, dict[str, int]] = field(default_factory=dict)
    findings: dict[str, int] = field(default_factory=dict)
    seconds_by_command: dict[str, float] = field(default_factory=dict)
    slowest: tuple[float, str] = (0.0, "")
    peak_rss_mb: float = 0.0


def structure(args: argparse.Namespace) -> StructureStats:
    """Run the structure-aware campaign: a seeded sample of `structure_cases` within ``--seconds``."""
    import caffeport  # noqa: F401  (loaded before the first fork: a child costs its work only)
    from caffeport import cli  # noqa: F401
    from caffeport.exporters import load_exporters

    formats = [name for name in sorted(load_exporters()) if name != "keras3" and name not in args.skip_format]
    commands = structure_commands(formats)
    suffixes = {f"convert-{name}": exporter.suffix for name, exporter in load_exporters().items()}
    suffixes["run"] = ".npz"
    cases, per_type = structure_cases()
    rng = random.Random(args.seed)
    order = list(range(len(cases)))
    rng.shuffle(order)
    if args.types:
        order = [i for i in order if cases[i].layer_type in args.types]
    total = len(order)
    print(f"structure campaign: {len(cases)} cases over {len(per_type)} layer types, {len(commands)} commands "
          f"each ({', '.join(commands)}); seeded order {args.seed}", flush=True)
    root = Path(tempfile.mkdtemp(prefix="caffeport-structure-"))
    stats = StructureStats()
    base_blobs: dict[str, list[tuple[int, ...]] | None] = {}
    running: dict[int, Job] = {}
    pending: list[Job] = []
    remaining: dict[Path, int] = {}
    inputs_of: dict[Path, tuple[list[Path], dict[Path, bytes]]] = {}
    start = time.monotonic()
    last_report = start
    next_case = 0

    def prepare(case: Case) -> None:
        case_dir = root / f"case{stats.cases:06d}"
        case_dir.mkdir()
        base = base_blobs.get(case.layer_type, ())
        if base == ():
            base = base_blobs[case.layer_type] = expected_blobs(
                Case("base", case.layer_type, case.param_key, dict(RECIPES.get(case.layer_type, Recipe()).params)),
                root)
        shapes = expected_blobs(case, root) or base or []
        case.blobs = _blob_values(shapes, rng)
        prototxt, model = case_dir / "net.prototxt", case_dir / "net.caffemodel"
        prototxt.write_bytes(case_prototxt(case))
        model.write_bytes(case_caffemodel(case))
        inputs_of[case_dir] = ([prototxt, model], {p: hashlib.sha1(p.read_bytes()).digest() for p in (prototxt, model)})
        remaining[case_dir] = len(commands)
        for command in commands:
            out_dir = case_dir / f"out-{command}"
            out_dir.mkdir()
            output = out_dir / f"result{suffixes.get(command, '.out')}"
            pending.append(Job(case, command, case_dir, out_dir, output, command_argv(command, prototxt, model,
                                                                                       output)))
        stats.cases += 1

    def record(job: Job, outcome: Outcome) -> None:
        stats.runs += 1
        stats.by_outcome[outcome.kind] = stats.by_outcome.get(outcome.kind, 0) + 1
        per = stats.by_command.setdefault(job.command, {})
        per[outcome.kind] = per.get(outcome.kind, 0) + 1
        stats.seconds_by_command[job.command] = stats.seconds_by_command.get(job.command, 0.0) + outcome.seconds
        stats.slowest = max(stats.slowest, (outcome.seconds, f"{job.case.label} {job.command}"))
        stats.peak_rss_mb = max(stats.peak_rss_mb, outcome.rss_mb)
        if outcome.kind in FINDINGS:
            key = f"{outcome.kind}:{job.case.layer_type}:{outcome.key}"
            first = key not in stats.findings
            stats.findings[key] = stats.findings.get(key, 0) + 1
            if first:
                saved = args.crash_dir / re.sub(r"[^A-Za-z0-9_.@:-]", "_", key)[:150]
                saved.mkdir(parents=True, exist_ok=True)
                for path in inputs_of[job.case_dir][0]:
                    (saved / path.name).write_bytes(path.read_bytes())
                (saved / "finding.txt").write_text(f"case: {job.case.label}\ncommand: caffeport "
                                                   f"{' '.join(job.argv)}\n\n{outcome.detail}")
                print(f"  {outcome.kind}: {job.case.label} {job.command}: {outcome.key} -> {saved}", flush=True)

    def finish_case(case_dir: Path) -> None:
        paths, digests = inputs_of.pop(case_dir)
        for path in paths:
            if hashlib.sha1(path.read_bytes()).digest() != digests[path]:
                stats.by_outcome["overwrite"] = stats.by_outcome.get("overwrite", 0) + 1
                stats.findings[f"overwrite:{path.name}"] = stats.findings.get(f"overwrite:{path.name}", 0) + 1
        with contextlib.suppress(OSError):
            import shutil

            shutil.rmtree(case_dir)

    try:
        while True:
            out_of_time = time.monotonic() - start >= args.seconds
            while len(running) < args.jobs and (pending or (next_case < total and not out_of_time)):
                if not pending:
                    prepare(cases[order[next_case]])
                    next_case += 1
                job = pending.pop(0)
                sys.stdout.flush()
                sys.stderr.flush()
                job.started = time.monotonic()
                pid = os.fork()
                if pid == 0:
                    _child(job, args.address_limit_mb, args.fsize_limit_mb)
                job.pid = pid
                running[pid] = job
            if not running:
                break
            pid, status, rusage = os.wait4(-1, os.WNOHANG)
            if pid == 0:
                now = time.monotonic()
                for job in list(running.values()):
                    if now - job.started > args.timeout:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(job.pid, signal.SIGKILL)
                        os.waitpid(job.pid, 0)
                        del running[job.pid]
                        for leftover in job.out_dir.iterdir():
                            leftover.unlink()
                        record(job, Outcome("hang", f"{job.command}:timeout", f"no exit within {args.timeout} s",
                                            now - job.started, 0.0))
                        remaining[job.case_dir] -= 1
                        if not remaining[job.case_dir]:
                            finish_case(job.case_dir)
                time.sleep(0.002)
                if now - last_report > args.report_every:
                    last_report = now
                    print(f"  {stats.cases}/{total} cases, {stats.runs} runs in {now - start:.0f} s: "
                          f"{dict(sorted(stats.by_outcome.items()))}", flush=True)
                continue
            job = running.pop(pid)
            outcome = judge(job, status, rusage, time.monotonic() - job.started, inputs_of[job.case_dir][0],
                            args.rss_limit_mb, args.output_limit_mb)
            record(job, outcome)
            remaining[job.case_dir] -= 1
            if not remaining[job.case_dir]:
                finish_case(job.case_dir)
    finally:
        for job in running.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(job.pid, signal.SIGKILL)
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    elapsed = time.monotonic() - start
    print(f"\n{stats.cases} of {total} cases ({stats.cases / max(total, 1):.1%}, seeded sample {args.seed}), "
          f"{stats.runs} command runs in {elapsed:.1f} s ({stats.runs / max(elapsed, 1e-9):.1f}/s, {args.jobs} "
          f"at a time); peak child RSS {stats.peak_rss_mb:.0f} MB; slowest {stats.slowest[0]:.1f} s "
          f"({stats.slowest[1]})")
    print("outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(stats.by_outcome.items())))
    for command in commands:
        per = stats.by_command.get(command, {})
        print(f"  {command}: " + ", ".join(f"{k} {v}" for k, v in sorted(per.items()))
              + f"; {stats.seconds_by_command.get(command, 0.0):.0f} s")
    if stats.findings:
        print("distinct findings:")
        for key, count in sorted(stats.findings.items()):
            print(f"  {key} x{count}")
    return stats


def replay(args: argparse.Namespace) -> int:
    data = Path(args.replay).read_bytes()
    scratch = Path(tempfile.mkdtemp(prefix="caffeport-replay-"))
    path = scratch / f"input{SUFFIX[args.kind]}"
    path.write_bytes(data)
    partner = Path(args.partner) if args.partner else None
    for mode in range(4):
        try:
            print(f"mode {mode}: {run_target(args.kind, path, partner, mode, args.deep, scratch)}")
        except BaseException as exc:
            print(f"mode {mode}: {classify(exc) or 'clean'}: {type(exc).__name__}: {exc}")
            if classify(exc):
                traceback.print_exc()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=100_000, help="stop after this many inputs")
    parser.add_argument("--seconds", type=float, default=900.0, help="stop after this many seconds")
    parser.add_argument("--timeout", type=float, help="seconds one input may take before it is a hang (default 10; "
                        "60 for --engine structure)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (the same seed gives the same inputs)")
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS, help="the shared caffe-models directory")
    parser.add_argument("--max-seed-bytes", type=int, default=2_000_000,
                        help="seed files larger than this are left out (the smallest of each kind is always in)")
    parser.add_argument("--crash-dir", type=Path, default=Path(tempfile.gettempdir()) / "caffeport-fuzz")
    parser.add_argument("--address-limit-mb", type=int, help="the worker's RLIMIT_AS (0: none; default 4096, 2048 "
                        "for --engine structure)")
    parser.add_argument("--rss-limit-mb", type=float, default=512.0, help="peak RSS growth that counts as a finding")
    parser.add_argument("--deep", action="store_true", help="also describe, transform and export what was read")
    parser.add_argument("--engine", choices=("mutate", "atheris", "structure"), default="mutate",
                        help="mutate: mutated real files through the readers; atheris: the same, coverage-guided; "
                        "structure: valid nets with absurd parameter values and odd names through the CLI")
    parser.add_argument("--jobs", type=int, default=2, help="structure: commands run at a time")
    parser.add_argument("--fsize-limit-mb", type=int, default=256, help="structure: a child's RLIMIT_FSIZE")
    parser.add_argument("--output-limit-mb", type=float, default=16.0,
                        help="structure: an output bigger than this (from a net of a few values) is a finding")
    parser.add_argument("--skip-format", action="append", default=[], help="structure: leave this format out")
    parser.add_argument("--types", nargs="*", help="structure: only these layer types")
    parser.add_argument("--report-every", type=float, default=60.0, help="seconds between progress lines")
    parser.add_argument("--replay", help="read one saved input and print what happens")
    parser.add_argument("--kind", choices=KINDS, default="caffemodel", help="with --replay: how to read it")
    parser.add_argument("--partner", help="with --replay: the prototxt (or caffemodel) read with it in modes 1")
    args = parser.parse_args(argv)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    structured = args.engine == "structure"
    args.timeout = args.timeout if args.timeout is not None else 60.0 if structured else 10.0
    args.address_limit_mb = (args.address_limit_mb if args.address_limit_mb is not None
                             else 2048 if structured else 4096)
    if structured:
        found = structure(args).findings
        return 1 if found else 0
    if args.replay:
        return replay(args)
    if args.engine == "atheris":
        atheris_child(args)
        return 0
    stats = fuzz(args)
    return 1 if stats.crashes or stats.hangs or stats.memory else 0


if __name__ == "__main__":
    sys.exit(main())
